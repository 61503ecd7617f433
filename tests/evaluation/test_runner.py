"""The runner end to end with recorded replies: one encoding per video, loss-free resume after a crash,
data-parallel shards that merge to the single-process result, skips, settings checks and re-scoring."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vamba.evaluation.benchmarks import get_benchmark
from vamba.evaluation.interface import GenerationSettings
from vamba.evaluation.replay import ReplayModel
from vamba.evaluation.runner import RunMismatchError, evaluate, question_seed, rescore_file
from vamba.utils.io import read_jsonl

from .minibench import WRITERS, Faulty

LV_REPLIES = {"1": "The answer is (C).", "2": "Option A", "3": "b"}


def recording(name: str, questions, replies: dict[str, str], protocol: str = "vamba") -> list[dict]:
    """Replies as a previous run recorded them: (video, prompt) -> response."""
    spec = get_benchmark(name).protocol(protocol)
    return [{"video": q.video, "prompt": spec.prompt(q), "response": replies[q.qid]} for q in questions]


@pytest.fixture
def lvbench(tmp_path: Path):
    bench = get_benchmark("lvbench")
    questions = bench.load(WRITERS["lvbench"](tmp_path / "LVBench"), {})
    return bench, questions, recording("lvbench", questions, LV_REPLIES)


def test_end_to_end_outputs(lvbench, tmp_path: Path) -> None:
    bench, questions, rec = lvbench
    model = ReplayModel(rec)
    summary = evaluate(bench, questions, model, tmp_path / "run", progress=False)
    assert model.videos_encoded == 2  # three questions, two videos: each encoded once
    records = read_jsonl(tmp_path / "run" / "responses.jsonl")
    assert [r["qid"] for r in records] == ["1", "2", "3"]
    first = records[0]
    assert first["prompt"].endswith(questions[0].question) and first["response"] == "The answer is (C)."
    assert (first["pred"], first["gold"], first["correct"]) == ("C", "C", True)
    assert summary["score"] == pytest.approx(200 / 3) and summary["complete"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["score"] == summary["score"]
    report = (tmp_path / "run" / "report.md").read_text()
    # three home-made questions: the published numbers are shown, labelled as not comparable
    assert "| **this run** (not comparable, see above) | | **66.7** |" in report
    assert "| VAMBA (paper) | 10B | 42.1 |" in report and "not comparable with this run because" in report
    assert "| entity recognition | 100.0 | 2 / 2 |" in report


def test_resume_after_crash_neither_duplicates_nor_drops(tmp_path: Path) -> None:
    bench = get_benchmark("mvbench")
    questions = bench.load(WRITERS["mvbench"](tmp_path / "MVBench"), {})
    rec = recording("mvbench", questions, {q.qid: "B" for q in questions})
    run = tmp_path / "run"
    crashing = Faulty(rec, crash_after=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(bench, questions, crashing, run, progress=False)
    shard = run / "shards" / "rank0.jsonl"
    assert len(read_jsonl(shard)) == 7 and not (run / "summary.json").exists()
    with open(shard, "a") as f:  # a write torn by the crash
        f.write('{"qid": "moving_count/0", "vid')

    resumed = Faulty(rec)
    summary = evaluate(bench, questions, resumed, run, progress=False)
    assert len(resumed.answered) == len(questions) - 7  # only the missing ones were asked
    qids = [r["qid"] for r in read_jsonl(run / "responses.jsonl")]
    assert qids == [q.qid for q in questions]  # all, once, in benchmark order
    assert summary["complete"] and summary["score"] == pytest.approx((50 + 19 * 100) / 20)

    again = Faulty(rec)  # a finished run restarted: nothing to do, same summary
    assert evaluate(bench, questions, again, run, progress=False, reading={"decode_workers": 3})["score"] == \
        summary["score"]
    assert again.answered == [] and again.videos_encoded == 0
    # the status is the last run's; the history keeps the timing of the run that encoded the videos (the crashed
    # run wrote none), and each run's reading settings
    runs = read_jsonl(run / "shards" / "runs-rank0.jsonl")
    assert [(r["videos_encoded"], r["reading"]) for r in runs] == [(resumed.videos_encoded, {}),
                                                                   (0, {"decode_workers": 3})]
    assert len(runs[0]["timing"]["videos"]) == resumed.videos_encoded > 0 and runs[1]["finished"]
    assert json.loads((run / "shards" / "rank0.status.json").read_text())["videos_encoded"] == 0



@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered"),
                                   OSError("moov atom not found")])
def test_only_decode_errors_skip_a_video(lvbench, tmp_path: Path, error: Exception) -> None:
    """Out of memory, a CUDA fault, any other error of the model while encoding stops the run with that error:
    only a video that cannot be decoded (``VideoDecodeError``) costs just its questions."""
    bench, questions, rec = lvbench
    with pytest.raises(type(error), match=str(error)[:20]):
        evaluate(bench, questions, Faulty(rec, encode_error=error), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_two_ranks_merge_to_the_single_rank_result(tmp_path: Path) -> None:
    bench = get_benchmark("mlvu")  # plotQA_1.mp4 carries three questions from two tasks
    questions = bench.load(WRITERS["mlvu"](tmp_path / "MLVU"), {})
    rec = recording("mlvu", questions, {q.qid: "C" for q in questions} | {"4_count/0": "A"})
    single = evaluate(bench, questions, ReplayModel(rec), tmp_path / "single", progress=False)
    assert evaluate(bench, questions, ReplayModel(rec), tmp_path / "dp", rank=1, world_size=2, progress=False) is None
    merged = evaluate(bench, questions, ReplayModel(rec), tmp_path / "dp", rank=0, world_size=2, progress=False)
    assert merged["metrics"] == single["metrics"] and merged["score"] == pytest.approx(500 / 7)
    assert read_jsonl(tmp_path / "dp" / "responses.jsonl") == read_jsonl(tmp_path / "single" / "responses.jsonl")
    shards = [[r["video"] for r in read_jsonl(tmp_path / "dp" / "shards" / f"rank{k}.jsonl")] for k in (0, 1)]
    assert len(shards[0]) + len(shards[1]) == len(questions)
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])  # no video split across ranks


def test_missing_and_unreadable_videos_are_counted_and_retried(lvbench, tmp_path: Path) -> None:
    bench, questions, rec = lvbench
    video_b = Path(questions[2].video)
    video_b.rename(video_b.with_suffix(".bak"))
    summary = evaluate(bench, questions, ReplayModel(rec), tmp_path / "run", progress=False)
    assert not summary["complete"] and summary["answered"] == 2
    assert summary["skipped"]["questions"] == 1 and summary["skipped"]["details"][0]["reason"] == "missing"
    assert "Incomplete run" in (tmp_path / "run" / "report.md").read_text()

    video_b.with_suffix(".bak").rename(video_b)
    summary = evaluate(bench, questions, Faulty(rec, unreadable=(str(video_b),)), tmp_path / "run", progress=False)
    assert summary["skipped"]["details"][0]["reason"] == "VideoDecodeError: moov atom not found"
    summary = evaluate(bench, questions, ReplayModel(rec), tmp_path / "run", progress=False)
    assert summary["complete"] and summary["skipped"]["questions"] == 0


def test_restart_with_other_settings_is_refused(lvbench, tmp_path: Path) -> None:
    bench, questions, rec = lvbench
    evaluate(bench, questions, ReplayModel(rec), tmp_path / "run", progress=False)
    lmms = recording("lvbench", questions, LV_REPLIES, "lmms_eval")
    with pytest.raises(RunMismatchError, match="protocol: was 'vamba', now 'lmms_eval'"):
        evaluate(bench, questions, ReplayModel(lmms), tmp_path / "run", protocol="lmms_eval", progress=False)


def test_duplicate_question_ids_are_refused(lvbench, tmp_path: Path) -> None:
    bench, questions, rec = lvbench
    with pytest.raises(ValueError, match=r"repeated: \['1'\]"):
        evaluate(bench, [*questions, questions[0]], ReplayModel(rec), tmp_path / "run", progress=False)


def test_sampled_decoding_gets_a_fixed_seed_per_question(tmp_path: Path) -> None:
    bench = get_benchmark("hourvideo")
    questions = bench.load(WRITERS["hourvideo"](tmp_path / "HV"), {})
    rec = recording("hourvideo", questions, {"uid-aaa/q1": "B", "uid-aaa/q2": "E", "uid-bbb/q1": "A"})
    model = Faulty(rec)
    evaluate(bench, questions, model, tmp_path / "run", progress=False)
    seeds = [g.seed for g in model.answered]
    assert seeds == [question_seed(0, q.qid) for q in questions] and len(set(seeds)) == 3
    assert all(g.do_sample and g.temperature == 1.0 and g.top_p == 0.9 for g in model.answered)


def test_rescore_compares_extraction_rules(tmp_path: Path) -> None:
    bench = get_benchmark("videomme")
    questions = bench.load(WRITERS["videomme"](tmp_path / "VMME"), {})
    replies = {"001-1": "C", "001-2": "The answer is B", "002-1": "B. 5.", "003-1": "I think D"}
    summary = evaluate(bench, questions, ReplayModel(recording("videomme", questions, replies)), tmp_path / "run",
                       progress=False)
    assert summary["score"] == 50
    rescored = rescore_file(bench, tmp_path / "run" / "responses.jsonl", tmp_path / "regex", extractor="videomme_regex")
    assert rescored["score"] == 75 and rescored["extractor"] == "videomme_regex"
    assert [r["pred"] for r in read_jsonl(tmp_path / "regex" / "responses.jsonl")] == ["C", "B", "B", "D"]
    with pytest.raises(FileNotFoundError):
        rescore_file(bench, tmp_path / "nope.jsonl", tmp_path / "x")


def test_replay_names_an_unrecorded_prompt(lvbench) -> None:
    _, questions, rec = lvbench
    with pytest.raises(KeyError, match="no recorded reply for video"):
        ReplayModel(rec).answer(questions[0].video, "a prompt nobody recorded", GenerationSettings())


class Prefetching(Faulty):
    """A model that can decode ahead (``VideoQAModel.prefetch``): remembers every list it was given and the videos it
    was then asked to encode."""

    def __init__(self, records, **faults) -> None:
        super().__init__(records, **faults)
        self.plans: list[list] = []
        self.encoded: list = []

    def prefetch(self, requests) -> None:
        self.plans.append(list(requests))

    def encode_video(self, video):
        self.encoded.append(video)
        return super().encode_video(video)


def test_prefetch_lists_the_videos_to_come_and_is_released_however_the_run_ends(tmp_path: Path) -> None:
    bench = get_benchmark("mvbench")
    spec = bench.protocol("vamba")
    questions = bench.load(WRITERS["mvbench"](tmp_path / "MVBench"), {})
    rec = recording("mvbench", questions, {q.qid: "B" for q in questions})
    run = tmp_path / "run"
    crashing = Prefetching(rec, crash_after=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(bench, questions, crashing, run, progress=False)
    requests = list(dict.fromkeys(spec.video_request(q) for q in questions))
    assert crashing.plans == [requests, []]  # every video, in the runner's order; then released by the crash

    done = {r["qid"] for r in read_jsonl(run / "shards" / "rank0.jsonl")}
    left = list(dict.fromkeys(spec.video_request(q) for q in questions if q.qid not in done))
    Path(left[-1].path).unlink()  # a video gone since: the harness skips it without asking the model
    left = [r for r in left if r.path != left[-1].path]
    resumed = Prefetching(rec)
    summary = evaluate(bench, questions, resumed, run, progress=False)
    assert resumed.plans == [left, []] and resumed.encoded == left
    status = json.loads((run / "shards" / "rank0.status.json").read_text())
    rows = status["timing"]["videos"]
    assert [r["video"] for r in rows] == [r.path for r in left] and status["videos_encoded"] == len(rows)
    assert sum(r["questions"] for r in rows) == len(resumed.answered)
    assert all(r["wait_s"] == 0 and r["encode_s"] >= 0 and r["answer_s"] >= 0 for r in rows)  # no host timing given
    timing = summary["timing"]
    assert timing["videos_encoded"] == len(rows) and timing["wall_s"] == status["seconds"] > 0
    assert timing["answer_s"] == pytest.approx(sum(r["answer_s"] for r in rows), abs=0.01)
