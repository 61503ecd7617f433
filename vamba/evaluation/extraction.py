"""Answer extraction: raw model reply -> predicted option letter, one function per published rule.

Every rule is reproduced with its quirks, because published numbers depend on them
(docs/evaluation.md, "Protocols"). A question is correct iff the extracted string equals the gold letter.

| name | used by | on failure |
|---|---|---|
| ``vamba`` | every released VAMBA eval script but HourVideo | "" (wrong; stays in the denominator) |
| ``vamba_hourvideo`` | eval_hourvideo.py (compares the upper-cased label's first character) | "Z" |
| ``videomme_regex`` | official Video-MME; lmms-eval videomme/mlvu/lvbench until 2026-04 | "" |
| ``mcq_extract`` | lmms-eval videomme/mlvu/lvbench now (``extract_mcq_answer``) | "" |
| ``longvideobench`` | lmms-eval longvideobench | random valid letter |
| ``mvbench`` | lmms-eval mvbench (``mcq_acc``) | the normalised reply (never equals a letter) |
| ``mmmu`` | lmms-eval nextqa (MMMU-style parser) | random valid letter |

Random fallbacks draw from a ``random.Random`` the caller seeds per question, so a score is
reproducible and independent of evaluation order (lmms-eval itself draws from the global RNG).
"""
from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence

Extractor = Callable[[str, Sequence[str], Sequence[str], random.Random], str]


def extract_vamba(response: str, choices: Sequence[str] = (), options: Sequence[str] = (),
                  rng: random.Random | None = None) -> str:
    """VAMBA's rule: lower-case; keep the text after the last "the answer is" (else after the last
    "answer:", else after the last "the option is "); the first alphabetic character is the answer.

    Returned upper-cased so it compares with the gold letter; the official comparison of the lower-cased
    character with the lower-cased gold is the same test. Quirks kept: "Option C" -> "O", "I think C"
    -> "I"; a reply with no letter returns its first character (never a letter, so wrong).
    """
    return _vamba_character(response).upper()


def extract_vamba_hourvideo(response: str, choices: Sequence[str] = (), options: Sequence[str] = (),
                            rng: random.Random | None = None) -> str:
    """eval_hourvideo.py's variant of VAMBA's rule: its ``predicted_answer_label`` is the character upper-cased
    ("Z" for a reply with no character) and only ``predicted_answer_label[0]`` is compared with the gold letter.

    That differs from ``extract_vamba`` where upper-casing gives two characters: "ẚ" (U+1E9A) becomes "Aʾ",
    whose first character "A" is right for gold A in HourVideo (and wrong in every other released script, which
    compare the lower-cased character itself). The script's second test, ``label[0] == gold.lower()``, can never
    hold for a gold A-E: the first character of an upper-cased string is never a lower-case ASCII letter.
    """
    return (_vamba_character(response).upper() or "Z")[0]


def _vamba_character(response: str) -> str:
    """The character VAMBA's rule reads, lower-cased (or "" for a reply with nothing left)."""
    text = response.lower()
    if "the answer is" in text:
        text = text.split("the answer is")[-1].strip()
    elif "answer:" in text:
        text = text.split("answer:")[-1].strip()
    elif "the option is" in text:
        # NOTE: tested without, split with a trailing space, as in the official scripts: a reply
        # ending in "the option is" keeps its whole text.
        text = text.split("the option is ")[-1].strip()
    letter = next((c for c in text if c.isalpha()), None)
    if letter is not None:
        return letter
    return text[:1]


# The official Video-MME list; two entries are concatenations (a missing comma upstream), kept as is.
_VIDEOMME_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                      "The best option isThe correct option is", "Best answer:Best option:")


def extract_videomme_regex(response: str, choices: Sequence[str] = (), options: Sequence[str] = (),
                           rng: random.Random | None = None) -> str:
    """Official Video-MME rule: drop answer prefixes; more than 10 words with no capital A-D -> "";
    else the first capital A-D anywhere (case-sensitive: "a cat" has none, "A cat" is A)."""
    text = response.strip()
    for prefix in _VIDEOMME_PREFIXES:
        text = text.replace(prefix, "")
    # NOTE: upstream first returns "" for replies over 10 words without a capital A-D; the search
    # below returns "" for those too, so that test is folded into it.
    match = re.search("[ABCD]", text)
    return "" if match is None else match[0]


_LVB_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                 "The best option is", "The correct option is", "Best answer:", "Best option:")


def extract_longvideobench(response: str, choices: Sequence[str], options: Sequence[str] = (),
                           rng: random.Random | None = None) -> str:
    """lmms-eval LongVideoBench rule: the Video-MME prefixes (properly separated), the first capital
    A-E anywhere; when none is found (or >10 words without one) a random valid letter."""
    text = response.strip()
    for prefix in _LVB_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search("[ABCDE]", text)
    if match is None:
        return _random_choice(choices, rng)
    return match[0]


_MCQ_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is",
                "the best answer is", "best answer is", "the correct option is", "correct option is",
                "the best option is", "best option is", "the choice is", "choice is", "the correct choice is",
                "correct choice is", "i choose", "i select", "i pick", "my answer is", "my choice is",
                "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは")
# Format -> priority: a letter standing alone at the start wins over one at the end, and so on.
_MCQ_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "paren": 6, "period": 5, "colon": 4,
                 "right_paren": 3, "space": 2, "anywhere": 0}


def extract_mcq(response: str, choices: Sequence[str] = ("A", "B", "C", "D"), options: Sequence[str] = (),
                rng: random.Random | None = None) -> str:
    """lmms-eval's ``extract_mcq_answer`` rule: collect candidate letters in several formats, return
    the one of highest format priority, the last-placed among equals; "" if no letter occurs.

    Quirk kept: after an answer phrase, *every* choice letter occurring later counts as a phrase
    candidate ("The answer is B. Apples" yields A at a later position, so A wins).
    """
    if not response.strip():
        return ""
    letters = list(choices) or list("ABCDEFGH")
    text = response.strip()
    for char in ",.!?;:'\"":
        text = text.strip(char)
    text = f" {text} "
    found: list[tuple[int, int, str]] = []  # (priority, position, letter)
    for fmt, pattern in (("paren", "({})"), ("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"),
                         ("space", "{} ")):
        for letter in letters:
            token = pattern.format(letter)
            if token in text:
                found.append((_MCQ_PRIORITY[fmt], text.rfind(token), letter))
    lowered = text.lower()
    for phrase in _MCQ_PHRASES:
        at = lowered.find(phrase)
        if at >= 0:
            for letter in letters:
                pos = text.find(letter, at + len(phrase))
                if pos >= 0:
                    found.append((_MCQ_PRIORITY["phrase"], pos, letter))
    core = text.strip()
    for letter in letters:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_MCQ_PRIORITY["start"], 0, letter))
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_MCQ_PRIORITY["end"], len(text) - 1, letter))
    if not found:
        found = [(0, text.rfind(letter), letter) for letter in letters if letter in text]
    if not found:
        return ""
    # Stable sort on (priority, position) descending: ties keep insertion order, as upstream.
    found.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return found[0][2]


_MV_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
             "?", "!"]
# Upstream writes a look-behind as "(?!<=\d)" (a look-ahead for the text "<=" + digit) and passes
# re.UNICODE where ``sub`` expects ``count``: at most 32 periods not followed by a digit are removed.
_MV_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_MV_COMMA = re.compile(r"(\d)(\,)(\d)")
_MV_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)


def _mvbench_normalise(answer: str) -> str:
    match = _MV_OPTION.match(answer.strip())
    if match:
        return match.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    original = text
    for p in _MV_PUNCT:
        if p + " " in original or " " + p in original or _MV_COMMA.search(original) is not None:
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _MV_PERIOD.sub("", text, 32)
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = re.search(r"\b([A-E])\b", text, re.IGNORECASE)
    return letter.group(1).upper() if letter else text


def extract_mvbench(response: str, choices: Sequence[str] = (), options: Sequence[str] = (),
                    rng: random.Random | None = None) -> str:
    """lmms-eval MVBench ``mcq_acc`` normalisation: "X. ..." at the start gives X; otherwise strip
    punctuation, lower-case, and take the first standalone a-e (so "it is a cat" -> "A")."""
    return _mvbench_normalise(response)


def extract_mmmu(response: str, choices: Sequence[str], options: Sequence[str],
                 rng: random.Random | None = None) -> str:
    """lmms-eval's MMMU-style parser (NExT-QA): "(X)", then "X ", then "X."; failing those, for replies
    over 5 words, an option text contained in the reply; else a random letter. Several candidates:
    the one whose marker occurs last (the first candidate on ties, e.g. when none has a " X " marker)."""
    options = [option.strip() for option in options]
    text = response
    for char in ",.!?;:'":
        text = text.strip(char)
    text = f" {text} "
    by_letter = True
    bracketed = False
    found = [c for c in choices if f"({c})" in text]
    if found:
        bracketed = True
    else:
        found = [c for c in choices if f"{c} " in text] or [c for c in choices if f"{c}." in text]
    if not found and len(text.split()) > 5:
        found = [c for c, option in zip(choices, options) if option.lower() in text.lower()]
        by_letter = not found
    if not found:
        return _random_choice(choices, rng)
    if len(found) == 1:
        return found[0]
    if not by_letter:
        positions = [text.lower().rfind(options[list(choices).index(c)].lower()) for c in found]
    elif bracketed:
        positions = [text.rfind(f"({c})") for c in found]
    else:
        positions = [text.rfind(f" {c} ") for c in found]
    return found[positions.index(max(positions))]


def _random_choice(choices: Sequence[str], rng: random.Random | None) -> str:
    if not choices:
        return ""
    return (rng or random.Random(0)).choice(list(choices))


EXTRACTORS: dict[str, Extractor] = {
    "vamba": extract_vamba,
    "vamba_hourvideo": extract_vamba_hourvideo,
    "videomme_regex": extract_videomme_regex,
    "mcq_extract": extract_mcq,
    "longvideobench": extract_longvideobench,
    "mvbench": extract_mvbench,
    "mmmu": extract_mmmu,
}


def extract(name: str, response: str, choices: Sequence[str], options: Sequence[str] = (),
            seed: str | int | None = None) -> str:
    """Run extractor ``name``; ``seed`` (e.g. "0:<question id>") seeds the random fallback."""
    try:
        fn = EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose one of {sorted(EXTRACTORS)}") from None
    return fn(response, choices, options, random.Random(seed))


def letters(n: int) -> tuple[str, ...]:
    """The first ``n`` option letters: letters(4) == ("A", "B", "C", "D")."""
    return tuple(string.ascii_uppercase[:n])
