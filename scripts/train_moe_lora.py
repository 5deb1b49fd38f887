"""Train a dense MoE-LoRA model on one task (`hf_ttmoe/commands/train_moe_lora.py`).

    python scripts/train_moe_lora.py --task sst2 --glue_dir ../shared/data/glue --output_dir runs/moe_sst2 \
        --num_experts 8 --lora_rank 4 --layers_to_transform 2 3 4 5 --learning_rate 1e-3 --use_cpu
"""

import sys

from hf_ttmoe.commands.train_moe_lora import main

if __name__ == "__main__":
    main(sys.argv[1:])
