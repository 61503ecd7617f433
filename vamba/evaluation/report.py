"""Markdown report of a run: the headline score beside the published numbers, then every breakdown."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vamba.evaluation.published import rows_for

_HEADLINE_NAMES = {"overall": "accuracy", "m_avg": "M-Avg", "task_mean": "mean of task accuracies"}


def render(summary: Mapping[str, Any], run_name: str = "this run") -> str:
    """Markdown for a summary made by ``vamba.evaluation.scoring.summarize``."""
    name, title = summary["benchmark"], summary["title"]
    metric = _HEADLINE_NAMES.get(summary["headline"], summary["headline"])
    answered = f"{summary['answered']} of {summary['expected']} questions answered"
    reasons = summary.get("not_comparable", [] if summary["complete"] else [answered])
    lines = [f"# {title}: {metric} (%)", ""]
    if reasons:
        incomplete = ("" if summary["complete"] else " Incomplete run: the released scripts would have stopped at "
                      "the first missing or undecodable video (`strict=true` stops there too).")
        lines += [f"**{summary['score']:.1f} on {answered}: NOT comparable with the published numbers** "
                  f"({'; '.join(reasons)}).{incomplete}", ""]
    else:
        lines += [f"**{summary['score']:.1f}** on {answered}.", ""]
    lines += [f"Protocol `{summary['protocol']}`, extractor `{summary['extractor']}`.", ""]
    skipped = summary.get("skipped") or {}
    if skipped.get("questions"):
        lines += [f"Skipped {skipped['questions']} questions ({skipped.get('videos', 0)} videos missing or "
                  f"unreadable); see `summary.json`.", ""]
    label = f"**{run_name}**" + (f" ({answered}, not comparable)" if reasons else "")
    lines += [f"| model | size | {title} |", "|---|---|---:|", f"| {label} | | **{summary['score']:.1f}** |"]
    for model, size, score, rerun in rows_for(name):
        lines.append(f"| {model} | {size} | {score:.1f}{'*' if rerun else ''} |")
    lines += ["", "\\* re-evaluated by the VAMBA authors with their scripts. Published numbers: VAMBA paper, "
              "Tables 4-5.", ""]
    for key, value in summary["metrics"].items():
        if not isinstance(value, Mapping):
            continue
        lines += [f"## {key.removeprefix('by_').replace('_', ' ')}", "", "| group | accuracy | correct / total |",
                  "|---|---:|---:|"]
        lines += [f"| {group} | {g['acc']:.1f} | {g['correct']} / {g['total']} |" for group, g in value.items()]
        lines.append("")
    other = {k: v for k, v in summary["metrics"].items() if not isinstance(v, Mapping) and k != summary["headline"]}
    if other:
        lines += ["Also: " + ", ".join(f"{k} {v:.1f}" for k, v in other.items()), ""]
    return "\n".join(lines)
