"""Evaluate a TT-LoRA MoE without task ids against the right expert by hand (`hf_ttmoe/commands/evaluate.py`).

    python scripts/evaluate.py --moe runs/demo/moe --output_dir runs/demo/eval --max_per_task 300
"""

import sys

from hf_ttmoe.commands.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])
