"""``vamba train experiment=mini_ablations``: the paper's ablations in miniature, on the demo's pipeline.

Every variant is the demo's VAMBA recipe (convert the teacher -> stage 1 with distillation -> stage 2 ->
held-out synthetic benchmark) with a few overrides of this config (``ablation.variants``: name -> list
of ``key=value``), repeated for each of ``ablation.seeds`` (the seed draws the new modules' initial weights
and the data order). All runs share one data set and one teacher, made once in ``output_dir/shared``.

    output_dir/shared/{data,teacher,teacher_eval}    the demo's data and teacher, its accuracy
    output_dir/runs/<variant>/seed<k>/               one run: pretrain/, sft/, eval/, result.json
    output_dir/ablation.json, ablation.md, loss.png, accuracy.png  mean +- std over seeds per variant, per task

A run whose ``result.json`` exists is not run again, so an interrupted sweep continues where it stopped.
Scaling up: the same variants apply to ``vamba train`` runs on real models and data (model=vamba_qwen2vl_7b,
data.mixture=..., experiment=paper_pretrain); this module only drives the CPU miniature.
"""
from __future__ import annotations

import copy
import datetime
import json
import multiprocessing
import statistics
import traceback
from pathlib import Path
from typing import Any

import torch

from vamba.data.synth import TASKS
from vamba.recipes import demo
from vamba.recipes.config import AblationTrainConfig, validate_demo
from vamba.training.config import ConfigError
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.logging import get_logger

logger = get_logger(__name__)


def variant_configs(cfg: AblationTrainConfig) -> dict[tuple[str, int], AblationTrainConfig]:
    """(variant, seed) -> the run's config. Every override must name an existing key with a value of its
    type: a typo fails here, before anything runs."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not cfg.ablation.variants or not cfg.ablation.seeds:
        raise ConfigError("ablation.variants and ablation.seeds must not be empty")
    base = OmegaConf.structured(copy.deepcopy(cfg))
    configs = {}
    for name, overrides in cfg.ablation.variants.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"ablation variant {name!r}: use letters, digits, '_' and '-' (it names a folder)")
        for override in overrides:
            key = override.split("=", 1)[0]
            if "=" not in override or OmegaConf.select(base, key, default="<missing>") == "<missing>":
                raise ConfigError(f"ablation variant {name!r}: {override!r} is not key=value of an existing key")
        try:
            merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as e:
            raise ConfigError(f"ablation variant {name!r}: {e}") from None
        for seed in cfg.ablation.seeds:
            run = OmegaConf.to_object(merged)
            run.seed = seed
            configs[(name, seed)] = run
    return configs


def _shared(cfg: AblationTrainConfig, shared: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The data set, the teacher and the teacher's accuracy, each made once (skipped when present)."""
    torch.set_num_threads(cfg.demo.threads)
    data = demo.write_data(cfg, shared / "data")
    teacher = demo.train_teacher(cfg, data, shared / "teacher")
    if not (shared / "teacher_result.json").exists():
        atomic_write_json(shared / "teacher_result.json",
                          demo.evaluate_model(cfg, data, teacher, shared / "teacher_eval", teacher=True))
    return data, json.loads((shared / "teacher_result.json").read_text())


def _run_one(job: tuple[AblationTrainConfig, dict[str, Path], Path, Path]) -> dict[str, Any]:
    """One (variant, seed): stage 1 + stage 2 from the shared teacher, then the held-out benchmark.

    A run that fails returns {"error": ...} (and leaves error.txt, no result.json, so a re-run retries it):
    one broken variant must not stop the others."""
    cfg, data, teacher, out = job
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    try:
        return _train_and_evaluate(cfg, data, teacher, out)
    except Exception as e:  # noqa: BLE001 - recorded per run, reported by run_ablation
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "error.txt", traceback.format_exc())
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def _train_and_evaluate(cfg: AblationTrainConfig, data: dict[str, Path], teacher: Path, out: Path) -> dict[str, Any]:
    torch.set_num_threads(cfg.demo.threads)
    final = demo.train_vamba(cfg, data, teacher, out)
    result = demo.evaluate_model(cfg, data, final, out / "eval")
    result["tasks"] = demo.task_accuracy(result)
    result["loss"] = {stage: _losses(out / stage / "log.jsonl") for stage in ("pretrain", "sft")}
    atomic_write_json(out / "result.json", result)
    return result


def _losses(log: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: dict[tuple[str, int], dict[str, Any]], variants: dict[str, list[str]]) -> dict[str, Any]:
    """Per variant: mean +- std over seeds of the overall and per-task accuracy, and the mean loss curves."""
    table = {}
    for name in variants:
        runs = [r for (v, _), r in sorted(results.items()) if v == name]
        if not runs:
            continue
        row = {"overrides": variants[name], "seeds": len(runs),
               "accuracy": mean_std([r["accuracy"] for r in runs]),
               "tasks": {t: mean_std([r["tasks"][t] for r in runs]) for t in TASKS if all(t in r["tasks"] for r in runs)},
               "loss": {}}
        for stage in ("pretrain", "sft"):
            steps = sorted({s for r in runs for s, _ in r["loss"][stage]})
            curves = [dict(r["loss"][stage]) for r in runs]
            row["loss"][stage] = [(s, statistics.fmean([c[s] for c in curves if s in c])) for s in steps]
        table[name] = row
    return table


def render(table: dict[str, Any], teacher: dict[str, Any], questions: int, title: str) -> str:
    def cell(ms: tuple[float, float], n: int) -> str:  # one seed has no spread to show
        return f"{ms[0]:.1f} ± {ms[1]:.1f}" if n > 1 else f"{ms[0]:.1f}"

    lines = [f"## {title}", "", f"Accuracy (%) on {questions} held-out synthetic questions, mean ± std over seeds; "
             f"chance {demo.CHANCE:.0f}%.", "",
             "| variant | overrides | seeds | overall | needle colour | event order | counting |",
             "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        tasks = " | ".join(cell(row["tasks"][t], row["seeds"]) if t in row["tasks"] else "-" for t in TASKS)
        lines.append(f"| {name} | {' '.join(row['overrides']) or '(the demo)'} | {row['seeds']} | "
                     f"{cell(row['accuracy'], row['seeds'])} | {tasks} |")
    t = demo.task_accuracy(teacher)
    lines.append(f"| teacher (Qwen2-VL, shared) | - | 1 | {teacher['accuracy']:.1f} | "
                 + " | ".join(f"{t[k]:.1f}" if k in t else "-" for k in TASKS) + " |")
    return "\n".join(lines)


def plot_losses(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage in zip(axes, ("pretrain", "sft")):
        for name, row in table.items():
            if row["loss"][stage]:
                steps, losses = zip(*row["loss"][stage])
                ax.plot(steps, losses, label=name)
        ax.set(title=f"{stage} loss (mean over seeds)", xlabel="step", ylabel="loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(table: dict[str, Any], teacher: dict[str, Any], path: Path) -> None:
    """Bars: accuracy per variant, overall and per task, mean over seeds with the seeds' std as error bars;
    dashed: chance; dotted: the shared teacher (overall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ("overall", *TASKS)
    names = list(table)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4))
    for i, group in enumerate(groups):
        cells = [table[n]["accuracy"] if group == "overall" else table[n]["tasks"].get(group, (0.0, 0.0)) for n in names]
        ax.bar([j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))], [m for m, _ in cells], width,
               yerr=[sd for _, sd in cells], capsize=2, label=group)
    ax.axhline(demo.CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.axhline(teacher["accuracy"], color="black", linestyle=":", linewidth=1, label="teacher (overall)")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="accuracy per variant (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_ablation(cfg: AblationTrainConfig) -> dict[str, Any]:
    from vamba.training.run import write_run_info
    from vamba.utils.provenance import code_commit, environment

    validate_demo(cfg)
    configs = variant_configs(cfg)  # fails on a bad override before any work
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(cfg, out)
    # The teacher trains in a child process: its in-memory sample cache (GBs at the demo's sizes) then dies
    # with it instead of staying in this process beside the workers'.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        data, teacher_result = pool.apply(_shared, (cfg, out / "shared"))
    teacher = out / "shared" / "teacher"

    # seed-major order: a sweep stopped early has every variant at the first seeds
    configs = dict(sorted(configs.items(), key=lambda kv: (cfg.ablation.seeds.index(kv[0][1]),
                                                           list(cfg.ablation.variants).index(kv[0][0]))))
    jobs = [(c, data, teacher, out / "runs" / name / f"seed{seed}") for (name, seed), c in configs.items()]
    # spawn: a fresh interpreter per run (no forked torch/OpenMP state; each run's data cache freed with it)
    with multiprocessing.get_context("spawn").Pool(cfg.ablation.workers, maxtasksperchild=1) as pool:
        outputs = pool.map(_run_one, jobs, chunksize=1)
    results = {key: r for key, r in zip(configs, outputs) if "error" not in r}
    failed = {f"{name}/seed{seed}": r["error"] for (name, seed), r in zip(configs, outputs) if "error" in r}

    table = aggregate(results, cfg.ablation.variants)
    questions = len(list((data["bench"] / "videos").glob("*.mp4")))
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "environment": environment(), "git_commit": code_commit(), "questions": questions,
               "chance": demo.CHANCE, "teacher": teacher_result, "variants": table,
               "runs": {f"{name}/seed{seed}": r for (name, seed), r in results.items()}, "failed": failed}
    atomic_write_json(out / "ablation.json", summary)
    markdown = render(table, teacher_result, questions, f"Miniature ablations ({out.name})")
    if failed:
        markdown += "\n\nFailed runs (error.txt in each run directory; a re-run retries them):\n" + "\n".join(
            f"- {run}: {error}" for run, error in failed.items())
    atomic_write_text(out / "ablation.md", markdown + "\n")
    plot_losses(table, out / "loss.png")
    plot_accuracy(table, teacher_result, out / "accuracy.png")
    print("\n" + markdown + f"\n\nrun directory: {out}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(configs)} ablation runs failed: {', '.join(failed)} "
                           f"(the others are aggregated in {out / 'ablation.md'})")
    return summary
