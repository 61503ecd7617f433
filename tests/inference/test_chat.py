"""The Python chat API on a saved tiny checkpoint and a real mp4: encode once, ask many times."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TextStreamer

from tests.doc_examples import python_example
from vamba.data.chat import VISION_MARKER
from vamba.data.sampling import FrameSampling, sample_frames
from vamba.data.video import open_video
from vamba.data.vision import process_frames
from vamba.inference.chat import VambaChat


def video_path(synth_dir: Path) -> Path:
    return synth_dir / "lvbench" / "videos" / "synth0001.mp4"


def test_encode_streams_the_same_cache_as_one_shot(chat: VambaChat, synth_dir: Path) -> None:
    path = video_path(synth_dir)
    seen = []
    encoded = chat.encode(path, sampling=FrameSampling("uniform", 10), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 10), (8, 10), (10, 10)]  # three pieces of at most 4 frames
    reader = open_video(path, "pyav")
    indices = sample_frames(reader.info().num_frames, reader.info().fps, FrameSampling("uniform", 10)).indices
    pixels, grid = process_frames(reader.get_frames(indices), chat.vision)
    whole = chat.model.encode_video(pixels, grid)
    assert encoded.grid == tuple(grid[0].tolist()) and encoded.frames == 10
    assert encoded.tokens == whole.keys[0].shape[2]
    for a, b in zip(whole.keys + whole.values, encoded.cache.keys + encoded.cache.values):
        torch.testing.assert_close(b, a, atol=2e-6, rtol=1e-5)


def test_ask_equals_generate_from_pixels(chat: VambaChat, synth_dir: Path) -> None:
    path = video_path(synth_dir)
    encoded = chat.encode(path, sampling=FrameSampling("uniform", 8))
    question = "What colour was the shape?"
    answer = chat.ask(encoded, question, max_new_tokens=5)
    ids = torch.tensor([chat.prompt_ids([(question, None)])])
    reader = open_video(path, "pyav")
    indices = sample_frames(reader.info().num_frames, reader.info().fps, FrameSampling("uniform", 8)).indices
    pixels, grid = process_frames(reader.get_frames(indices), chat.vision)
    out = chat.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, grid_thw=grid,
                              max_new_tokens=5, do_sample=False, eos_token_id=chat.eos_token_ids, pad_token_id=0)
    assert answer == chat.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert chat.ask(encoded, question, max_new_tokens=5) == answer  # the cache is reusable


def test_prompt_is_the_released_chat_template(chat: VambaChat) -> None:
    text = chat.tokenizer.decode(chat.prompt_ids([("Q1?", "A1."), ("Q2?", None)]))
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    f"<|im_start|>user\n{VISION_MARKER}Q1?<|im_end|>\n<|im_start|>assistant\nA1.<|im_end|>\n"
                    "<|im_start|>user\nQ2?<|im_end|>\n<|im_start|>assistant\n")


def test_conversation_keeps_turns_and_streams(chat: VambaChat, synth_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    encoded = chat.encode(video_path(synth_dir), sampling=FrameSampling("uniform", 4))
    conversation = chat.conversation(encoded)
    first = conversation.ask("How many shapes?", max_new_tokens=3)
    second = conversation.ask("And which colour?", max_new_tokens=3,
                              streamer=TextStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True))
    assert conversation.turns == [("How many shapes?", first), ("And which colour?", second)]
    assert capsys.readouterr().out.strip() == second  # streamed to stdout as generated
    assert second == chat.ask(encoded, "And which colour?", history=[("How many shapes?", first)], max_new_tokens=3)


def test_sampling_is_reproducible_with_a_seed(chat: VambaChat, synth_dir: Path) -> None:
    encoded = chat.encode(video_path(synth_dir), sampling=FrameSampling("uniform", 4))
    draws = [chat.ask(encoded, "Describe.", max_new_tokens=8, do_sample=True, temperature=2.0, seed=s)
             for s in (1, 1, 2, 3)]
    assert draws[0] == draws[1]
    assert len(set(draws)) > 1  # different seeds draw differently (temperature 2 on a random model)


def test_images_and_frames_in_memory(chat: VambaChat) -> None:
    frames = torch.randint(0, 255, (1, 56, 56, 3), dtype=torch.uint8).numpy()
    encoded = chat.encode_frames(frames)
    assert encoded.grid == (1, 4, 4) and encoded.tokens == 4
    assert isinstance(chat.ask(encoded, "What is it?", max_new_tokens=2), str)


def test_bad_checkpoints_are_clear_errors(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VambaChat.from_pretrained(tmp_path / "missing")
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        VambaChat.from_pretrained(no_tok)
    with pytest.raises(ValueError, match="unknown dtype"):
        VambaChat.from_pretrained(checkpoint, dtype="int8")


def test_auto_device(monkeypatch) -> None:
    from vamba.inference.chat import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("LOCAL_RANK", "3")
        assert resolve_device("auto") == torch.device("cpu")


def test_the_docs_chat_snippet_runs(checkpoint: Path, synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """docs/inference.md's Python example, as printed, on the tiny checkpoint and a real mp4 (only the paths, the
    device and the reply length are replaced), as README.md's snippet is run (test_processor_generate.py)."""
    code = python_example("docs/inference.md", "VambaChat")
    # a random tiny model rarely stops by itself: 8 new tokens a reply instead of the default 512
    replaced = [('"ckpt/"', repr(str(checkpoint))),
                ('device="cuda", dtype="bfloat16"', 'device="cpu", dtype="float32"'),
                ('"lecture.mp4"', repr(str(video_path(synth_dir)))),
                ('"What is the talk about?")', '"What is the talk about?", max_new_tokens=8)'),
                ("seed=0)", "seed=0, max_new_tokens=8)"),
                ('"Who speaks first?")', '"Who speaks first?", max_new_tokens=8)'),
                ('"What do they say next?")', '"What do they say next?", max_new_tokens=8)')]
    for old, new in replaced:
        assert old in code, f"docs/inference.md's example no longer contains {old}: update this test with it"
        code = code.replace(old, new)
    exec(compile(code, "docs/inference.md", "exec"), {})
    frames, tokens, seconds = capsys.readouterr().out.splitlines()[0].split()
    assert int(frames) > 0 and int(tokens) > 0 and float(seconds) >= 0
