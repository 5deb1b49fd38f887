"""A run's folders and its resumable stages.

Results (JSON, markdown, PNG) go to `benchmarks/results/multitask/<name>/`; what is trained or exported (rows,
experts, routers, adapters) to `runs/multitask/<name>/` (git-ignored), except per-task experts, which live in
`runs/multitask/experts/<method>/<task>-<key>/` and are reused by every run that trains them alike.

A stage is done when its JSON exists: a rerun skips it and reads the JSON back. The settings are written once per
run; a rerun with other settings under the same name is refused (its stages would mix two settings).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from hf_ttmoe.io import atomic_write

from .settings import RESULTS_ROOT, WORK_ROOT, Settings

SETTINGS_FILE = "settings.json"
# Settings added after runs were saved without them, and the value those runs were made with.
SETTINGS_BEFORE = {"extend_grid": 0, "tt_layout": "chain", "tt_rank": 5, "tt_shapes": ""}


def method_stage(seed: int, method: str) -> str:
    """The stage that trains and scores `method` for `seed` (its JSON: `<results>/seed<seed>/<method>.json`)."""
    return f"seed{seed}/{method}"


def write_json(path: Path, payload) -> None:
    """`payload` as indented JSON at `path`, atomically (a stage interrupted mid-write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(str(path), lambda p: Path(p).write_text(json.dumps(payload, indent=2) + "\n"))


class Run:
    """The folders of one named run and the bookkeeping of its stages.

    Args:
        name: the run's name (folder name under the results and work roots).
        settings: what the run is made with; checked against an earlier run of the same name.
        results_root, work_root: where the run's folders go (tests point them at a temporary folder).
    """

    def __init__(self, name: str, settings: Settings, results_root: Path = RESULTS_ROOT,
                 work_root: Path = WORK_ROOT):
        if not name or os.sep in name or name.startswith("."):
            raise ValueError(f"run name {name!r} must be a plain folder name")
        self.name, self.settings = name, settings
        self.results = Path(results_root) / name
        self.work = Path(work_root) / name
        self.experts_root = Path(work_root) / "experts"
        self._check_settings()

    def _check_settings(self) -> None:
        path = self.results / SETTINGS_FILE
        now = self.settings.to_dict()
        if path.exists():
            earlier = {**SETTINGS_BEFORE, **json.loads(path.read_text())}
            if earlier != now:
                diff = {k: (earlier.get(k), now.get(k)) for k in sorted(set(earlier) | set(now))
                        if earlier.get(k) != now.get(k)}
                raise SystemExit(f"run {self.name!r} was made with other settings (earlier, now): {diff}. "
                                 "Use another --name, or delete the run's folders to start it again.")
        else:
            write_json(path, now)

    def result_path(self, stage: str) -> Path:
        return self.results / f"{stage}.json"

    def done(self, stage: str) -> dict | None:
        """The stage's saved result, or None if it has not finished."""
        path = self.result_path(stage)
        return json.loads(path.read_text()) if path.exists() else None

    def stage(self, stage: str, fn: Callable[[], dict]) -> dict:
        """Run `fn` unless `stage` is done; save its result with its wall time. Prints progress either way."""
        if (result := self.done(stage)) is not None:
            print(f"[{self.name}] {stage}: done earlier, skipped ({self.result_path(stage)})", flush=True)
            return result
        print(f"[{self.name}] {stage}: running", flush=True)
        t0 = time.perf_counter()
        result = fn()
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        write_json(self.result_path(stage), result)
        print(f"[{self.name}] {stage}: finished in {result['wall_s']:.0f} s", flush=True)
        return result

    def expert_dir(self, method: str, task: str, key: str) -> Path:
        return self.experts_root / method / f"{task}-{key}"
