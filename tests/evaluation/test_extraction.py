"""Table-driven answer extraction, quirks included (docs/evaluation.md, "Protocols")."""
from __future__ import annotations

import random

import pytest

from vamba.evaluation.extraction import EXTRACTORS, extract

ABCD, ABCDE = ("A", "B", "C", "D"), ("A", "B", "C", "D", "E")
NEXTQA_OPTIONS = ("sit down", "run away", "wave", "laugh", "cry")


@pytest.mark.parametrize("reply, expected", [
    ("B", "B"), ("(b)", "B"), ("B. Tom", "B"), ("Answer: C", "C"), ("The answer is (D).", "D"),
    ("Option C", "O"),  # quirk: first letter of "Option"
    ("I think C", "I"),  # quirk
    ("", ""), ("123", "1"),  # no letter: first character, never equal to a letter
    ("the answer is", ""),  # nothing after the last "the answer is"
    ("I'd say the option is B", "B"),
    ("My choice: the option is", "M"),  # tested without, split with a trailing space: whole text kept
    ("Answer: B. The answer is C", "C"),  # "the answer is" wins over "answer:"
    ("answer: a then answer: d", "D"),  # the last occurrence
    ("选 B", "选"),  # any alphabetic character counts
])
def test_vamba_rule(reply: str, expected: str) -> None:
    assert extract("vamba", reply, ABCD) == expected


@pytest.mark.parametrize("reply, expected", [
    ("The best answer is: B", "B"), ("a cat", ""), ("A cat", "A"), ("The answer is C", "C"),
    ("I think it is (D)", "D"), ("Because Bob", "B"),  # first capital A-D anywhere
    ("The answer: A", "A"), ("E", ""),
])
def test_videomme_regex(reply: str, expected: str) -> None:
    assert extract("videomme_regex", reply, ABCD) == expected


@pytest.mark.parametrize("reply, choices, expected", [
    ("The correct answer is (B).", ABCD, "B"), ("B", ABCD, "B"),
    ("I choose C because it is D", ABCD, "D"),  # a letter ending the reply outranks the phrase
    ("Answer: A", ABCD, "A"), ("", ABCD, ""), ("none", ABCD, ""),
    ("The answer is B. Apples are red", ABCD, "A"),  # quirk: any later letter after the phrase counts
    ("A cat", ABCD, "A"), ("E", ABCD, ""), ("E", ABCDE, "E"),
])
def test_mcq_extract(reply: str, choices: tuple[str, ...], expected: str) -> None:
    assert extract("mcq_extract", reply, choices) == expected


@pytest.mark.parametrize("reply, expected", [
    ("The best answer is E", "E"), ("Best option: (C)", "C"), ("Because E", "B"),  # first capital A-E anywhere
])
def test_longvideobench_rule(reply: str, expected: str) -> None:
    assert extract("longvideobench", reply, ABCDE) == expected


def test_random_fallbacks_are_seeded_per_question() -> None:
    for name, options in (("longvideobench", ()), ("mmmu", NEXTQA_OPTIONS)):
        got = extract(name, "no idea", ABCDE, options, seed="0:q7")
        assert got == random.Random("0:q7").choice(list(ABCDE))
        assert got == extract(name, "no idea", ABCDE, options, seed="0:q7")
    draws = {extract("longvideobench", "no idea", ABCDE, seed=f"0:q{i}") for i in range(40)}
    assert draws == set(ABCDE)  # different questions draw differently


@pytest.mark.parametrize("reply, expected", [
    ("B. Sat on the bed.", "B"), ("(C) Took the book", "C"), ("it is a cat", "A"),  # quirk: article "a"
    ("", ""), ("None of them", "none of them"), ("b", "B"),
])
def test_mvbench_rule(reply: str, expected: str) -> None:
    assert extract("mvbench", reply, ABCDE) == expected


@pytest.mark.parametrize("reply, expected", [
    ("(B) run away", "B"), ("A", "A"), ("The boy starts to cry after that moment", "E"), ("C. wave", "C"),
    ("I think B or C", "C"),  # several letters: the last one
])
def test_mmmu_rule(reply: str, expected: str) -> None:
    assert extract("mmmu", reply, ABCDE, NEXTQA_OPTIONS) == expected


def test_unknown_extractor() -> None:
    with pytest.raises(ValueError, match="unknown extractor 'regex'"):
        extract("regex", "A", ABCD)
    assert set(EXTRACTORS) == {"vamba", "vamba_hourvideo", "videomme_regex", "mcq_extract", "longvideobench",
                               "mvbench", "mmmu"}
