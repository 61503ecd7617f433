"""Crafted replies scored as the released VAMBA evaluation scores them, benchmark by benchmark.

The expected outcomes were worked out by reading the released scripts (TIGER-AI-Lab/Vamba ``eval/eval_*.py``,
function ``main``), not by running our code. All seven apply one rule to the reply exactly as ``Vamba.__call__``
(``tools/vamba_chat.py``) returns it, i.e. ``batch_decode(..., skip_special_tokens=True)`` with nothing
stripped: lower-case it; if it contains "the answer is", keep what follows the last one, else if it contains
"answer:", what follows the last one, else if it contains "the option is", what follows the last
"the option is " (with the space); strip that; the first alphabetic character is the prediction, compared
with the gold letter. No character at all is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vamba.evaluation.benchmarks import NAMES, BenchmarkDataError, get_benchmark
from vamba.evaluation.replay import ReplayModel
from vamba.evaluation.runner import evaluate
from vamba.evaluation.scoring import make_record
from vamba.utils.io import read_jsonl

from .minibench import WRITERS

# (reply, official outcome); {g} is the gold letter, {gl} the gold letter in lower case, {o} another option.
CASES = [
    # Ends in "the option is ": the official split leaves "" -> no character -> wrong, although the reply starts
    # with the right letter. Stripping the reply first (as our harness once did) loses the space, the split
    # does not happen and the reply's first letter is read: right. (eval_*.py main: split("the option is "))
    ("{g} fits the video best, so the option is ", False),
    ("{g} fits the video best, so the option is \n", False),
    # After the last "the answer is": "({gl})." -> first letter {gl} == gold.lower() (eval_*.py main)
    ("The answer is ({gl}).", True),
    # The last "the answer is" counts (split(...)[-1]).
    ("The answer is {o}. No, the answer is {g}.", True),
    # "answer:" branch; leading whitespace and newlines are no characters.
    ("\n  Answer: {gl}", True),
    ("  {g}", True),
    # "the option is " splits when a letter follows it.
    ("I think the option is {g}", True),
    # Quirks of the rule: "Option C" reads as "o", "I think C" as "i" (neither is ever a gold letter).
    ("Option {g}", False),
    ("I think {g}", False),
    # Nothing to read.
    ("", False),
    (" \n ", False),
]


def _other(q, gold: str) -> str:
    return next(c for c in q.choices if c != gold)


@pytest.mark.parametrize("name", NAMES)
def test_crafted_replies_score_as_the_released_scripts(name: str, tmp_path: Path) -> None:
    bench = get_benchmark(name)
    spec = bench.protocol("vamba")
    questions = bench.load(WRITERS[name](tmp_path / name), {})
    for reply, official in CASES:
        for q in questions:
            text = reply.format(g=q.answer, gl=q.answer.lower(), o=_other(q, q.answer))
            record = make_record(q, spec.prompt(q), text, spec.extractor, spec.extractor_choices or q.choices)
            assert record["response"] == text
            assert record["correct"] is official, (name, q.qid, text, record["pred"])


def test_the_runner_keeps_and_scores_the_raw_reply(tmp_path: Path) -> None:
    """Through the runner: the recorded reply keeps its whitespace and is scored as generated."""
    bench = get_benchmark("lvbench")
    questions = bench.load(WRITERS["lvbench"](tmp_path / "LVBench"), {})
    replies = {q.qid: f"{q.answer} fits the video best, so the option is " for q in questions}
    replies[questions[0].qid] = f"\n The answer is {questions[0].answer}.  \n"
    spec = bench.protocol("vamba")
    model = ReplayModel([{"video": q.video, "prompt": spec.prompt(q), "response": replies[q.qid]} for q in questions])
    summary = evaluate(bench, questions, model, tmp_path / "run", progress=False)
    records = read_jsonl(tmp_path / "run" / "responses.jsonl")
    assert [r["response"] for r in records] == [replies[q.qid] for q in questions]
    assert [r["correct"] for r in records] == [True, False, False]
    assert summary["score"] == pytest.approx(100 / 3)


def test_hourvideo_label_is_compared_verbatim(tmp_path: Path) -> None:
    """eval/eval_hourvideo.py main: ``predicted_answer_label`` is the upper-cased first character (or "Z") and
    its first character must equal ``correct_answer_label`` as released, or that label lower-cased. A label
    that is not exactly one capital letter A-E ("b", " B", "B.") can never be scored right there: here loading
    it is an error naming the question."""
    root = WRITERS["hourvideo"](tmp_path / "HourVideo")
    bench = get_benchmark("hourvideo")
    spec = bench.protocol("vamba")
    q = bench.load(root, {})[0]  # label "B"
    for reply, official in [("b", True), ("B. The car.", True), ("The answer is (b)", True), ("A", False),
                            ("", False), ("Because of the car", True), ("Since the car is there", False)]:
        assert make_record(q, spec.prompt(q), reply, spec.extractor, q.choices)["correct"] is official, reply
    annotation = root / "dev_v1.0_annotations.json"
    data = json.loads(annotation.read_text())
    for label in ("b", " B", "B.", "F"):
        data["uid-aaa"]["benchmark_dataset"][0]["correct_answer_label"] = label
        annotation.write_text(json.dumps(data))
        with pytest.raises(BenchmarkDataError, match=r"uid-aaa\]\.benchmark_dataset\[0\].*not one of the 5"):
            bench.load(root, {})


def test_hourvideo_samples_as_the_released_script() -> None:
    """eval/eval_hourvideo.py main defaults: do_sample=True, top_k=None, top_p=0.9, temperature=1, 512 tokens;
    the other scripts decode greedily (do_sample=False) with top_k=None."""
    hv = get_benchmark("hourvideo").protocol("vamba").generation
    assert (hv.do_sample, hv.top_k, hv.top_p, hv.temperature, hv.max_new_tokens) == (True, None, 0.9, 1.0, 512)
    for name in NAMES:
        if name != "hourvideo":
            gen = get_benchmark(name).protocol("vamba").generation
            assert (gen.do_sample, gen.top_k, gen.max_new_tokens) == (False, None, 512), name


def test_hourvideo_compares_the_first_character_of_the_upper_cased_label(tmp_path: Path) -> None:
    """eval/eval_hourvideo.py main: ``predicted_answer_label = response[0].upper()`` and
    ``correct = predicted_answer_label[0] == correct_answer_label or ...``. "ẚ" (U+1E9A) is alphabetic and
    upper-cases to the two characters "Aʾ", so the reply "ẚ" is right for gold A there. The other scripts
    (eval_lvbench.py main, ...) compare the lower-cased character itself: "ẚ" != "A" and != "a", wrong."""
    import dataclasses

    assert "ẚ".isalpha() and "ẚ".upper() == "Aʾ"  # the Unicode fact the case rests on
    bench = get_benchmark("hourvideo")
    spec = bench.protocol("vamba")
    q = dataclasses.replace(bench.load(WRITERS["hourvideo"](tmp_path / "HourVideo"), {})[0], answer="A")
    for reply, official in [("ẚ", True), ("The answer is ẚ.", True), ("ẚ", True), ("B", False), ("", False)]:
        record = make_record(q, spec.prompt(q), reply, spec.extractor, q.choices)
        assert record["correct"] is official, reply
    assert make_record(q, spec.prompt(q), "", spec.extractor, q.choices)["pred"] == "Z"  # the script's fallback
    other = get_benchmark("lvbench").protocol("vamba")
    assert make_record(q, "", "ẚ", other.extractor, q.choices)["correct"] is False
