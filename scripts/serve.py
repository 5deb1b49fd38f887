"""Serve a saved TT-LoRA MoE over HTTP with micro-batching (`hf_ttmoe/commands/serve.py`).

    python scripts/serve.py --moe runs/demo/moe --port 8000 --max_batch_size 64 --batch_window_ms 5
"""

import sys

from hf_ttmoe.commands.serve import main

if __name__ == "__main__":
    main(sys.argv[1:])
