"""Push a saved expert, dense MoE-LoRA model or router directory to the Hub (`hf_ttmoe/commands/push.py`).

    python scripts/push.py --path experts/sst2 --repo_id org/ttlora-minilm-sst2 --license apache-2.0 \\
        --datasets stanfordnlp/sst2
    python scripts/push.py --path moe/ --repo_id org/ttlora-moe-4tasks --expert_names '{"sst2": "ttlora-minilm-sst2"}'
"""

import sys

from hf_ttmoe.commands.push import main

if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:]) else 1)
