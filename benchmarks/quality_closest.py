"""Every TT setting tried against PEFT LoRA r=16, per task, and the closest one inside the 5% budget (issue 13).

    python -m benchmarks.quality_closest --name quality_closest

Reads every `bench_quality` result (`benchmarks/results/quality_*.json`) and groups its runs by what makes their test
rows comparable (`COMPARABLE`: task, base, rows, budget, batching, the metric that chose the rate). A group's reference
is PEFT LoRA r=16 with the recipe's defaults on the same modules; every TT method (`tt`, `tt_stack`, `tt_mpo`, and
`svd_core`, a three-core train whose outer cores are the frozen weight's singular bases) and every other LoRA setting
of the group is a row, named by its method and the arguments it sets away from `bench_quality`'s defaults. A row counts
only if its run followed the protocol: the rate chosen on seed 0's dev score (`final_rows`), so the runs of seeds 1-2
at a rate the protocol did not choose are left out. The same setting run twice (a rerun with `--by_length`) is read
once: the run with the most seeds, then the first by name.

The difference to LoRA r=16 is paired by seed over the seeds both have. "Closest" is the best mean difference among
the settings with every seed of the protocol (3) at ≤ 5% of the reference's adapter parameters. A setting on only
one of query / value (`--modules q` or `v`) is compared with the query/value reference, the goal's. A `tt` setting
whose every adapted matrix is a two-core chain (one input and one output mode, `--tt_shapes '{"value": [[384],
[384]]}'`) is a rank-r matrix factorization, LoRA's own form with no tensorizing (`lora_form`): it is counted with
PEFT LoRA inside the budget, never as the closest TT setting.

Beside the closest TT setting the summary shows the best PEFT LoRA inside the same budget (a lower rank, or fewer
modules): what the budget buys LoRA itself. `<name>_frontier.png` plots every group's settings as test score against
adapter parameters (log scale), LoRA's ranks joined by a line, the 5% budget and the goal's line marked.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

from benchmarks.bench_quality import arg_parser
from benchmarks.common import RESULTS
from benchmarks.quality_summary import METRIC_NAMES, budget, final_rows

# What makes two runs' test rows comparable; with early stopping the fixed budget does not apply, and the reverse.
# Batches grouped by length are part of the budget too (the convergence runs use them to save padding), so such a
# group has its own LoRA r=16 reference run the same way.
COMPARABLE = ("task", "base_model", "gguf_file", "metric", "max_train_samples", "max_dev_samples", "max_test_samples",
              "max_length", "batch_size", "group_by_length", "epochs", "early_stopping", "eval_steps", "max_epochs",
              "stop_on")
EARLY_STOPPING_ONLY = ("eval_steps", "max_epochs", "stop_on")
# The arguments that make a setting, per method, and the training recipe every method shares.
SETTING = {"tt": ("tt_rank", "tt_layout", "tt_shapes", "tt_alpha", "tt_init"),
           "tt_stack": ("stack_rank", "stack_share", "tt_alpha"),
           "tt_mpo": ("mpo_modes", "mpo_ranks", "mpo_shapes", "tt_alpha"),
           "svd_core": ("svd_rank", "tt_alpha"),
           "lora": ("lora_rank",)}
RECIPE = ("modules", "warmup", "weight_decay", "head_lr", "zero_core_lr_ratio", "tt_precondition",
          "tt_precondition_mode", "pooling")
BUDGET = 0.05  # of the reference's adapter parameters
SEEDS = 3
QV_PARTS = ("q", "v")  # module sets inside the goal's query/value, compared with its reference
MODULE_COUNT = {"qv": 2, "q": 1, "v": 1}  # module names each `--modules` set adapts in a layer; "all": per base


@functools.cache
def linears_per_layer(base_model: str, gguf_file: str | None = None) -> int:
    """How many linears `--modules all` adapts in a layer of `base_model` (MiniLM 6, SmolLM2's Llama layers 7): its
    architecture built from its config on the meta device, nothing loaded."""
    import torch
    from transformers import AutoConfig, AutoModel

    from hf_ttmoe.adapter import resolve_base_model
    from hf_ttmoe.architectures import layer_linears, path_in_layer

    path, gguf_file = resolve_base_model(base_model, gguf_file)
    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(path, gguf_file=gguf_file))
    return len({path_in_layer(name) for name in layer_linears(model)})


def defaults() -> dict:
    return vars(arg_parser().parse_args(["--task", "t", "--methods", "tt", "--name", "n"]))


def group_key(args: dict, default: dict) -> tuple:
    fixed = not args.get("early_stopping")
    return tuple((k, args.get(k, default[k])) for k in COMPARABLE
                 if not (fixed and k in EARLY_STOPPING_ONLY) and not (not fixed and k == "epochs"))


def setting(method: str, args: dict, default: dict) -> tuple[str, str, bool]:
    """(label, modules, is the reference): the method and its arguments away from the defaults, e.g.
    `tt_mpo (mpo_ranks=[4,4,4])`; the reference is LoRA r=16 with nothing changed but, maybe, the modules."""
    keys = SETTING[method] + RECIPE
    changed = [f"{k}={json.dumps(args[k], separators=(',', ':'))}" for k in keys
               if k in args and args[k] != default[k] and not (k == "tt_rank" and str(args[k]) == str(default[k]))]
    modules = args.get("modules", default["modules"])
    reference = method == "lora" and changed in ([], [f'modules="{modules}"'])
    return (f"{method} ({', '.join(changed)})" if changed else method), modules, reference


def on_lora_curve(method: str, args: dict, default: dict) -> bool:
    """PEFT LoRA with the recipe's defaults on query/value or one of them: a point of LoRA's own budget curve."""
    return method == "lora" and args.get("modules", default["modules"]) in ("qv", *QV_PARTS) and all(
        args.get(k, default[k]) == default[k] for k in RECIPE if k != "modules")


def lora_form(method: str, args: dict, default: dict) -> bool:
    """A `tt` setting whose every adapted module is a two-core chain `[[in], [out]]`: ΔW = U V with no mode split,
    which is LoRA of rank tt_rank (the scale rule aside), not a tensor train."""
    shapes = args.get("tt_shapes") or {}
    modules = args.get("modules", default["modules"])
    chain = args.get("tt_layout", default["tt_layout"]) == "chain"
    if not (method == "tt" and chain and shapes
            and all(len(modes[0]) == 1 and len(modes[1]) == 1 for modes in shapes.values())):
        return False
    count = MODULE_COUNT.get(modules) or linears_per_layer(args.get("base_model", default["base_model"]),
                                                         args.get("gguf_file", default["gguf_file"]))
    return len(shapes) >= count


def collect(results_dir: Path) -> dict[tuple, dict[str, dict]]:
    """{group key: {label: row}}, a row holding its run's name, method, modules, seeds' test rows and parameters."""
    default, groups = defaults(), {}
    for path in sorted(Path(results_dir).glob("quality_*.json")):
        run = json.loads(path.read_text())
        args = run.get("args") or {}
        if "task" not in args or args.get("seeds", [None])[0] != 0:
            continue  # not a bench_quality run, or not one that chose its rate on seed 0
        for method in args["methods"]:
            if method not in SETTING or not (rows := final_rows(run, method)) or rows[0]["seed"] != 0:
                continue
            label, modules, reference = setting(method, args, default)
            row = {"run": path.stem, "method": method, "label": label, "modules": modules, "lr": rows[0]["lr"],
                   "reference": reference, "lora_form": lora_form(method, args, default),
                   "lora_rank": args.get("lora_rank", default["lora_rank"]) if on_lora_curve(method, args, default)
                   else None,
                   "params": rows[0]["adapter_params"], "metric": args["metric"],
                   "budget": budget(args) + (", by length" if args.get("group_by_length") else ""),
                   "base": args.get("base_model", default["base_model"]).split("/")[-1], "task": args["task"],
                   "test": {r["seed"]: r[f"test_{args['metric']}"] for r in rows}}
            group = groups.setdefault(group_key(args, default), {})
            kept = group.get(label)
            if kept is None or len(row["test"]) > len(kept["test"]):
                group[label] = row
    return groups


def compare(group: dict[str, dict]) -> list[dict] | None:
    """The group's rows against their reference (LoRA r=16, defaults, same modules), best difference first; None
    when the group has no reference on query/value (not one of the goal's comparisons)."""
    references = {r["modules"]: r for r in group.values() if r["reference"]}
    if "qv" not in references:
        return None
    out = []
    for row in group.values():
        ref = references.get(row["modules"]) or (references["qv"] if row["modules"] in QV_PARTS else None)
        seeds = sorted(set(row["test"]) & set(ref["test"])) if ref else []
        diffs = [row["test"][s] - ref["test"][s] for s in seeds]
        values = list(row["test"].values())
        out.append({**row, "mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values),
                    "share": row["params"] / ref["params"] if ref else None,
                    "diff": statistics.fmean(diffs) if diffs else None,
                    "diff_std": statistics.pstdev(diffs) if diffs else None})
    for r in out:
        in_budget = not r["reference"] and r["share"] is not None and r["share"] <= BUDGET and r["n"] >= SEEDS
        lora_like = r["method"] == "lora" or r["lora_form"]
        r["eligible"], r["lora_in_budget"] = in_budget and not lora_like, in_budget and lora_like
    best = max((r for r in out if r["eligible"]), key=lambda r: r["diff"], default=None)
    best_lora = max((r for r in out if r["lora_in_budget"]), key=lambda r: r["diff"], default=None)
    for r in out:
        r["closest"], r["best_lora"] = r is best, r is best_lora
    return sorted(out, key=lambda r: (r["diff"] is None, -(r["diff"] if r["diff"] is not None else 0), r["label"]))


def pct(value: float | None, sign: bool = False) -> str:
    return "—" if value is None else f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def title(rows: list[dict]) -> str:
    r = rows[0]
    return f"{r['task']}, {r['base']}, {r['budget']} ({METRIC_NAMES[r['metric']]})"


def default_chain(rows: list[dict]) -> str:
    """The library's default (`tt` with nothing changed, on query/value): its test score, share of the reference's
    parameters and paired difference, for the summary; "—" where the group did not run it."""
    chain = next((r for r in rows if r["label"] == "tt" and r["modules"] == "qv"), None)
    if chain is None:
        return "—"
    seeds = f", {chain['n']} seed{'s' * (chain['n'] > 1)}" if chain["n"] < SEEDS else ""
    return (f"{pct(chain['mean'])} ± {pct(chain['std'])} ({100 * chain['share']:.2f}%{seeds}): "
            f"{pct(chain['diff'], True)} ± {pct(chain['diff_std'])}")


def markdown(tables: list[list[dict]]) -> str:
    lines = ["Closest setting at ≤ 5% of PEFT LoRA r=16's adapter parameters (3 seeds, rate chosen on dev), per task "
             "(test, mean ± population std over seeds):", "",
             "| task | LoRA r=16 | default chain (`tt`): test (share): difference | closest setting ≤ 5% | parameters "
             "| test | difference (paired) | within 1 point | settings tried (≤ 5%, 3 seeds / all) "
             "| PEFT LoRA ≤ 5% (best, 3 seeds): difference |",
             "|---|---:|---:|---|---:|---:|---:|---|---:|---|"]
    for rows in tables:
        ref = next(r for r in rows if r["reference"] and r["modules"] == "qv")
        chain = default_chain(rows)
        best = next((r for r in rows if r["closest"]), None)
        lora = next((r for r in rows if r["best_lora"]), None)
        lora = "—" if lora is None else (f"`{lora['label']}`, {100 * lora['share']:.2f}%: "
                                         f"{pct(lora['diff'], True)} ± {pct(lora['diff_std'])}")
        tried = f"{sum(r['eligible'] for r in rows)} / {sum(not r['reference'] for r in rows)}"
        if best is None:
            lines.append(f"| {title(rows)} | {pct(ref['mean'])} ± {pct(ref['std'])} | {chain} | — | — | — | — | — "
                         f"| {tried} | {lora} |")
            continue
        within = "yes" if best["diff"] >= -0.01 else "no"
        lines.append(f"| {title(rows)} | {pct(ref['mean'])} ± {pct(ref['std'])} | {chain} | `{best['label']}` | "
                     f"{best['params']:,} ({100 * best['share']:.2f}%) | {pct(best['mean'])} ± {pct(best['std'])} | "
                     f"{pct(best['diff'], True)} ± {pct(best['diff_std'])} | {within} | {tried} | {lora} |")
    for rows in tables:
        lines += ["", f"**{title(rows)}**: every setting, best difference first (modules q,v unless named)", "",
                  "| setting | run | adapter parameters | / LoRA r=16 | lr | test, mean ± std | seeds | difference "
                  "(paired) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            name = f"**{r['label']}** (closest)" if r["closest"] else (
                f"{r['label']} (reference)" if r["reference"] else r["label"])
            share = "—" if r["share"] is None else f"{100 * r['share']:.2f}%"
            diff = "—" if r["diff"] is None else f"{pct(r['diff'], True)} ± {pct(r['diff_std'])}"
            lines.append(f"| {name} | {r['run']} | {r['params']:,} | {share} | {r['lr']:g} | {pct(r['mean'])} ± "
                         f"{pct(r['std'])} | {r['n']} | {diff} |")
    return "\n".join(lines)


def plot(tables: list[list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(tables) + 3, 4.2))
    for i, rows in enumerate(tables):
        for r in rows:
            if r["reference"] or r["diff"] is None:
                continue
            inside = r["share"] is not None and r["share"] <= BUDGET
            ax.scatter(i, 100 * r["diff"], s=90 if r["closest"] else 25, marker="*" if r["closest"] else "o",
                       facecolors=("C3" if r["closest"] else "C0") if inside else "none",
                       edgecolors="C3" if r["closest"] else "C0" if inside else "C7", zorder=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-1, color="C2", ls="--", lw=0.8, label="goal: within 1 point")
    ax.scatter([], [], c="C0", s=25, label="a setting ≤ 5% of LoRA's parameters")
    ax.scatter([], [], facecolors="none", edgecolors="C7", s=25, label="a setting over 5%")
    ax.scatter([], [], c="C3", marker="*", s=90, label="closest ≤ 5% (3 seeds)")
    ax.set_xticks(range(len(tables)), [title(rows).replace(", ", "\n", 2) for rows in tables], fontsize=7)
    ax.set_ylabel("test − PEFT LoRA r=16, points (paired by seed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(tables: list[list[dict]], path: Path) -> None:
    """One panel per group: each setting's test mean ± std against its adapter parameters (log scale); PEFT LoRA's
    settings on the goal's modules (or one of them) joined by a line, the 5% budget and LoRA r=16 − 1 point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(tables), 5)
    nrows = -(-len(tables) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 3.0 * nrows), squeeze=False)
    for ax, rows in zip(axes.flat, tables):
        ref = next(r for r in rows if r["reference"] and r["modules"] == "qv")
        lora = sorted((r for r in rows if r["lora_rank"] is not None), key=lambda r: r["params"])
        ax.errorbar([r["params"] for r in lora], [100 * r["mean"] for r in lora], [100 * r["std"] for r in lora],
                    color="C1", marker="s", ms=4, lw=1, capsize=2, label="PEFT LoRA (ranks, q/v or one of them)")
        for r in lora:
            ax.annotate(f"r={r['lora_rank']}" + ("" if r["modules"] == "qv" else f" {r['modules']}"),
                        (r["params"], 100 * r["mean"]), fontsize=6, xytext=(3, -8), textcoords="offset points",
                        color="C1")
        others = [r for r in rows if r["method"] != "lora" and not r["lora_form"]]
        two = [r for r in rows if r["lora_form"]]
        ax.scatter([r["params"] for r in two], [100 * r["mean"] for r in two], marker="D", s=22, facecolors="none",
                   edgecolors="C1", zorder=3, label="two-core TT chain (LoRA's form)")
        ax.errorbar([r["params"] for r in others], [100 * r["mean"] for r in others],
                    [100 * r["std"] for r in others], color="C0", fmt="o", ms=3, lw=0.8, capsize=2,
                    label="TT settings")
        best = [r for r in rows if r["closest"]]
        ax.scatter([r["params"] for r in best], [100 * r["mean"] for r in best], marker="*", s=110, c="C3", zorder=4,
                   label="closest TT ≤ 5%")
        ax.axvline(BUDGET * ref["params"], color="C7", ls=":", lw=1, label="5% of LoRA r=16")
        ax.axhline(100 * ref["mean"] - 1, color="C2", ls="--", lw=0.8, label="LoRA r=16 − 1 point")
        ax.set_xscale("log")
        ax.set_title(title(rows), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(tables):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test (mean ± std over seeds)", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("adapter parameters", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None, results_dir: Path = RESULTS) -> list[list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="quality_closest",
                        help="writes benchmarks/results/<name>.{md,png} and <name>_frontier.png")
    args = parser.parse_args(argv)
    tables = [rows for group in collect(results_dir).values() if (rows := compare(group))]
    tables.sort(key=lambda rows: (rows[0]["base"] != "all-MiniLM-L6-v2", rows[0]["task"], rows[0]["budget"]))
    text = markdown(tables)
    (Path(results_dir) / f"{args.name}.md").write_text(text + "\n")
    plot(tables, Path(results_dir) / f"{args.name}.png")
    plot_frontier(tables, Path(results_dir) / f"{args.name}_frontier.png")
    print(text)
    return tables


if __name__ == "__main__":
    main()
