"""``answer_batch`` (``model.answer_batch``): a video's questions answered in groups through the model's
``answer_many``. The records are those of one question at a time (recorded replies, and a real tiny VAMBA in float32
on the CPU), a group is written when it finishes, a killed run resumes without losing or repeating a question,
sampling and a changed batch size on restart are refused."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark
from vamba.evaluation.replay import ReplayModel
from vamba.evaluation.runner import RunMismatchError, evaluate
from vamba.utils.io import read_jsonl

from .minibench import WRITERS, Faulty
from .test_runner import recording


class Batching(Faulty):
    """Recorded replies (crashing after ``crash_after`` answers) that remember the size of every ``answer_many``."""

    def __init__(self, records, **faults) -> None:
        super().__init__(records, **faults)
        self.groups: list[int] = []

    def answer_many(self, encoded, prompts, generation):
        self.groups.append(len(prompts))
        return super().answer_many(encoded, prompts, generation)


@pytest.fixture
def mlvu(tmp_path: Path):
    """The mini MLVU: plotQA_1.mp4 carries three questions, every other video one."""
    bench = get_benchmark("mlvu")
    questions = bench.load(WRITERS["mlvu"](tmp_path / "MLVU"), {})
    replies = {q.qid: "ABCD"[i % 4] for i, q in enumerate(questions)}
    return bench, questions, recording("mlvu", questions, replies)


def test_groups_record_what_one_at_a_time_records(mlvu, tmp_path: Path) -> None:
    bench, questions, rec = mlvu
    single = evaluate(bench, questions, ReplayModel(rec), tmp_path / "single", progress=False)
    model = Batching(rec)
    batched = evaluate(bench, questions, model, tmp_path / "batched", progress=False, answer_batch=2)
    assert read_jsonl(tmp_path / "batched" / "responses.jsonl") == read_jsonl(tmp_path / "single" / "responses.jsonl")
    assert batched["score"] == single["score"]
    # each video's questions in groups of 2, the last one smaller: never a group across two videos
    per_video = Counter(bench.protocol("vamba").video_request(q) for q in questions)
    assert sorted(per_video.values()) == [1] * 6 + [3]
    assert sorted(model.groups) == [1] * 7 + [2]
    assert json.loads((tmp_path / "batched" / "run.json").read_text())["answer_batch"] == 2


def test_a_killed_batched_run_resumes_without_loss_or_repeats(mlvu, tmp_path: Path) -> None:
    """The crash comes in the middle of a group: the groups before it are on disk, the group under way is not, and
    the restart answers exactly the questions left, in groups again."""
    bench, questions, rec = mlvu
    run = tmp_path / "run"
    crashing = Batching(rec, crash_after=1)  # the second answer of the first group (plotQA_1.mp4's first two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(bench, questions, crashing, run, progress=False, answer_batch=2)
    assert not (run / "shards" / "rank0.jsonl").exists() or read_jsonl(run / "shards" / "rank0.jsonl") == []

    crashing = Batching(rec, crash_after=3)  # the first group written, then a crash in the next video's group
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(bench, questions, crashing, run, progress=False, answer_batch=2)
    written = [r["qid"] for r in read_jsonl(run / "shards" / "rank0.jsonl")]
    assert len(written) == 3 and crashing.groups[:2] == [2, 1]

    resumed = Batching(rec)
    summary = evaluate(bench, questions, resumed, run, progress=False, answer_batch=2)
    assert len(resumed.answered) == len(questions) - 3 and set(resumed.groups) == {1}  # one question per video left
    assert [r["qid"] for r in read_jsonl(run / "responses.jsonl")] == [q.qid for q in questions]
    assert summary["complete"]


def test_sampling_and_models_without_answer_many_are_refused(mlvu, tmp_path: Path) -> None:
    bench = get_benchmark("hourvideo")  # the released protocol samples
    questions = bench.load(WRITERS["hourvideo"](tmp_path / "HV"), {})
    rec = recording("hourvideo", questions, {q.qid: "A" for q in questions})
    with pytest.raises(ValueError, match=r"answer_batch=2 \(model.answer_batch\) batches greedy decoding only.*"
                                         r"do_sample=true"):
        evaluate(bench, questions, Batching(rec), tmp_path / "hv", progress=False, answer_batch=2)
    assert not (tmp_path / "hv" / "run.json").exists()

    bench, questions, rec = mlvu

    class OneAtATime:
        def encode_video(self, video):
            return video.path

        def answer(self, encoded, prompt, generation):
            return "A"

    with pytest.raises(ValueError, match="OneAtATime has none"):
        evaluate(bench, questions, OneAtATime(), tmp_path / "plain", progress=False, answer_batch=2)
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        evaluate(bench, questions, Batching(rec), tmp_path / "zero", progress=False, answer_batch=0)


def test_a_restart_with_another_batch_size_is_refused(mlvu, tmp_path: Path) -> None:
    bench, questions, rec = mlvu
    run = tmp_path / "run"
    evaluate(bench, questions[:5], ReplayModel(rec), run, progress=False)
    with pytest.raises(RunMismatchError, match="answer_batch: was 1, now 4"):
        evaluate(bench, questions[:5], Batching(rec), run, progress=False, answer_batch=4)
    # a run.json written before answer_batch was recorded stands for one question at a time
    settings = json.loads((run / "run.json").read_text())
    del settings["answer_batch"]
    (run / "run.json").write_text(json.dumps(settings))
    assert evaluate(bench, questions[:5], ReplayModel(rec), run, progress=False)["complete"]
    with pytest.raises(RunMismatchError, match="answer_batch: was 1, now 2"):
        evaluate(bench, questions[:5], Batching(rec), run, progress=False, answer_batch=2)


def test_vamba_eval_answer_batch_gives_the_replies_of_one_at_a_time(eval_checkpoint: Path, tmp_path: Path) -> None:
    """A real tiny VAMBA through ``vamba eval``: ``model.answer_batch=2`` records the replies of ``answer_batch=1``;
    a run that lost its last records resumes in groups and records them again, the same."""
    root = WRITERS["mlvu"](tmp_path / "MLVU")
    base = ["eval", "benchmark=mlvu", f"data={root}", f"model.path={eval_checkpoint}", "model.device=cpu",
            "model.dtype=float32", "num_frames=4", "max_new_tokens=6", "progress=false"]
    assert vamba_main([*base, f"out={tmp_path / 'one'}"]) == 0
    batched = [*base, f"out={tmp_path / 'two'}", "model.answer_batch=2"]
    assert vamba_main(batched) == 0
    one = read_jsonl(tmp_path / "one" / "responses.jsonl")
    two = read_jsonl(tmp_path / "two" / "responses.jsonl")
    assert [r["response"] for r in two] == [r["response"] for r in one] and two == one
    assert len({r["response"] for r in one}) > 1  # the prompts differ and so do the replies

    shard = tmp_path / "two" / "shards" / "rank0.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    kept = [json.loads(line)["qid"] for line in lines]
    plot = [r["qid"] for r in one if r["video"].endswith("plotQA_1.mp4")]
    shard.write_text("".join(line for line, qid in zip(lines, kept) if qid not in plot))  # plotQA_1.mp4's three lost
    assert vamba_main(batched) == 0
    assert read_jsonl(tmp_path / "two" / "responses.jsonl") == one
    status = json.loads((tmp_path / "two" / "shards" / "rank0.status.json").read_text())
    assert status["videos_encoded"] == 1 and status["timing"]["videos"][0]["questions"] == 3
