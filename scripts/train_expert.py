"""Train one TT-LoRA expert on one task, evaluate it, save it (`hf_ttmoe/commands/train_expert.py`).

    python scripts/train_expert.py --task rotten_tomatoes --output_dir experts/rotten_tomatoes \
        --num_train_epochs 1 --learning_rate 5e-3 --per_device_train_batch_size 32
"""

import sys

from hf_ttmoe.commands.train_expert import main

if __name__ == "__main__":
    main(sys.argv[1:])
