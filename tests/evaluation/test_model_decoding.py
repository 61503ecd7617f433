"""The model adapter decodes as the released evaluation does, checked with a real tiny VAMBA and transformers'
own ``generate``: the reply as generated (nothing stripped), the tokenizer's eos as the only stop, decoding
settings that a checkpoint's ``generation_config`` cannot change, and missing or undecodable videos skipped and
flagged, or (``strict=true``) stopping the run.

Replies are forced with ``sequence_bias`` in the checkpoint's ``generation_config.json`` (a transformers logits
processor that ``generate`` applies because we do not override it): each token of the wanted reply gets a bias
once the tokens before it were generated, the longest matching prefix the largest.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark
from vamba.evaluation.interface import FrameSettings, GenerationSettings, VideoRequest
from vamba.inference.video_qa import load_video_qa_model
from vamba.utils.io import read_jsonl

from .conftest import with_generation_config
from .minibench import WRITERS, write_mp4

OPTION_IS = "B fits the video best, so the option is "


def _forcing(tokenizer, pieces: list[str]) -> list:
    """``sequence_bias`` that makes greedy decoding emit ``pieces`` (text, or special tokens by name)."""
    ids: list[int] = []
    for piece in pieces:
        if piece in tokenizer.all_special_tokens:
            ids.append(tokenizer.convert_tokens_to_ids(piece))
        else:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    return [[ids[:k + 1], 100.0 * (k + 1)] for k in range(len(ids))]


def _video(tmp_path: Path) -> tuple[Path, VideoRequest]:
    path = write_mp4(tmp_path / "clip.mp4", frames=4, size=32)
    return path, VideoRequest(str(path), FrameSettings(4, shortest_edge=56, longest_edge=56))


def _load(checkpoint: Path):
    return load_video_qa_model(str(checkpoint), device="cpu", dtype="float32")


def test_the_reply_is_scored_as_generated(eval_checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """A reply ending in "the option is " reaches the answer rule with its trailing space: no answer, as in the
    released scripts (stripped, it read as its first letter, "B"). ``vamba chat`` still strips for display."""
    tokenizer = _load(eval_checkpoint).chat.tokenizer
    ckpt = with_generation_config(eval_checkpoint, tmp_path / "ckpt",
                                  sequence_bias=_forcing(tokenizer, [OPTION_IS, "<|im_end|>"]))
    model = _load(ckpt)
    _, request = _video(tmp_path)
    encoded = model.encode_video(request)
    reply = model.answer(encoded, "Which colour?", GenerationSettings(max_new_tokens=20))
    assert reply == OPTION_IS
    assert model.chat.ask(encoded, "Which colour?", max_new_tokens=20) == OPTION_IS.strip()

    # End to end: the mini LVBench's third question has gold B; the released rule finds no answer in this reply.
    root = WRITERS["lvbench"](tmp_path / "LVBench")
    out = tmp_path / "run"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"model.path={ckpt}", "model.device=cpu",
                       "model.dtype=float32", "num_frames=4", "max_new_tokens=20", f"out={out}",
                       "progress=false"]) == 0
    printed = capsys.readouterr().out
    # three invented questions at 4 frames: a score, but not one to set beside the paper's
    assert "LVBench overall = 0.00 on 3 of 3 answered; NOT comparable with the published numbers: " in printed
    assert "frames.num_frames: 4 (protocol: 1024)" in printed
    records = read_jsonl(out / "responses.jsonl")
    assert [r["response"] for r in records] == [OPTION_IS] * 3 and [r["gold"] for r in records] == ["C", "A", "B"]
    assert not any(r["correct"] for r in records)


def test_the_tokenizer_eos_alone_ends_the_reply(eval_checkpoint: Path, tmp_path: Path) -> None:
    """tools/vamba_chat.py passes ``eos_token_id=[tokenizer.eos_token_id]`` (``<|im_end|>`` here): generation
    goes on past ``<|endoftext|>``, which decoding then drops. ``vamba chat`` stops at either token."""
    tokenizer = _load(eval_checkpoint).chat.tokenizer
    assert tokenizer.eos_token == "<|im_end|>"
    ckpt = with_generation_config(eval_checkpoint, tmp_path / "ckpt",
                                  sequence_bias=_forcing(tokenizer, ["B", "<|endoftext|>", " C", "<|im_end|>"]))
    model = _load(ckpt)
    encoded = model.encode_video(_video(tmp_path)[1])
    assert model.answer(encoded, "Which colour?", GenerationSettings(max_new_tokens=10)) == "B C"
    assert model.chat.ask(encoded, "Which colour?", max_new_tokens=10) == "B"


def test_decoding_settings_reach_generate_whatever_the_checkpoint_says(eval_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    """HourVideo samples with top_k=None, top_p 0.9, temperature 1 (eval/eval_hourvideo.py main) even when the
    checkpoint's generation_config says greedy and top-50; the greedy protocols stay greedy when it says sample.
    The references are transformers' ``generate`` with a GenerationConfig built here (top_k=0: no top-k)."""
    from transformers import GenerationConfig

    ckpt = with_generation_config(eval_checkpoint, tmp_path / "ckpt", do_sample=False, top_k=50)
    model = _load(ckpt)
    assert (model.chat.model.generation_config.top_k, model.chat.model.generation_config.do_sample) == (50, False)
    encoded = model.encode_video(_video(tmp_path)[1])
    prompt = "Which colour?"
    hourvideo = dataclasses.replace(get_benchmark("hourvideo").protocol("vamba").generation, max_new_tokens=12)
    ours = model.answer(encoded, prompt, hourvideo.with_seed(1234))
    assert ours == model.answer(encoded, prompt, hourvideo.with_seed(1234))  # a seed fixes the draw
    assert ours != model.answer(encoded, prompt, hourvideo.with_seed(4321))

    ids = torch.tensor([model.chat.prompt_ids([(prompt, None)])])
    eos, pad = model.chat.tokenizer.eos_token_id, model.chat.pad_token_id

    def reference(**settings) -> str:
        torch.manual_seed(1234)
        config = GenerationConfig(max_new_tokens=12, eos_token_id=[eos], pad_token_id=pad, **settings)
        out = model.chat.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=encoded.cache,
                                        generation_config=config)
        return model.chat.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False)

    assert ours == reference(do_sample=True, top_k=0, top_p=0.9, temperature=1.0)
    assert ours != reference(do_sample=True, top_k=50, top_p=0.9, temperature=1.0)  # what top-50 would draw
    greedy = reference(do_sample=False)
    assert ours != greedy

    sampler = with_generation_config(eval_checkpoint, tmp_path / "sampler", do_sample=True, top_k=5,
                                     temperature=2.0)
    assert _load(sampler).answer(encoded, prompt, GenerationSettings(max_new_tokens=12)) == greedy


def test_missing_and_undecodable_videos(eval_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Default: skipped and counted, the score is over the rest and flagged "N of M answered", not comparable.
    ``strict=true``: the run stops at the video, as the released scripts do (decord raises; a missing file
    raises too), naming it; answers recorded before the stop are kept for a resumed run."""
    root = WRITERS["lvbench"](tmp_path / "LVBench")  # vidA: questions 1, 2; vidB: question 3
    vid_b = root / "videos" / "vidB.mp4"
    data = vid_b.read_bytes()
    vid_b.write_bytes(data[:len(data) // 2])  # a real mp4 cut short
    base = ["eval", "benchmark=lvbench", f"data={root}", f"model.path={eval_checkpoint}", "model.device=cpu",
            "model.dtype=float32", "num_frames=4", "max_new_tokens=2", "progress=false"]

    assert vamba_main([*base, f"out={tmp_path / 'lenient'}"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 of 3 answered; NOT comparable with the published numbers: 1 of 3 questions not answered" in printed
    summary = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert (summary["answered"], summary["expected"], summary["comparable"]) == (2, 3, False)
    assert summary["skipped"]["details"][0]["video"] == str(vid_b)
    assert "VideoDecodeError" in summary["skipped"]["details"][0]["reason"]
    report = (tmp_path / "lenient" / "report.md").read_text()
    assert "on 2 of 3 questions answered: NOT comparable with the published numbers**" in report.splitlines()[2]

    strict = tmp_path / "strict"
    assert vamba_main([*base, f"out={strict}", "strict=true"]) == 2
    err = capsys.readouterr().err
    assert f"{vid_b}: cannot be decoded" in err and "strict=true stops here" in err
    assert [r["qid"] for r in read_jsonl(strict / "shards" / "rank0.jsonl")] == ["1", "2"]
    assert not (strict / "summary.json").exists()

    vid_b.write_bytes(data)
    (root / "videos" / "vidA.mp4").unlink()
    assert vamba_main([*base, f"out={tmp_path / 'missing'}", "strict=true"]) == 2
    assert f"{root / 'videos' / 'vidA.mp4'}: video missing (2 questions)" in capsys.readouterr().err
    assert vamba_main([*base, f"out={tmp_path / 'missing-lenient'}"]) == 0
    assert "on 1 of 3 answered; NOT comparable" in capsys.readouterr().out
