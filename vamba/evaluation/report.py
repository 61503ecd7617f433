"""Markdown report of a run: the headline score beside the published numbers, then every breakdown."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vamba.evaluation.published import rows_for

_HEADLINE_NAMES = {"overall": "accuracy", "m_avg": "M-Avg", "task_mean": "mean of task accuracies"}


def _acc(value: float | None) -> str:
    # A group with no answered question has no accuracy: "-" with its n=0, never "0.0".
    return "–" if value is None else f"{value:.1f}"


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
        lines += [f"**{summary['score']:.1f}** on {answered}: the published protocol on the whole official question "
                  "set, comparable with the published numbers.", ""]
    lines += [f"Protocol `{summary['protocol']}`, extractor `{summary['extractor']}`.", ""]
    model = (summary.get("settings") or {}).get("model_id")
    if model:
        lines += [f"Model: `{model.get('name')}` ({model.get('path')}).", ""]
    skipped = summary.get("skipped") or {}
    if skipped.get("questions"):
        lines += [f"Skipped {skipped['questions']} questions ({skipped.get('videos', 0)} videos missing or "
                  f"unreadable); see `summary.json`.", ""]
    lines += _comparability_section(summary.get("comparability"))
    if reasons:
        lines += [f"Published numbers, for reference only: **not comparable with this run because** "
                  f"{'; '.join(reasons)}.", ""]
    label = f"**{run_name}**" + (" (not comparable, see above)" if reasons else "")
    lines += [f"| model | size | {title} |", "|---|---|---:|", f"| {label} | | **{summary['score']:.1f}** |"]
    for model_name, size, score, rerun in rows_for(name):
        lines.append(f"| {model_name} | {size} | {score:.1f}{'*' if rerun else ''} |")
    lines += ["", "\\* re-evaluated by the VAMBA authors with their scripts. Published numbers: VAMBA paper, "
              "Tables 4-5.", ""]
    for key, value in summary["metrics"].items():
        if not isinstance(value, Mapping):
            continue
        lines += [f"## {key.removeprefix('by_').replace('_', ' ')}", "", "| group | accuracy | correct / total |",
                  "|---|---:|---:|"]
        lines += [f"| {group} | {_acc(g['acc'])} | {g['correct']} / {g['total']} |" for group, g in value.items()]
        empty = [group for group, g in value.items() if g["acc"] is None]
        if empty:
            lines += ["", f"– = no answered question (n=0): left out of every mean ({', '.join(empty)})."]
        lines.append("")
    other = {k: v for k, v in summary["metrics"].items() if not isinstance(v, Mapping) and k != summary["headline"]}
    if other:
        lines += ["Also: " + ", ".join(f"{k} {v:.1f}" for k, v in other.items()), ""]
    return "\n".join(lines)


def _comparability_section(comparability: Mapping[str, Any] | None) -> list[str]:
    """What differs from the published protocol, setting by setting, and how the questions cover the official set."""
    if not comparability:
        return []
    lines = []
    q = comparability["questions"]
    if q["official"] is None:
        lines += [f"Questions: {q['answered']} answered of {q['loaded']} loaded ({q['loaded_videos']} videos); the "
                  "official count is not recorded for this benchmark.", ""]
    else:
        videos = f"; videos {q['loaded_videos']} of {q['official_videos']}" if q["official_videos"] else ""
        lines += [f"Questions: {q['answered']} of the official {q['official']} answered ({q['loaded']} loaded, "
                  f"{q['missing']} loaded ids not answered{videos}); source: {q['source']}.", ""]
    if comparability["differences"]:
        lines += ["| setting | this run | published protocol |", "|---|---|---|"]
        lines += [f"| {d['setting']} | {d['ours']} | {d['protocol']} |" for d in comparability["differences"]]
        lines.append("")
    return lines
