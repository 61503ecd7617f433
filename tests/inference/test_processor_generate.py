"""transformers' way in: AutoProcessor + AutoModelForImageTextToText + apply_chat_template + generate gives the
reply `vamba chat` (VambaChat) gives on the same frames and question; the video is seen, never dropped."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import vamba.models  # noqa: F401  (registers the Auto classes)
from tests.doc_examples import python_example
from vamba.data.processor import VambaProcessor, build_processor
from vamba.data.sampling import FrameSampling
from vamba.data.video import read_video
from vamba.data.vision import VisionConfig, load_image
from vamba.inference.chat import VambaChat
from vamba.models import VambaForConditionalGeneration


@pytest.fixture(scope="module")
def ckpt(checkpoint: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a processor saved beside it (as `vamba train` and `vamba convert` write)."""
    path = tmp_path_factory.mktemp("with-processor") / "tiny-vamba"
    shutil.copytree(checkpoint, path)
    build_processor(tokenizer, VisionConfig(min_pixels=28 * 28, max_pixels=112 * 112),
                    FrameSampling("uniform", 6)).save_pretrained(path)
    return path


def _generate(model, processor, conversation, **kwargs) -> tuple[str, dict]:
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", **kwargs)
    eos = [processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=eos,
                         pad_token_id=processor.tokenizer.pad_token_id)
    reply = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return reply, inputs


def test_auto_classes_load_the_checkpoint(ckpt: Path) -> None:
    processor = AutoProcessor.from_pretrained(ckpt)
    assert isinstance(processor, VambaProcessor)
    assert processor.vision_config() == VisionConfig(min_pixels=28 * 28, max_pixels=112 * 112)
    assert processor.frame_sampling() == FrameSampling("uniform", 6)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(ckpt), VambaForConditionalGeneration)


def test_generate_equals_vamba_chat(ckpt: Path, synth_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    chat = VambaChat.from_pretrained(ckpt, device="cpu", dtype="float32", piece_frames=4)
    assert chat.vision == processor.vision_config() and chat.sampling == processor.frame_sampling()
    video = synth_dir / "videos" / "video_00000.mp4"
    question = "What colour is the shape?"
    conversation = [{"role": "user", "content": [{"type": "video", "path": str(video)},
                                                 {"type": "text", "text": question}]}]

    reply, inputs = _generate(model, processor, conversation, num_frames=6)
    assert inputs["input_ids"][0].tolist() == chat.prompt_ids([(question, None)])
    encoded = chat.encode(video, sampling=FrameSampling("uniform", 6))
    assert inputs["video_grid_thw"][0].tolist() == list(encoded.grid)
    assert reply == chat.ask(encoded, question, max_new_tokens=8)

    # the video reaches the model: the next-token logits differ from a text-only prompt and between videos
    with torch.no_grad():
        with_video = model(**inputs).logits[0, -1]
        text_only = processor.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True, return_tensors="pt")
        other = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video", "path": str(synth_dir / "lvbench" / "videos" / "synth0001.mp4")},
                                          {"type": "text", "text": question}]}],
            add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", num_frames=6)
        assert not torch.allclose(with_video, model(**text_only).logits[0, -1])
        assert not torch.allclose(with_video, model(**other).logits[0, -1])


def test_image_generate_equals_vamba_chat(ckpt: Path, synth_dir: Path, tmp_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    chat = VambaChat.from_pretrained(ckpt, device="cpu", dtype="float32")
    # the inference data set holds no images: a video frame saved as png
    frame = read_video(synth_dir / "videos" / "video_00000.mp4", FrameSampling("uniform", 1)).frames[0]
    image = tmp_path / "frame.png"
    Image.fromarray(frame).save(image)
    question = "Describe it."
    reply, inputs = _generate(model, processor, [{"role": "user", "content": [
        {"type": "image", "path": str(image)}, {"type": "text", "text": question}]}])
    assert inputs["image_grid_thw"].shape == (1, 3) and int(inputs["mm_token_type_ids"].max()) == 1
    assert reply == chat.ask(chat.encode_frames(load_image(str(image))), question, max_new_tokens=8)


def test_vamba_chat_cli_gives_the_same_reply(ckpt: Path, synth_dir: Path, capsys) -> None:
    """`vamba chat` without --frames reads the checkpoint's frame count and resize settings (its processor files)
    and answers as generate does on the processor's inputs."""
    from vamba.cli import main as vamba_main

    processor = AutoProcessor.from_pretrained(ckpt)
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    video = synth_dir / "videos" / "video_00000.mp4"
    reply, inputs = _generate(model, processor, [{"role": "user", "content": [
        {"type": "video", "path": str(video)}, {"type": "text", "text": "What shape?"}]}])  # the processor's 6 frames
    assert vamba_main(["chat", "--model", str(ckpt), "--video", str(video), "--device", "cpu", "--dtype", "float32",
                       "--max-new-tokens", "8", "What shape?"]) == 0
    captured = capsys.readouterr()
    tokens = int(inputs["video_grid_thw"].prod()) // 4
    assert f"[6 frames, {tokens} video tokens" in captured.err
    assert captured.out.strip() == reply


def test_eval_adapter_takes_the_checkpoint_pixel_limits(ckpt: Path, synth_dir: Path) -> None:
    """`vamba eval`'s VAMBA adapter: pixel limits from the checkpoint (model.max_pixels wins), edges from the
    benchmark protocol."""
    from vamba.evaluation.interface import FrameSettings, VideoRequest
    from vamba.inference.video_qa import load_video_qa_model

    request = VideoRequest(str(synth_dir / "lvbench" / "videos" / "synth0002.mp4"),
                           FrameSettings(4, shortest_edge=None, longest_edge=None))
    adapter = load_video_qa_model(str(ckpt), device="cpu", dtype="float32")
    assert adapter.chat.vision == VisionConfig(min_pixels=28 * 28, max_pixels=112 * 112)
    assert adapter.encode_video(request).grid[1:] == (4, 4)  # 64x64 frames -> 56x56 within the checkpoint's limits
    capped = load_video_qa_model(str(ckpt), device="cpu", dtype="float32", max_pixels=28 * 28)
    assert capped.encode_video(request).grid[1:] == (2, 2)


def test_the_readme_snippet_runs(ckpt: Path, synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """README.md's "With transformers" code, as printed, on the tiny checkpoint and a real mp4 (only the paths and
    the frame count are replaced): it broke once for every user when transformers changed its processor loading."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## With transformers.*?```python\n(.+?)\n```", readme, flags=re.S).group(1)
    for old, new in (('"out/vamba-7b"', repr(str(ckpt))), ('"movie.mp4"', repr(str(synth_dir / "videos" /
                                                                                    "video_00000.mp4"))),
                     ('"num_frames": 128', '"num_frames": 6'), ("max_new_tokens=128", "max_new_tokens=4")):
        assert old in code, f"the README snippet no longer contains {old}: update this test with it"
        code = code.replace(old, new)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.endswith("\n")  # the reply was printed (a random tiny model's may be blank)


def test_the_docs_auto_classes_example_runs(ckpt: Path, synth_dir: Path, tmp_path: Path) -> None:
    """docs/model.md's Auto-classes example (a video and an image in one turn), as printed, on the tiny checkpoint,
    a real mp4 and a real png (only the paths, the frame count and the reply length are replaced)."""
    code = python_example("docs/model.md", "apply_chat_template")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "photo.png")
    for old, new, count in (('"ckpt/"', repr(str(ckpt)), 2),
                            ('"movie.mp4"', repr(str(synth_dir / "videos" / "video_00000.mp4")), 1),
                            ('"photo.png"', repr(str(tmp_path / "photo.png")), 1),
                            ('"num_frames": 64', '"num_frames": 6', 1), ("max_new_tokens=64", "max_new_tokens=4", 1)):
        assert code.count(old) == count, f"docs/model.md's example changed ({old}): update this test with it"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "docs/model.md", "exec"), scope)
    inputs, reply = scope["inputs"], scope["reply"]
    assert inputs["pixel_values"].shape[0] > 0 and inputs["pixel_values_videos"].shape[0] > 0  # both were read
    assert reply.shape[1] > inputs["input_ids"].shape[1]
