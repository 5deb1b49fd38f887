"""The whole two-stage TT-LoRA MoE pipeline on 4 embedded corpora, offline (`hf_ttmoe/commands/demo.py`).

    python scripts/demo.py                      # ~6-9 minutes on 2 CPU cores, no network
    python scripts/demo.py --train_samples 400  # quicker, less accurate
"""

import sys

from hf_ttmoe.commands.demo import main

if __name__ == "__main__":
    main(sys.argv[1:])
