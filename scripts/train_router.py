"""Compose frozen experts and train the top-1 router (`hf_ttmoe/commands/train_router.py`).

    python scripts/train_router.py --experts experts/rotten_tomatoes experts/bbc_news --output_dir moe \
        --router_layer 0 --max_per_task 500
"""

import sys

from hf_ttmoe.commands.train_router import main

if __name__ == "__main__":
    main(sys.argv[1:])
