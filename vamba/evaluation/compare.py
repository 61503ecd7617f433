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

What is compared is the models: every other setting of the runs (frames, generation, protocol, extractor, pixel
limits, dtype, FP8, data, ...: each run's ``summary.json`` settings) must be the same in all of them, and a
question id must name the same question in every run (its gold answer, options and video file); a difference is an
error naming it. ``differ=[frames,...]`` allows the named settings to differ (comparing frame counts on one model,
say); the output then lists their values per run.
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
    """Runs that cannot be compared: a missing file, different benchmarks or settings, no common question."""


# Settings that name what the arms compare (the model, or the recorded replies standing for one), and those the
# pairing handles (only questions every run answered are compared; the count left out is printed).
MODEL_SETTINGS = ("model", "model_id", "replay")
PAIRED_SETTINGS = ("questions", "limit")
# What makes a question id the same question in two runs (the prompt may differ with allowed settings, e.g.
# subtitles): its gold answer, its options and its video's file name.
QUESTION_KEYS = ("gold", "options", "choices")


def run_settings(run_dir: str | Path) -> dict[str, Any]:
    """The settings a ``vamba eval`` directory was made with (``summary.json``), less the model's and the pairing's;
    those recorded later than the run read as their defaults (``ADDED_SETTINGS``)."""
    from vamba.evaluation.runner import ADDED_SETTINGS

    settings = json.loads((Path(run_dir) / "summary.json").read_text()).get("settings") or {}
    settings = {**ADDED_SETTINGS, **settings}
    return {k: v for k, v in settings.items() if k not in MODEL_SETTINGS + PAIRED_SETTINGS}


def check_settings(dirs: list[str | Path], differ: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every run's settings against the first's: a difference not in ``differ`` is a ``CompareError`` naming the
    setting and both values. Returns the allowed differences: setting -> {run: value}."""
    settings = [run_settings(d) for d in dirs]
    unknown = set(differ) - set().union(*settings)
    if unknown:
        raise CompareError(f"differ names settings the runs do not record: {sorted(unknown)} (recorded: "
                           f"{sorted(set().union(*settings))})")
    differing: dict[str, dict[str, Any]] = {}
    for key in sorted(set().union(*settings)):
        values = [s.get(key) for s in settings]
        if all(v == values[0] for v in values):
            continue
        if key not in differ:
            k = next(i for i, v in enumerate(values) if v != values[0])
            raise CompareError(f"the runs differ in {key!r}: {values[0]!r} in {dirs[0]}, {values[k]!r} in {dirs[k]}; "
                               f"compare runs made with the same settings, or allow it with differ=[{key}]")
        differing[key] = {str(d): v for d, v in zip(dirs, values)}
    return differing


def check_questions(qids: list[str], runs: list[dict[str, dict[str, Any]]], dirs: list[str | Path]) -> None:
    """Each question id names the same question in every run (``QUESTION_KEYS`` and the video's file name)."""
    for q in qids:
        first = runs[0][q]
        for records, d in zip(runs[1:], dirs[1:]):
            r = records[q]
            for key in QUESTION_KEYS:
                if r.get(key) != first.get(key):
                    raise CompareError(f"question {q!r} is another question in {d} than in {dirs[0]} ({key}: "
                                       f"{r.get(key)!r} vs {first.get(key)!r}): were the runs made on the same "
                                       "annotation files?")
            if Path(str(r.get("video"))).name != Path(str(first.get("video"))).name:
                raise CompareError(f"question {q!r} asks about {r.get('video')} in {d} and {first.get('video')} in "
                                   f"{dirs[0]}")


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
                 level: float = 0.95, names: tuple[str, str] | None = None,
                 differ: tuple[str, ...] = ()) -> dict[str, Any]:
    """The paired comparison of arm A (``a_dirs``, one per seed) with arm B (``b_dirs``, in the same seed order).

    :param names: labels of the two arms (default: the models their runs hold, ``arm_labels``).
    :param differ: settings allowed to differ between the runs (``check_settings``); any other is an error.
    """
    if not a_dirs or len(a_dirs) != len(b_dirs):
        raise CompareError(f"give one run of B per run of A (paired by position), got {len(a_dirs)} and {len(b_dirs)}")
    runs = [load_run(d) for d in [*a_dirs, *b_dirs]]
    benchmarks = {name for name, _ in runs}
    if len(benchmarks) != 1:
        raise CompareError(f"the runs are of different benchmarks: {sorted(benchmarks)}")
    differing = check_settings([*a_dirs, *b_dirs], differ)
    first = runs[0][1]
    every = set.intersection(*(set(records) for _, records in runs))
    union = set.union(*(set(records) for _, records in runs))
    qids = [q for q in first if q in every]  # benchmark order
    if not qids:
        raise CompareError("no question was answered in every run")
    check_questions(qids, [records for _, records in runs], [*a_dirs, *b_dirs])
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
            "questions": len(qids), "left_out": len(union - every), "settings": run_settings(a_dirs[0]),
            "differing": differing, "groups": rows}


def render(result: dict[str, Any]) -> str:
    level = round(100 * result["groups"][0]["difference"]["level"])
    a, b = result["labels"]["a"], result["labels"]["b"]
    lines = [f"{result['benchmark']}: {a} ({len(result['a'])} run(s)) vs {b}, {result['questions']} questions "
             f"answered in every run ({result['left_out']} left out: not answered in some run)", "",
             f"| group | questions | {a} (%) | {b} (%) | {a} - {b} (points) [{level}% CI] | per seed | McNemar p "
             "| favours |",
             "|---|---|---|---|---|---|---|---|"]
    if len(result["a"]) == 1:
        lines[2:2] = ["One run per arm: the interval covers which questions were asked, not how training went (another "
                      "seed may differ by more; docs/ablations.md).", ""]
    for key, values in result.get("differing", {}).items():
        lines[2:2] = [f"Allowed to differ (differ=): {key}: " + "; ".join(f"{v!r} in {d}" for d, v in values.items()),
                      ""]
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
    # settings the runs may differ in (e.g. [frames]); any other difference between them is an error naming it
    differ: list[str] | None = None


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
                              names=tuple(args.names) if args.names else None, differ=tuple(args.differ or ()))
    except (CompareError, ValueError) as e:
        print(f"vamba compare: {e}", file=sys.stderr)
        return 2
    print(render(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0
