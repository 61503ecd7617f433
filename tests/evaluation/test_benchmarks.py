"""Each benchmark on a mini set in its official format: loader, prompts of both protocols, extraction
and metrics against values computed by hand (see conftest.py for the data)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vamba.evaluation.benchmarks import NAMES, BenchmarkDataError, get_benchmark
from vamba.evaluation.benchmarks.base import Question
from vamba.evaluation.scoring import make_record

from .minibench import HV_BLOCK, LV_Q1, WRITERS

SELECT = "Select the best answer to the following multiple-choice question based on the video."
ABCD = "Respond with only the letter (A, B, C, or D) of the correct option."
ABCDE = "Respond with only the letter (A, B, C, D, or E) of the correct option."


def load(name: str, root: Path, **options) -> tuple[list[Question], dict[str, Question]]:
    questions = get_benchmark(name).load(WRITERS[name](root), options)
    return questions, {q.qid: q for q in questions}


def score(name: str, questions: list[Question], replies: dict[str, str], protocol: str = "vamba") -> tuple[list, dict]:
    bench = get_benchmark(name)
    spec = bench.protocol(protocol)
    records = [make_record(q, spec.prompt(q), replies[q.qid], spec.extractor, spec.extractor_choices or q.choices)
               for q in questions]
    return records, bench.metrics(records, spec.drop_empty_responses)


def test_every_benchmark_is_registered_and_unknown_names_fail() -> None:
    assert [get_benchmark(n).name for n in NAMES] == list(NAMES)
    with pytest.raises(ValueError, match="unknown benchmark 'egoschema'"):
        get_benchmark("egoschema")
    with pytest.raises(ValueError, match="unknown protocol 'lmms_eval'"):
        get_benchmark("hourvideo").protocol("lmms_eval")


def test_lvbench(tmp_path: Path) -> None:
    questions, by_id = load("lvbench", tmp_path)
    assert list(by_id) == ["1", "2", "3"]
    assert [q.answer for q in questions] == ["C", "A", "B"]
    assert by_id["2"].meta["question_type"] == ["reasoning", "temporal grounding"]
    assert by_id["3"].video == str(tmp_path / "videos" / "vidB.mp4")
    bench = get_benchmark("lvbench")
    assert bench.protocol("vamba").prompt(by_id["1"]) == f"{SELECT}\n{ABCD}\n{LV_Q1}"
    assert bench.protocol("lmms_eval").prompt(by_id["1"]) == LV_Q1 + "\nAnswer the question with the option letter"
    frames = bench.protocol("vamba").frames
    assert (frames.num_frames, frames.shortest_edge, frames.longest_edge) == (1024, 256, 560)

    replies = {"1": "The answer is (C).", "2": "Option A", "3": "b"}
    records, m = score("lvbench", questions, replies)
    assert [r["pred"] for r in records] == ["C", "O", "B"]  # "Option A" parses as O (documented quirk)
    assert m["overall"] == pytest.approx(200 / 3)
    types = m["by_question_type"]
    assert (types["entity recognition"]["correct"], types["entity recognition"]["total"]) == (2, 2)
    assert types["reasoning"]["acc"] == 0 and types["temporal grounding"]["acc"] == 0
    assert types["summarization"]["acc"] == 100 and types["event understanding"]["total"] == 0

    records, m = score("lvbench", questions, replies, "lmms_eval")
    assert [r["pred"] for r in records] == ["C", "A", ""]  # mcq_extract is case-sensitive
    assert m["by_question_type"]["entity recognition"]["acc"] == 50
    assert m["by_question_type"]["reasoning"]["acc"] == 100


def test_lvbench_vamba_flattened_file(tmp_path: Path) -> None:
    rows = [{"file_path": "vidA.mp4", "question": LV_Q1, "answer": "C", "question_type": ["entity recognition"]},
            {"file_path": "vidA.mp4", "question": LV_Q1, "answer": "D", "question_type": "reasoning", "uid": 9}]
    (tmp_path / "lvbench_processed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = get_benchmark("lvbench").load(tmp_path, {"annotation": "lvbench_processed.jsonl", "video_dir": "v"})
    assert [q.qid for q in questions] == ["vidA.mp4#1", "9"]
    assert questions[1].meta["question_type"] == ["reasoning"]
    assert questions[0].video == str(tmp_path / "v" / "vidA.mp4")


def test_videomme(tmp_path: Path) -> None:
    questions, by_id = load("videomme", tmp_path)
    assert list(by_id) == ["001-1", "001-2", "002-1", "003-1"]
    assert by_id["002-1"].meta == {"duration": "medium", "domain": "Knowledge", "sub_category": "Astronomy",
                                   "task_type": "Counting Problem"}
    bench = get_benchmark("videomme")
    # VAMBA: all four options on one line, no answer cue.
    assert bench.protocol("vamba").prompt(by_id["001-1"]) == \
        f"{SELECT}\n{ABCD}\nHow many planets are shown?\nA. 3. B. 5. C. 8. D. 9."
    assert bench.protocol("lmms_eval").prompt(by_id["001-1"]) == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\nHow many planets are shown?\n"
        "A. 3.\nB. 5.\nC. 8.\nD. 9.\n\nAnswer with the option's letter from the given choices directly.")

    replies = {"001-1": "C", "001-2": "The answer is B", "002-1": "B. 5.", "003-1": "I think D"}
    _, m = score("videomme", questions, replies)
    assert m["overall"] == 50
    assert {k: v["acc"] for k, v in m["by_duration"].items()} == {"short": 50, "medium": 100, "long": 0}
    assert m["by_task_type"]["Counting Problem"]["acc"] == 100


def test_videomme_subtitles(tmp_path: Path) -> None:
    _, by_id = load("videomme", tmp_path, subtitles=True)
    assert by_id["001-1"].meta["subtitles"] == "Look at the sky.\nCount them."
    assert by_id["002-1"].meta["subtitles"] == ""
    bench = get_benchmark("videomme")
    assert bench.protocol("vamba").prompt(by_id["001-1"]).startswith(
        f"This video's subtitles are listed below:\nLook at the sky.\nCount them.\n{SELECT}\n")
    lmms = bench.protocol("lmms_eval").prompt(by_id["002-1"])
    assert lmms.startswith("This video's subtitles are listed below: \nNo subtitles available\nSelect the best")
    assert lmms.endswith("D. 9.\nThe best answer is:")


def test_mlvu(tmp_path: Path) -> None:
    questions, by_id = load("mlvu", tmp_path)
    assert len(questions) == 9
    assert by_id["1_plotQA/0"].answer == "C" and by_id["1_plotQA/1"].answer == "A"
    needle = by_id["2_needle/1"]
    assert (needle.answer, needle.choices) == ("B", ("A", "B"))
    # VAMBA resolves a video under the folder of the first task that lists it.
    assert needle.video == str(tmp_path / "video" / "1_plotQA" / "plotQA_1.mp4")
    assert by_id["2_needle/0"].video == str(tmp_path / "video" / "2_needle" / "needle_1.mp4")
    bench = get_benchmark("mlvu")
    assert bench.protocol("vamba").prompt(by_id["1_plotQA/1"]) == (
        f"{SELECT} {ABCD}\nWhat does the boy pick up?\nA. A ball\nB. A hat\nC. A cup\nD. A book")
    assert bench.protocol("lmms_eval").prompt(by_id["1_plotQA/1"]) == (
        "What does the boy pick up?\n(A) A ball\n(B) A hat\n(C) A cup\n(D) A book\n"
        "Only give the best option.\nBest option: (")

    _, m = score("mlvu", questions, {q.qid: "C" for q in questions})
    assert m["by_task"]["1_plotQA"]["acc"] == 50 and m["by_task"]["2_needle"]["acc"] == 50
    assert m["m_avg"] == pytest.approx(600 / 7)  # mean of 7 task accuracies, not micro
    assert m["overall"] == pytest.approx(700 / 9)
    assert get_benchmark("mlvu").headline == "m_avg"


def test_longvideobench(tmp_path: Path) -> None:
    questions, by_id = load("longvideobench", tmp_path)
    assert [q.answer for q in questions] == ["B", "E", "A"]
    assert by_id["q_002"].choices == ("A", "B", "C", "D", "E")
    bench = get_benchmark("longvideobench")
    # VAMBA keeps "(A, B, C, or D)" for five options.
    assert bench.protocol("vamba").prompt(by_id["q_002"]) == (
        f"{SELECT} {ABCD}\nWhat happens after the door opens?\nA. rain\nB. a dog runs\nC. lights off\nD. music\n"
        "E. nothing")
    assert bench.protocol("lmms_eval").prompt(by_id["q_001"]) == (
        "When the man says 'let's go', what is on the table?\nA. a cup\nB. a laptop\nC. a plant\nD. a book\n"
        "Answer with the option's letter from the given choices directly.\n")

    replies = {"q_001": "B", "q_002": "E. nothing", "q_003": "It is red."}
    _, m = score("longvideobench", questions, replies)
    assert m["overall"] == pytest.approx(200 / 3)
    assert {k: (v["correct"], v["total"]) for k, v in m["by_duration_group"].items()} == \
        {"15": (2, 2), "60": (0, 0), "600": (0, 1), "3600": (0, 0)}
    records, _ = score("longvideobench", questions, replies, "lmms_eval")
    # No capital A-E in "It is red.": lmms-eval draws a random valid letter (seeded per question here).
    again, _ = score("longvideobench", questions, replies, "lmms_eval")
    assert records[2]["pred"] in "ABCD" and records[2]["pred"] == again[2]["pred"]


def test_mvbench(tmp_path: Path) -> None:
    questions, by_id = load("mvbench", tmp_path)
    assert len(questions) == 21
    assert by_id["action_antonym/0"].answer == "B" and by_id["action_sequence/1"].answer == "C"
    bench = get_benchmark("mvbench")
    vamba, lmms = bench.protocol("vamba"), bench.protocol("lmms_eval")
    assert vamba.prompt(by_id["action_antonym/0"]) == (
        "Question: What happens in action_antonym?\nA. Opened the door.\nB. Sat on the bed.\nC. Took the book.\n"
        "Answer with the option's letter from the given choices directly.")
    assert lmms.prompt(by_id["action_antonym/0"]) == (
        "Question:What happens in action_antonym?\nOption:\n(A) Opened the door.\n(B) Sat on the bed.\n"
        "(C) Took the book.\nOnly give the best option.\n")

    bounded = vamba.video_request(by_id["action_sequence/0"])
    assert (bounded.start, bounded.end, bounded.frames.sampling) == (0.0, 0.5, "mvbench_segments")
    assert bounded.path == str(tmp_path / "video" / "star/Charades_v1_480" / "action_sequence_clip.mp4")
    assert vamba.video_request(by_id["action_sequence/1"]) != bounded  # other bounds: encoded separately
    tvqa = vamba.video_request(by_id["episodic_reasoning/0"])
    assert tvqa.is_frame_folder and tvqa.frame_folder_fps == 3 and tvqa.first_frame_index == 1
    assert (tvqa.frames.shortest_edge, tvqa.frames.longest_edge) == (None, None)  # TVQA frames keep native size
    assert vamba.video_request(by_id["action_antonym/0"]).start is None

    replies = {q.qid: "B" for q in questions} | {"object_shuffle/0": ""}
    _, m = score("mvbench", questions, replies)
    assert m["by_task"]["Action Sequence"]["acc"] == 50 and m["by_task"]["Object Shuffle"]["acc"] == 0
    assert m["task_mean"] == pytest.approx((50 + 0 + 18 * 100) / 20)
    assert m["overall"] == pytest.approx(100 * 19 / 21)
    _, m = score("mvbench", questions, replies, "lmms_eval")
    assert m["overall"] == pytest.approx(100 * 19 / 20)  # lmms-eval leaves empty replies out
    assert m["by_task"]["Object Shuffle"]["total"] == 0


def test_nextqa(tmp_path: Path) -> None:
    questions, by_id = load("nextqa", tmp_path)
    assert list(by_id) == ["4010069381/0", "4010069381/1", "2399430475/0"]
    assert [q.answer for q in questions] == ["B", "E", "A"]
    assert questions[0].video == str(tmp_path / "NExTVideo" / "4010069381.mp4")
    bench = get_benchmark("nextqa")
    assert bench.protocol("vamba").prompt(questions[0]) == (
        f"{SELECT} {ABCDE}\nwhy did the boy run\nA. sit down\nB. run away \nC. wave\nD. laugh\nE. cry")
    assert bench.protocol("lmms_eval").prompt(questions[0]) == \
        "why did the boy run\nA. sit down\nB. run away\nC. wave\nD. laugh\nE. cry"
    frames = bench.protocol("vamba").frames
    assert (frames.shortest_edge, frames.longest_edge) == (None, None)  # do_resize=False

    replies = {"4010069381/0": "(B) run away", "4010069381/1": "The boy starts to cry after that moment",
               "2399430475/0": "A"}
    _, m = score("nextqa", questions, replies)
    assert m["overall"] == pytest.approx(200 / 3)
    assert {k: v["acc"] for k, v in m["by_type"].items()} == {"CW": 100, "DC": 100, "TN": 0}
    records, m = score("nextqa", questions, replies, "lmms_eval")
    assert records[1]["pred"] == "E" and m["overall"] == 100  # option text matched in a long reply


def test_hourvideo(tmp_path: Path) -> None:
    questions, by_id = load("hourvideo", tmp_path)
    assert list(by_id) == ["uid-aaa/q1", "uid-aaa/q2", "uid-bbb/q1"]
    assert by_id["uid-aaa/q2"].choices == ("A", "B", "C", "D", "E")
    spec = get_benchmark("hourvideo").protocol("vamba")
    assert spec.prompt(by_id["uid-aaa/q1"]) == f"{SELECT}\nWhere did I leave the keys?\n{HV_BLOCK}\n{ABCDE}"
    assert spec.generation.do_sample and spec.generation.top_p == 0.9 and spec.generation.seed == 0
    assert (spec.frames.num_frames, spec.frames.longest_edge) == (128, 360)
    _, m = score("hourvideo", questions, {"uid-aaa/q1": "B", "uid-aaa/q2": "e", "uid-bbb/q1": "A"})
    assert m["overall"] == pytest.approx(200 / 3)
    assert {k: v["acc"] for k, v in m["by_task_family"].items()} == \
        {"navigation": 0, "perception": 100, "summarization": 100}


def test_missing_annotation_is_a_clear_error(tmp_path: Path) -> None:
    for name in NAMES:
        with pytest.raises(BenchmarkDataError, match="not found"):
            get_benchmark(name).load(tmp_path / "nothing-here", {})


def test_malformed_records_name_file_and_field(tmp_path: Path) -> None:
    root = WRITERS["longvideobench"](tmp_path / "lvb")
    rows = json.loads((root / "lvb_val.json").read_text())
    del rows[1]["correct_choice"]
    (root / "lvb_val.json").write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match=r"lvb_val.json \[1\]: missing field\(s\) \['correct_choice'\]"):
        get_benchmark("longvideobench").load(root, {})

    root = WRITERS["lvbench"](tmp_path / "lv", with_videos=False)
    with open(root / "video_info.meta.jsonl", "a") as f:
        f.write('{"key": "broken", "qa": [\n')
    with pytest.raises(BenchmarkDataError, match=r"video_info.meta.jsonl:3: not valid JSON"):
        get_benchmark("lvbench").load(root, {})

    root = WRITERS["mlvu"](tmp_path / "mlvu")
    rows = json.loads((root / "json" / "3_ego.json").read_text())
    rows[0]["answer"] = "A spoon"
    (root / "json" / "3_ego.json").write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match="'A spoon' is not one of the candidates"):
        get_benchmark("mlvu").load(root, {})

    root = WRITERS["nextqa"](tmp_path / "nq")
    (root / "MC" / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(BenchmarkDataError, match="cannot read parquet"):
        get_benchmark("nextqa").load(root, {})


# The file each benchmark reads its questions from (per-task files: one of them), emptied in its own format.
EMPTY = {"lvbench": ("video_info.meta.jsonl", ""), "videomme": ("videomme/test-00000-of-00001.parquet", None),
         "mlvu": ("json/4_count.json", "[]"), "longvideobench": ("lvb_val.json", "[]"),
         "mvbench": ("json/object_shuffle.json", "[]"), "nextqa": ("MC/test-00000-of-00001.parquet", None),
         "hourvideo": ("dev_v1.0_annotations.json", '{"uid-aaa": {"benchmark_dataset": []}}')}


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_annotation_file_is_an_error_naming_it(name: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    import pyarrow.parquet as pq

    from vamba.cli import main as vamba_main

    root = WRITERS[name](tmp_path / name)
    rel, content = EMPTY[name]
    if content is None:  # a parquet file with the official columns and no rows
        table = pq.read_table(root / rel)
        pq.write_table(table.slice(0, 0), root / rel)
    else:
        (root / rel).write_text(content)
    with pytest.raises(BenchmarkDataError, match=rf"{root / rel}: no questions \(empty annotation file\)"):
        get_benchmark(name).load(root, {})
    # Through the CLI: exit status 2 and the file named, not "overall = 0.00" on 0 of 0 questions.
    assert vamba_main(["eval", f"benchmark={name}", f"data={root}", f"replay={tmp_path / 'none.jsonl'}"]) == 2
    assert f"{root / rel}: no questions" in capsys.readouterr().err
