"""The main job on the embedded offline default: train a TT-LoRA expert on real movie reviews and report accuracy.

    python scripts/demo.py                                # a few minutes on 2 CPU cores, no network
    python scripts/demo.py --num_train_epochs 1 ...       # any train_expert / TrainingArguments flag overrides
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_expert import main as train_expert  # noqa: E402

DEFAULTS = [
    "--task", "rotten_tomatoes", "--output_dir", "runs/demo/experts/rotten_tomatoes",
    "--max_train_samples", "2000", "--max_eval_samples", "500", "--max_length", "64",
    "--num_train_epochs", "2", "--learning_rate", "5e-3", "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "64", "--eval_strategy", "epoch", "--save_strategy", "no",
    "--logging_steps", "20", "--report_to", "none", "--use_cpu", "--seed", "0",
]

if __name__ == "__main__":
    train_expert(DEFAULTS + sys.argv[1:])  # later flags win
