"""VambaProcessor: chat template, the contract with the model (docs/model.md, "The processor"), files, errors.

Real mp4/png files from the synthetic data set, transformers' own ProcessorMixin.apply_chat_template and Qwen2-VL
image processor; the reference for videos is the training pipeline (read_video + process_frames).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vamba.data.chat import VISION_MARKER, Message, encode_chat, render_prompt
from vamba.data.processor import VambaProcessor, build_processor, load_vision_config
from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoDecodeError, read_video
from vamba.data.video_processor import VambaVideoProcessor, read_processor_dicts
from vamba.data.vision import VisionConfig, process_frames, processed_size


@pytest.fixture(scope="module")
def processor(tokenizer) -> VambaProcessor:
    return build_processor(tokenizer, VisionConfig(min_pixels=28 * 28, max_pixels=56 * 56 * 4))


@pytest.fixture(scope="module")
def image_path(synth_dir: Path) -> Path:
    return next(iter(sorted((synth_dir / "images").glob("*.png"))))


def user(*items: dict) -> list[dict]:
    return [{"role": "user", "content": list(items)}]


def test_template_is_the_training_template(processor, tokenizer) -> None:
    """Text-only chats render exactly as vamba.data.chat (which training and `vamba chat` use); a media item is
    the vision mark at its place, and the token ids equal encode_chat's for the VAMBA prompt."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": [{"type": "text", "text": "Q?"}]}]
    messages = [Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Q?")]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == render_prompt(
        messages, "Be brief.", add_generation_prompt=True)
    assert processor.apply_chat_template(chat[1:]) == render_prompt(messages)

    conv = user({"type": "video", "path": "x.mp4"}, {"type": "text", "text": "What colour?"})
    text = processor.apply_chat_template(conv, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>What colour?" in text
    want = encode_chat([Message("user", VISION_MARKER + "What colour?")], tokenizer, add_generation_prompt=True,
                       require_target=False).input_ids
    with pytest.raises(ValueError, match="marks 1 video"):  # a video mark needs its video
        processor(text=text)
    assert tokenizer(text.replace("<|video_pad|>", ""), add_special_tokens=False)["input_ids"] == want
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") not in want


def test_video_matches_the_training_pipeline(processor, tokenizer, video_path: Path) -> None:
    conv = user({"type": "video", "path": str(video_path)}, {"type": "text", "text": "What colour?"})
    out = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt", processor_kwargs={"num_frames": 6})
    assert set(out) == {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids"}
    frames = read_video(video_path, FrameSampling("uniform", 6)).frames
    pixel_values, grid = process_frames(frames, processor.vision_config())
    torch.testing.assert_close(out["pixel_values_videos"], pixel_values, rtol=0, atol=0)
    assert out["video_grid_thw"].tolist() == grid.tolist() and grid[0, 0] == 3
    start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    types = out["mm_token_type_ids"][0]
    assert types.tolist() == [2 if t == start else 0 for t in out["input_ids"][0].tolist()] and types.sum() == 2
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") not in out["input_ids"][0].tolist()
    # fps sampling: num_frames is the cap, the frames are those of vamba.data.sampling
    fps = processor.video_processor(str(video_path), fps=4.0, num_frames=4, return_tensors="pt")
    ref = process_frames(read_video(video_path, FrameSampling("fps", 4, fps=4.0)).frames, processor.vision_config())
    torch.testing.assert_close(fps["pixel_values_videos"], ref[0], rtol=0, atol=0)


def test_images_and_videos_interleaved_in_a_batch(processor, tokenizer, synth_dir: Path) -> None:
    """Two samples, several items each, images and videos mixed: items in order of appearance, kinds on the
    <|vision_start|> tokens; images exactly as transformers' Qwen2-VL image processor makes them."""
    images = sorted((synth_dir / "images").glob("*.png"))[:3]
    videos = sorted((synth_dir / "videos").glob("*.mp4"))[:2]
    convs = [user({"type": "image", "path": str(images[0])}, {"type": "video", "path": str(videos[0])},
                  {"type": "text", "text": "Same?"}, {"type": "image", "url": str(images[1])}),
             user({"type": "video", "video": str(videos[1])}, {"type": "image", "image": Image.open(images[2])},
                  {"type": "text", "text": "Which one?"})]
    out = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt", processor_kwargs={"num_frames": 4, "padding": True})
    start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    kinds = [[int(k) for t, k in zip(ids, types) if t == start]
             for ids, types in zip(out["input_ids"].tolist(), out["mm_token_type_ids"])]
    assert kinds == [[1, 2, 1], [2, 1]]
    assert out["mm_token_type_ids"].shape == out["input_ids"].shape
    ref = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56 * 4)(
        images=[Image.open(images[i]) for i in (0, 1, 2)], return_tensors="pt")
    torch.testing.assert_close(out["pixel_values"], ref["pixel_values"], rtol=0, atol=0)
    assert out["image_grid_thw"].tolist() == ref["image_grid_thw"].tolist()
    want = [process_frames(read_video(v, FrameSampling("uniform", 4)).frames, processor.vision_config())
            for v in videos]
    torch.testing.assert_close(out["pixel_values_videos"], torch.cat([w[0] for w in want]), rtol=0, atol=0)
    assert out["video_grid_thw"].tolist() == torch.cat([w[1] for w in want]).tolist()


def test_frames_arrays_and_bare_marks(processor) -> None:
    """Videos given as frames; the VAMBA prompt form (bare marks) when all items are of one kind."""
    frames = np.random.default_rng(0).integers(0, 255, (7, 60, 80, 3), dtype=np.uint8)
    text = f"<|im_start|>user\n{VISION_MARKER}{VISION_MARKER}Compare.<|im_end|>\n"
    out = processor(text=text, videos=[frames, torch.from_numpy(frames[:2])], num_frames=4, return_tensors="pt")
    ref = process_frames(frames[[0, 2, 4, 6]][:4], processor.vision_config())  # uniform 4 of 7: 0 2 4 6 (even)
    first = ref[0].shape[0]
    torch.testing.assert_close(out["pixel_values_videos"][:first], ref[0], rtol=0, atol=0)
    assert out["video_grid_thw"][:, 0].tolist() == [2, 1]
    assert sorted(set(out["mm_token_type_ids"][0].tolist())) == [0, 2]
    with pytest.raises(ValueError, match="both images and videos"):
        processor(text=text, videos=[frames], images=[frames[0]])
    with pytest.raises(ValueError, match="fps sampling needs a video file"):
        processor(text=text, videos=[frames, frames], fps=2.0)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['num_frame'\]"):
        processor(text=text, videos=[frames, frames], num_frame=2)
    h, w = processed_size(60, 80, VisionConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 4))
    assert (h, w) == (28, 56)  # call kwargs reach images and videos (the processor's own limit is 56*56*4)
    small = processor(text=f"{VISION_MARKER}x", images=[frames[0]], max_pixels=28 * 28 * 4, min_pixels=28 * 28)
    assert small["image_grid_thw"].tolist() == [[1, 2, 4]]
    small = processor(text=text, videos=[frames, frames], num_frames=2, max_pixels=28 * 28 * 4, min_pixels=28 * 28)
    assert small["video_grid_thw"].tolist() == [[1, 2, 4]] * 2


def test_nothing_is_dropped(processor, video_path: Path, image_path: Path, tmp_path: Path) -> None:
    video = {"type": "video", "path": str(video_path)}
    question = {"type": "text", "text": "What?"}
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    text_only = processor.apply_chat_template(user(question), **kwargs)
    assert set(text_only) == {"input_ids", "attention_mask", "mm_token_type_ids"}
    assert not text_only["mm_token_type_ids"].any()
    missing = {"type": "video", "path": str(tmp_path / "missing.mp4")}
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        processor.apply_chat_template(user(missing, question), **kwargs)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all" * 10)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        processor.apply_chat_template(user({"type": "video", "path": str(broken)}, question), **kwargs)
    with pytest.raises(ValueError, match="cannot load image .*nope.png"):
        processor.apply_chat_template(user({"type": "image", "path": str(tmp_path / "nope.png")}, question), **kwargs)
    with pytest.raises(ValueError, match="marks 1 image.* but 0 image"):  # an image item with nothing to load
        processor.apply_chat_template(user({"type": "image"}, question), **kwargs)
    with pytest.raises(Exception, match="unsupported content type sticker"):  # an item the template cannot place
        processor.apply_chat_template(user(video, {"type": "sticker", "path": "a.gif"}), **kwargs)
    with pytest.raises(ValueError, match="marks 0 video.* but 1 video"):  # media the text does not place
        processor(text="<|im_start|>user\nWhat?<|im_end|>\n", videos=[str(video_path)])
    with pytest.raises(ValueError, match="1 visual item.* no image or video"):  # a mark without media
        processor(text=f"{VISION_MARKER}What?")
    with pytest.raises(ValueError, match="outside"):
        processor(text="<|video_pad|>What?", videos=[str(video_path)])
    with pytest.raises(ValueError, match="truncated"):
        processor(text=f"{'word ' * 20}{VISION_MARKER}", videos=[str(video_path)], num_frames=2, truncation=True,
                  max_length=5)


def test_assistant_mask_survives_pad_removal(processor, video_path: Path) -> None:
    """return_assistant_tokens_mask (transformers maps template spans to tokens by character offsets): the
    removed pad must not shift the mask."""
    conv = user({"type": "video", "path": str(video_path)}, {"type": "text", "text": "Colour?"})
    conv.append({"role": "assistant", "content": [{"type": "text", "text": "Red."}]})
    template = processor.chat_template.replace(
        "{% else %}{% for item in message['content'] %}",
        "{% elif message['role'] == 'assistant' %}{% generation %}{{ message['content'][0]['text'] }}"
        "{% endgeneration %}{% else %}{% for item in message['content'] %}")
    out = processor.apply_chat_template(conv, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True, processor_kwargs={"num_frames": 2})
    masked = [t for t, m in zip(out["input_ids"][0], out["assistant_masks"][0]) if m]
    assert processor.tokenizer.decode(masked) == "Red."


def test_save_load_and_checkpoint_settings(processor, tokenizer, tmp_path: Path) -> None:
    custom = build_processor(tokenizer, VisionConfig(shortest_edge=100, longest_edge=300, min_pixels=1000,
                                                     max_pixels=60000), FrameSampling("fps", 32, fps=0.5))
    custom.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"processor_config.json", "chat_template.jinja", "tokenizer.json"} <= files
    loaded = VambaProcessor.from_pretrained(tmp_path / "ckpt")
    assert loaded.video_processor.to_dict() == custom.video_processor.to_dict()
    assert loaded.chat_template == custom.chat_template
    assert loaded.frame_sampling() == FrameSampling("fps", 32, fps=0.5)
    assert load_vision_config(tmp_path / "ckpt") == VisionConfig(100, 300, 1000, 60000)
    assert load_vision_config(tmp_path / "ckpt", max_pixels=9999, longest_edge=None).max_pixels == 9999
    overridden = VambaProcessor.from_pretrained(tmp_path / "ckpt", max_pixels=20000, num_frames=8)
    assert overridden.video_processor.max_pixels == 20000 and overridden.image_processor.size.longest_edge == 20000
    assert overridden.frame_sampling().num_frames == 8


@pytest.mark.parametrize("form", ["top_level", "size_edges", "size_pixels", "nested_5x"])
def test_qwen2_vl_checkpoint_files(tokenizer, tmp_path: Path, form: str) -> None:
    """A Qwen2-VL (or released VAMBA) checkpoint's preprocessor_config.json sets the pixel limits, in each form
    checkpoints carry them; Qwen2-VL's own video_preprocessor_config.json (other limits) is not taken."""
    limits = {"min_pixels": 3136, "max_pixels": 12845056}
    image = {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14, "temporal_patch_size": 2,
             "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
             "image_std": [0.26862954, 0.26130258, 0.27577711]}
    image.update({"top_level": limits, "size_edges": {"size": {"shortest_edge": 3136, "longest_edge": 12845056}},
                  "size_pixels": {"size": limits}, "nested_5x": {"size": {"shortest_edge": 3136,
                                                                           "longest_edge": 12845056}}}[form])
    ckpt = tmp_path / "qwen2vl"
    tokenizer.save_pretrained(ckpt)
    if form == "nested_5x":
        (ckpt / "processor_config.json").write_text(json.dumps({"image_processor": image,
                                                               "processor_class": "Qwen2VLProcessor"}))
    else:
        (ckpt / "preprocessor_config.json").write_text(json.dumps(image))
    (ckpt / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "min_pixels": 100352, "max_pixels": 602112}))
    assert load_vision_config(ckpt) == VisionConfig(min_pixels=3136, max_pixels=12845056)
    loaded = VambaProcessor.from_pretrained(ckpt)
    assert loaded.video_processor.max_pixels == 12845056 and loaded.image_processor.size.longest_edge == 12845056


def test_bad_processor_files(tokenizer, tmp_path: Path, caplog) -> None:
    bare = tmp_path / "bare"
    tokenizer.save_pretrained(bare)
    with caplog.at_level("WARNING"):
        assert load_vision_config(bare) == VisionConfig()
    assert "has no processor file" in caplog.text
    bad = tmp_path / "bad"
    shutil.copytree(bare, bad)
    (bad / "preprocessor_config.json").write_text(json.dumps({"patch_size": 16, "max_pixels": 1000}))
    with pytest.raises(ValueError, match="preprocessor_config.json: patch_size=16"):
        load_vision_config(bad)
    (bad / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "VambaVideoProcessor", "num_frame": 8}))
    with pytest.raises(ValueError, match=r"video_preprocessor_config.json.*unknown setting\(s\) \['num_frame'\]"):
        load_vision_config(bad)
    (bad / "video_preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="video_preprocessor_config.json: not a readable JSON"):
        read_processor_dicts(bad)
    with pytest.raises(ValueError, match="odd_frames"):
        VambaVideoProcessor(odd_frames="keep")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        load_vision_config(tmp_path / "nowhere")
