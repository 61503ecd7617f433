"""What a miniature ablation sweep found (vamba.recipes.ablation): per variant and stage, and per paper claim.

Every run answered the same held-out questions after stage 1 and after stage 2, so its per-question outcomes
(``result.json``: ``stages.<stage>.correct``, one character per question) form a ``[seeds, questions]`` grid
per variant and stage. A claim ("``better`` scores higher than ``worse``") is judged on the seeds both
variants ran: the paired difference in accuracy with its 95% bootstrap interval over seeds and questions,
the exact McNemar test over all (seed, question) pairs, and a verdict (``vamba.evaluation.stats``):
reproduced / contradicted / inconclusive.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from vamba.data.synth import LVBENCH_TYPES
from vamba.evaluation.stats import Interval, bootstrap_mean, judge_paired
from vamba.recipes.config import AblationTrainConfig, ClaimConfig
from vamba.recipes.demo import CHANCE, TASK_TITLES

STAGE_TITLES = {"pretrain": "after stage 1 (LLM frozen)", "sft": "after stage 2"}
TASK_OF_TYPE = {types[0]: task for task, types in LVBENCH_TYPES.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def grid(results: dict[tuple[str, int], dict[str, Any]], name: str, stage: str, seeds: list[int],
          columns: np.ndarray) -> np.ndarray:
    """``[len(seeds), len(columns)]`` 0/1 outcomes of variant ``name`` at ``stage``."""
    rows = [np.frombuffer(results[(name, s)]["stages"][stage]["correct"].encode(), dtype=np.uint8) for s in seeds]
    return (np.stack(rows)[:, columns] == ord("1")).astype(np.int8)


def answered(results: dict[tuple[str, int], dict[str, Any]], keys: list[tuple[str, int]], stage: str,
              n: int) -> np.ndarray:
    """Questions answered in every given run (a skipped video's question cannot be paired)."""
    ok = np.ones(n, dtype=bool)
    for key in keys:
        ok &= np.frombuffer(results[key]["stages"][stage]["correct"].encode(), dtype=np.uint8) != ord(".")
    return ok


def interval_json(ci: Interval) -> dict[str, float]:
    return {"estimate": round(ci.estimate, 2), "lo": round(ci.lo, 2), "hi": round(ci.hi, 2), "level": ci.level}


def summarize(cfg: AblationTrainConfig, results: dict[tuple[str, int], dict[str, Any]], teacher: dict[str, Any],
              questions: list) -> dict[str, Any]:
    """The JSON of a sweep: questions, per-variant tables per stage, the claims, every run."""
    tasks = [TASK_OF_TYPE[q.meta["question_type"][0]] for q in questions]
    n = len(tasks)
    columns = {"overall": np.arange(n), **{t: np.flatnonzero(np.array(tasks) == t) for t in cfg.demo.tasks}}
    resamples = cfg.ablation.resamples
    variants: dict[str, Any] = {}
    for name, overrides in cfg.ablation.variants.items():
        seeds = sorted(s for v, s in results if v == name)
        if not seeds:
            continue
        row: dict[str, Any] = {"overrides": overrides, "seeds": seeds, "stages": {}, "loss": {}}
        for stage in results[(name, seeds[0])]["stages"]:
            runs = [results[(name, s)]["stages"][stage] for s in seeds]
            ok = answered(results, [(name, s) for s in seeds], stage, n)
            row["stages"][stage] = {
                "accuracy": mean_std([r["accuracy"] for r in runs]),
                "tasks": {t: mean_std([r["tasks"][t] for r in runs]) for t in cfg.demo.tasks
                          if all(t in r["tasks"] for r in runs)},
                "ci": {group: interval_json(bootstrap_mean(grid(results, name, stage, seeds, cols[ok[cols]]),
                                                       resamples=resamples))
                       for group, cols in columns.items() if ok[cols].any()}}
        for stage, curves in ((s, [dict(map(tuple, results[(name, k)]["loss"][s])) for k in seeds])
                              for s in results[(name, seeds[0])]["loss"]):
            steps = sorted({step for c in curves for step in c})
            row["loss"][stage] = [(step, statistics.fmean([c[step] for c in curves if step in c])) for step in steps]
        variants[name] = row
    return {"questions": {"count": n, "per_task": {t: int(len(c)) for t, c in columns.items() if t != "overall"},
                          "qids": [q.qid for q in questions], "tasks": tasks},
            "teacher": teacher, "variants": variants,
            "claims": compare(cfg.ablation.claims, results, columns, cfg.ablation.resamples),
            "runs": {f"{name}/seed{seed}": r for (name, seed), r in sorted(results.items())}}


def compare(claims: list[ClaimConfig], results: dict[tuple[str, int], dict[str, Any]],
            columns: dict[str, np.ndarray], resamples: int) -> list[dict[str, Any]]:
    """Each claim at each stage, overall and per group of questions (``columns``: group -> question indices), on
    the seeds both variants ran. ``results[(variant, seed)]["stages"][stage]["correct"]``: one character per
    question ('1' right, '0' wrong, '.' not answered). The miniature and the full-scale pipeline both judge here."""
    rows = []
    n = len(columns["overall"])
    for claim in claims:
        for stage in STAGE_TITLES:
            seeds = sorted(s for v, s in results if v == claim.better and stage in results[(v, s)]["stages"]
                           and stage in results.get((claim.worse, s), {}).get("stages", {}))
            if not seeds:
                continue
            keys = [(v, s) for v in (claim.better, claim.worse) for s in seeds]
            ok = answered(results, keys, stage, n)
            for group, cols in columns.items():
                cols = cols[ok[cols]]
                if not len(cols):
                    continue
                a = grid(results, claim.better, stage, seeds, cols)
                b = grid(results, claim.worse, stage, seeds, cols)
                j = judge_paired(a, b, resamples=resamples)
                rows.append({"claim": claim.claim, "better": claim.better, "worse": claim.worse, "paper": claim.paper,
                             "shown": group == "overall" or group in claim.tasks, "stage": stage, "group": group,
                             "seeds": seeds, "questions": int(len(cols)), "difference": interval_json(j.difference),
                             "per_seed": j.per_seed, "only_better": j.only_a, "only_worse": j.only_b,
                             "mcnemar_p": j.mcnemar_p, "verdict": j.verdict})
    return rows


def render(summary: dict[str, Any], title: str) -> str:
    """Markdown: the claims, then accuracy per variant and stage (mean ± std over seeds, and the 95% interval
    of the overall accuracy over seeds and questions), the teacher, and any failed runs."""
    q = summary["questions"]
    tasks = list(q["per_task"])
    lines = [f"## {title}", "", f"{q['count']} held-out questions ("
             + ", ".join(f"{TASK_TITLES[t]} {k}" for t, k in q["per_task"].items()) + f"), the same for every run; "
             f"chance {CHANCE:.0f}%.", ""]
    lines += render_claims(summary["claims"], TASK_TITLES)
    for stage, stage_title in STAGE_TITLES.items():
        rows = {name: v["stages"][stage] for name, v in summary["variants"].items() if stage in v["stages"]}
        if not rows:
            continue
        lines += [f"### Accuracy (%) {stage_title}, mean ± std over seeds", "",
                  "| variant | overrides | seeds | overall | overall 95% CI | " + " | ".join(TASK_TITLES[t] for t in tasks)
                  + " |", "|---" * (5 + len(tasks)) + "|"]
        for name, row in rows.items():
            k = len(summary["variants"][name]["seeds"])
            ci = row["ci"]["overall"]
            cells = " | ".join(cell(row["tasks"][t], k) if t in row["tasks"] else "-" for t in tasks)
            lines.append(f"| {name} | {' '.join(summary['variants'][name]['overrides']) or '(the demo)'} | {k} | "
                         f"{cell(row['accuracy'], k)} | [{ci['lo']:.1f}, {ci['hi']:.1f}] | {cells} |")
        lines.append("")
    teacher = summary["teacher"]
    lines += [f"Teacher (Qwen2-VL, shared, one training): {teacher['accuracy']:.1f} overall, "
              + ", ".join(f"{TASK_TITLES[t]} {teacher['tasks'][t]:.1f}" for t in tasks if t in teacher.get("tasks", {}))
              + "."]
    if summary.get("failed"):
        lines += ["", "Failed runs (error.txt in each run directory; the same command retries them):"]
        lines += [f"- {run}: {why}" for run, why in summary["failed"].items()]
    return "\n".join(lines)


def render_claims(claims: list[dict[str, Any]], group_titles: dict[str, str]) -> list[str]:
    """The claims table (markdown lines, empty without claims): the rows of ``compare`` marked ``shown``."""
    if not claims:
        return []
    lines = ["### Claims (paired: the same questions and seeds; 95% bootstrap interval over seeds and questions)",
             "", "| claim | paper | stage | questions | seeds | better − worse (points) [95% CI] | "
             "McNemar p | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in claims:
        if not r["shown"]:
            continue
        d = r["difference"]
        what = "overall" if r["group"] == "overall" else group_titles.get(r["group"], r["group"])
        lines.append(f"| {r['claim']}: {r['better']} vs {r['worse']} | {r['paper']} | {STAGE_TITLES[r['stage']]}, "
                     f"{what} | {r['questions']} | {len(r['seeds'])} | {d['estimate']:+.1f} [{d['lo']:+.1f}, "
                     f"{d['hi']:+.1f}] | {_p(r['mcnemar_p'])} | {r['verdict']} |")
    return lines + [""]


def cell(ms: tuple[float, float], seeds: int) -> str:  # one seed has no spread to show
    return f"{ms[0]:.1f} ± {ms[1]:.1f}" if seeds > 1 else f"{ms[0]:.1f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def plot_losses(variants: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage in zip(axes, STAGE_TITLES):
        for name, row in variants.items():
            if row["loss"].get(stage):
                steps, losses = zip(*row["loss"][stage])
                ax.plot(steps, losses, label=name)
        ax.set(title=f"{stage} loss (mean over seeds)", xlabel="step", ylabel="loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(summary: dict[str, Any], path: Path) -> None:
    """One panel per stage: bars per variant, overall and per task, with the 95% bootstrap interval over seeds
    and questions as error bars; dashed: chance; dotted: the shared teacher (overall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = summary["variants"]
    groups = ["overall", *summary["questions"]["per_task"]]
    names = list(variants)
    width = 0.8 / len(groups)
    fig, axes = plt.subplots(len(STAGE_TITLES), 1, figsize=(max(7.0, 1.4 * len(names) + 2), 7), squeeze=False)
    for ax, (stage, stage_title) in zip(axes[:, 0], STAGE_TITLES.items()):
        for i, group in enumerate(groups):
            x = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))]
            cis = [variants[n]["stages"].get(stage, {}).get("ci", {}).get(group) for n in names]
            est = [c["estimate"] if c else 0.0 for c in cis]
            err = [[c["estimate"] - c["lo"] if c else 0.0 for c in cis], [c["hi"] - c["estimate"] if c else 0.0
                                                                           for c in cis]]
            ax.bar(x, est, width, yerr=err, capsize=2, label="overall" if group == "overall" else TASK_TITLES[group])
        ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.axhline(summary["teacher"]["accuracy"], color="black", linestyle=":", linewidth=1, label="teacher (overall)")
        ax.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=8)
        ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=f"{stage_title}: mean with 95% CI (seeds and questions)")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
