"""``vamba compare``: is model A better than model B on one benchmark? Paired over questions and seeds.

    vamba compare a=runs/eval/lvbench/vamba/init_sa-final b=runs/eval/lvbench/vamba/init_random-final
    vamba compare a=[a_seed0,a_seed1,a_seed2] b=[b_seed0,b_seed1,b_seed2] out=a_vs_b.json names=[SA,random]

Each run is a ``vamba eval`` output directory (its ``responses.jsonl``, ``summary.json``). With several
runs per arm (one per training seed), the k-th run of A is paired with the k-th run of B. Only questions that
every run answered are compared (a skipped video's question has no pair); how many were left out is printed.
Per group (overall, then each ``meta.question_type`` value, e.g. LVBench's categories): the difference in
accuracy A - B in points with its 95% bootstrap interval over seeds and questions, the exact McNemar p-value
over all (run, question) pairs, and which arm the interval favours (``vamba.evaluation.stats``, the same
judgement as the miniature ablations, docs/ablations.md). The arms are labelled by the models their runs hold
(``model_id`` in each run's settings), or by ``names=[A,B]``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vamba.evaluation.stats import judge_paired
from vamba.utils.cli_args import parse_args
from vamba.utils.io import atomic_write_json, read_jsonl

INCONCLUSIVE = "neither (interval contains 0)"


class CompareError(ValueError):
    """Runs that cannot be compared: a missing file, different benchmarks, no common question."""


def load_run(run_dir: str | Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """(benchmark name, qid -> record) of one ``vamba eval`` output directory."""
    run_dir = Path(run_dir)
    responses, summary = run_dir / "responses.jsonl", run_dir / "summary.json"
    for path in (responses, summary):
        if not path.is_file():
            raise CompareError(f"{path} not found: give a finished `vamba eval` output directory")
    records = {}
    for r in read_jsonl(responses):
        if not isinstance(r.get("correct"), bool):
            raise CompareError(f"{responses}: question {r.get('qid')!r} has no true/false 'correct' (not a "
                               "multiple-choice record)")
        records[str(r["qid"])] = r
    return json.loads(summary.read_text())["benchmark"], records


def model_name(run_dir: str | Path) -> str:
    """The model a ``vamba eval`` directory holds, as its records name it: ``model_id.name`` in its settings (runs
    since 2026-12), else the checkpoint path's basename or the replayed file, else the directory's own name."""
    run_dir = Path(run_dir)
    settings = json.loads((run_dir / "summary.json").read_text()).get("settings") or {}
    identity = settings.get("model_id") or {}
    if identity.get("name"):
        return str(identity["name"])
    if settings.get("model"):
        return Path(settings["model"]).name
    if settings.get("replay"):
        return f"replay {settings['replay']}"
    return run_dir.resolve().name


def arm_labels(a_dirs: list[str | Path], b_dirs: list[str | Path],
               names: tuple[str, str] | None = None) -> tuple[str, str]:
    """Labels of the two arms: ``names`` if given, else the models their runs hold (distinct names in seed order,
    e.g. ``init_sa-final``); "(A)" / "(B)" are added when both arms would read the same."""
    if names is not None:
        a, b = names
    else:
        a, b = (", ".join(dict.fromkeys(model_name(d) for d in dirs)) for dirs in (a_dirs, b_dirs))
    return (f"{a} (A)", f"{b} (B)") if a == b else (a, b)


def compare_runs(a_dirs: list[str | Path], b_dirs: list[str | Path], *, resamples: int = 10_000,
                 level: float = 0.95, names: tuple[str, str] | None = None) -> dict[str, Any]:
    """The paired comparison of arm A (``a_dirs``, one per seed) with arm B (``b_dirs``, in the same seed order).

    :param names: labels of the two arms (default: the models their runs hold, ``arm_labels``).
    """
    if not a_dirs or len(a_dirs) != len(b_dirs):
        raise CompareError(f"give one run of B per run of A (paired by position), got {len(a_dirs)} and {len(b_dirs)}")
    runs = [load_run(d) for d in [*a_dirs, *b_dirs]]
    benchmarks = {name for name, _ in runs}
    if len(benchmarks) != 1:
        raise CompareError(f"the runs are of different benchmarks: {sorted(benchmarks)}")
    first = runs[0][1]
    every = set.intersection(*(set(records) for _, records in runs))
    union = set.union(*(set(records) for _, records in runs))
    qids = [q for q in first if q in every]  # benchmark order
    if not qids:
        raise CompareError("no question was answered in every run")
    outcome = np.array([[records[q]["correct"] for q in qids] for _, records in runs], dtype=np.int8)
    a, b = outcome[:len(a_dirs)], outcome[len(a_dirs):]
    label_a, label_b = arm_labels(a_dirs, b_dirs, names)
    favours = {"reproduced": label_a, "contradicted": label_b, "inconclusive": INCONCLUSIVE}
    groups: dict[str, list[int]] = {"overall": list(range(len(qids)))}
    for i, q in enumerate(qids):
        types = first[q].get("meta", {}).get("question_type") or []
        for t in [types] if isinstance(types, str) else types:
            groups.setdefault(str(t), []).append(i)
    rows = []
    for group, cols in groups.items():
        j = judge_paired(a[:, cols], b[:, cols], resamples=resamples, level=level)
        d = j.difference
        rows.append({"group": group, "questions": len(cols), "a": round(100 * float(a[:, cols].mean()), 2),
                     "b": round(100 * float(b[:, cols].mean()), 2),
                     "difference": {"estimate": round(d.estimate, 2), "lo": round(d.lo, 2), "hi": round(d.hi, 2),
                                    "level": level},
                     "per_seed": j.per_seed, "only_a": j.only_a, "only_b": j.only_b, "mcnemar_p": j.mcnemar_p,
                     "favours": favours[j.verdict]})
    return {"benchmark": benchmarks.pop(), "labels": {"a": label_a, "b": label_b},
            "a": [str(d) for d in a_dirs], "b": [str(d) for d in b_dirs],
            "questions": len(qids), "left_out": len(union - every), "groups": rows}


def render(result: dict[str, Any]) -> str:
    level = round(100 * result["groups"][0]["difference"]["level"])
    a, b = result["labels"]["a"], result["labels"]["b"]
    lines = [f"{result['benchmark']}: {a} ({len(result['a'])} run(s)) vs {b}, {result['questions']} questions "
             f"answered in every run ({result['left_out']} left out: not answered in some run)", "",
             f"| group | questions | {a} (%) | {b} (%) | {a} - {b} (points) [{level}% CI] | per seed | McNemar p "
             "| favours |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["groups"]:
        d = r["difference"]
        lines.append(f"| {r['group']} | {r['questions']} | {r['a']:.1f} | {r['b']:.1f} | {d['estimate']:+.1f} "
                     f"[{d['lo']:+.1f}, {d['hi']:+.1f}] | {', '.join(f'{x:+.1f}' for x in r['per_seed'])} | "
                     f"{r['mcnemar_p']:.2g} | {r['favours']} |")
    return "\n".join(lines)


@dataclass
class CompareConfig:
    a: list[str]  # arm A: `vamba eval` output directories, one per seed (also the positional arguments)
    b: list[str]  # arm B, in the same seed order
    resamples: int = 10_000  # bootstrap resamples
    level: float = 0.95  # interval level
    out: str | None = None  # also write the comparison as JSON here
    names: list[str] | None = None  # labels of arms A and B (default: the models their eval runs hold)


def parse(argv: list[str]) -> CompareConfig:
    return parse_args(CompareConfig, argv, prog="vamba compare", doc=__doc__ or "", positional=("a",),
                      deprecated={"vs": "b"})


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.names is not None and len(args.names) != 2:
        print(f"vamba compare: names takes two labels (arm A, arm B), got {args.names}", file=sys.stderr)
        return 2
    try:
        result = compare_runs(args.a, args.b, resamples=args.resamples, level=args.level,
                              names=tuple(args.names) if args.names else None)
    except (CompareError, ValueError) as e:
        print(f"vamba compare: {e}", file=sys.stderr)
        return 2
    print(render(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0
