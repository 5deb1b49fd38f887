"""One table (and a plot) over several `bench_quality` runs: method A against method B per task, each at its own
learning rate chosen on dev, the difference paired by seed (the same rows, order and initial head for both).

    python -m benchmarks.quality_summary --pair moe lora_budget --runs quality_sst2_moe quality_mrpc_moe \
        quality_qnli_moe --name quality_moe_summary

Each run is scored in the metric it chose its learning rates by (`--metric` of that run: accuracy, macro-F1 for MRPC
as the seed's paper reports, MCC for CoLA); accuracy is shown beside it. A run whose seeds are not all done is listed
with what it has, and marked. Two methods run side by side as separate processes (one run each, to use two cores) are
read as one run by joining their names with "+" (`--runs quality_cola_3ep_moe+quality_cola_3ep_lora_budget`): they must
share the rows, budget and seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.common import RESULTS

METRIC_NAMES = {"accuracy": "accuracy", "f1": "binary F1", "macro_f1": "macro-F1", "mcc": "MCC"}


# The arguments that make two runs' rows comparable (the same rows, budget, seeds and scoring); the rest (methods,
# grids, threads, name) may differ between runs that are read as one.
SHARED_ARGS = ("task", "glue_dir", "tasks_dir", "metric", "seeds", "max_train_samples", "max_dev_samples",
               "max_test_samples", "max_length", "batch_size", "epochs", "early_stopping", "eval_steps", "max_epochs",
               "stop_on", "warmup", "weight_decay", "head_lr", "zero_core_lr_ratio", "pooling", "base_model",
               "gguf_file")
# What runs saved before an argument existed did: they read as its default.
LATER_ARGS = {"stop_on": "metric", "zero_core_lr_ratio": 1.0}


def saved_arg(args: dict, key: str):
    return args.get(key, LATER_ARGS.get(key))


def load_run(name: str, results_dir: Path) -> dict:
    """One `bench_quality` result by name, or several joined by "+" read as one run: their rows and chosen rates
    together, refused when they differ in a `SHARED_ARGS` argument."""
    runs = []
    for part in name.split("+"):
        path = Path(results_dir) / f"{part}.json"
        if not path.exists():
            raise SystemExit(f"no results {path}: run bench_quality --name {part} first")
        runs.append(json.loads(path.read_text()))
    first = runs[0]["args"]
    for part, run in zip(name.split("+")[1:], runs[1:]):
        if differ := [k for k in SHARED_ARGS if saved_arg(run["args"], k) != saved_arg(first, k)]:
            values = ", ".join(f"{k}={saved_arg(run['args'], k)!r} vs {saved_arg(first, k)!r}" for k in differ)
            raise SystemExit(f"cannot read {name} as one run: {part} differs in {', '.join(differ)} ({values})")
    methods = [m for run in runs for m in run["args"]["methods"]]
    chosen = {m: lr for run in runs for m, lr in run.get("chosen_lr", {}).items()}
    return {"args": {**first, "methods": methods}, "rows": [r for run in runs for r in run["rows"]],
            "chosen_lr": chosen}


def final_rows(run: dict, method: str) -> list[dict]:
    """The test rows of `method` at its chosen learning rate, one per seed of the run, in seed order. The choice is
    the run's own (`chosen_lr`), or, while the run is unfinished, the best dev metric among the first seed's rows."""
    args, rows = run["args"], run["rows"]
    lr = run.get("chosen_lr", {}).get(method)
    if lr is None:
        sweep = [r for r in rows if r["method"] == method and r["seed"] == args["seeds"][0]]
        if not sweep:
            return []
        lr = max(sweep, key=lambda r: r[f"dev_{args['metric']}"])["lr"]
    by_seed = {r["seed"]: r for r in rows if r["method"] == method and r["lr"] == lr}
    return [by_seed[s] for s in args["seeds"] if s in by_seed]


def compare(run: dict, a: str, b: str) -> dict:
    """Method `a` against `b` on one run: means and stds of the run's metric and of accuracy, and the per-seed
    differences a − b over the seeds both have."""
    metric = run["args"]["metric"]
    rows = {m: final_rows(run, m) for m in (a, b)}
    seeds = [r["seed"] for r in rows[a] if r["seed"] in {s["seed"] for s in rows[b]}]
    pick = {m: {r["seed"]: r for r in rows[m]} for m in (a, b)}
    diffs = [pick[a][s][f"test_{metric}"] - pick[b][s][f"test_{metric}"] for s in seeds]
    base = run["args"].get("base_model", "—").split("/")[-1]
    out = {"task": run["args"]["task"], "base": base, "budget": budget(run["args"]), "metric": metric, "seeds": seeds,
           "complete": all(len(rows[m]) == len(run["args"]["seeds"]) for m in (a, b)), "diffs": diffs}
    for m in (a, b):
        values = [r[f"test_{metric}"] for r in rows[m]]
        accuracy = [r["test_accuracy"] for r in rows[m]]
        out[m] = {"lr": rows[m][0]["lr"] if rows[m] else None, "n": len(values),
                  "mean": statistics.fmean(values) if values else None,
                  "std": statistics.pstdev(values) if values else None,
                  "accuracy": statistics.fmean(accuracy) if accuracy else None,
                  "params": rows[m][0]["adapter_params"] if rows[m] else None}
    out["diff_mean"] = statistics.fmean(diffs) if diffs else None
    out["diff_std"] = statistics.pstdev(diffs) if diffs else None
    return out


def budget(args: dict) -> str:
    """A run's training budget in a few characters: "1 ep", or "ES 3x100, ≤10 ep" for early stopping with patience 3
    evaluations of 100 steps and at most 10 epochs (on the dev metric; "ES 3x100 on loss, ..." on the dev loss)."""
    if args.get("early_stopping"):
        on = " on loss" if args.get("stop_on") == "loss" else ""
        return f"ES {args['early_stopping']}x{args['eval_steps']}{on}, ≤{args['max_epochs']:g} ep"
    return f"{args.get('epochs', 1.0):g} ep"


def pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(results: list[dict], a: str, b: str) -> str:
    lines = [f"`{a}` vs `{b}`, test, mean ± std over seeds (%); difference = {a} − {b}, paired by seed:", "",
             f"| task | base | budget | metric | {a} (lr) | {b} (lr) | difference | {a} accuracy | {b} accuracy "
             "| seeds |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        diff = "—" if r["diff_mean"] is None else (f"{100 * r['diff_mean']:+.2f} ± {100 * r['diff_std']:.2f}"
                                                   + (" (ahead)" if r["diff_mean"] >= 0 else " (behind)"))
        seeds = ", ".join(map(str, r["seeds"])) + ("" if r["complete"] else " (unfinished)")
        cells = [pct(r[m]["mean"], r[m]["std"]) + ("" if r[m]["lr"] is None else f" ({r[m]['lr']:g})") for m in (a, b)]
        lines.append(f"| {r['task']} | {r['base']} | {r['budget']} | {METRIC_NAMES[r['metric']]} | {cells[0]} | "
                     f"{cells[1]} | {diff} | {pct(r[a]['accuracy'])} | {pct(r[b]['accuracy'])} | {seeds} |")
    done = [r for r in results if r["complete"]]
    ahead = sum(r["diff_mean"] >= 0 for r in done)
    lines += ["", f"{a} ≥ {b} on {ahead} of {len(done)} finished rows (task, base, budget)."]
    return "\n".join(lines)


def plot(results: list[dict], a: str, b: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.0 * len(results) + 2, 3.6))
    x = range(len(results))
    for k, (m, shift) in enumerate(((a, -0.2), (b, 0.2))):
        ax.bar([i + shift for i in x], [100 * (r[m]["mean"] or 0) for r in results], width=0.4, label=m,
               yerr=[100 * (r[m]["std"] or 0) for r in results], capsize=3, color=f"C{k}")
    ax.set_xticks(list(x), [f"{r['task']}, {r['budget']}\n{r['base']}\n({METRIC_NAMES[r['metric']]})"
                            for r in results])
    ax.set_ylabel("test, % (mean ± std over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, results_dir: Path = RESULTS) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, required=True, metavar=("A", "B"), help="two methods of the runs")
    parser.add_argument("--runs", nargs="+", required=True,
                        help="bench_quality results (benchmarks/results); A+B reads two runs of a task as one")
    parser.add_argument("--name", required=True, help="writes benchmarks/results/<name>.{md,png}")
    args = parser.parse_args(argv)
    a, b = args.pair
    results = []
    for name in args.runs:
        run = load_run(name, results_dir)
        if missing := [m for m in (a, b) if m not in run["args"]["methods"]]:
            raise SystemExit(f"{name} does not run {missing} (its methods: {run['args']['methods']})")
        results.append(compare(run, a, b))
    text = markdown(results, a, b)
    (Path(results_dir) / f"{args.name}.md").write_text(text + "\n")
    plot(results, a, b, Path(results_dir) / f"{args.name}.png")
    print(text)
    return results


if __name__ == "__main__":
    main()
