"""Released VAMBA data configs (TIGER-AI-Lab/Vamba train/data_configs/*.yaml) read as they are.

Expected frame indices are worked out by hand from reading the released ``train/data.py`` (``get_frame_indices`` and
the video loader that calls it), not by running any sampler: ``middle`` cuts the video at
``np.linspace(0, total, n + 1).astype(int)`` and takes ``(a + b - 1) // 2`` of each segment ``[a, b)``; ``rand``
draws from ``range(a, b - 1)`` and falls back to a sorted random subset when one of those ranges is empty;
``auto`` is ``max_img_seq_len // ((h // 14) * (w // 14) // 2)`` at the edge-resized size, capped at the length.
Media are real files (mp4 by the project's writer, jpg by PIL) in the released JSON layouts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vamba.data.chat import SampleError
from vamba.data.dataset import ProcessingConfig, VambaDataset
from vamba.data.mixture import Mixture
from vamba.data.released import ReleasedMixture, random_video_sources
from vamba.data.released_sampling import auto_num_frames, fps_indices, middle_indices, rand_indices
from vamba.data.sampling import uniform_indices
from vamba.data.synth import write_mp4
from vamba.data.video import open_video
from vamba.data.vision import VisionConfig, load_image, process_frames


def test_middle_indices_by_hand() -> None:
    # linspace(0, 10, 5) = 0, 2.5, 5, 7.5, 10 -> 0, 2, 5, 7, 10; (0+1)//2, (2+4)//2, (5+6)//2, (7+9)//2
    assert middle_indices(10, 4) == [0, 3, 5, 8]
    # linspace(0, 7, 4) = 0, 2.33, 4.67, 7 -> 0, 2, 4, 7
    assert middle_indices(7, 3) == [0, 2, 5]
    # more frames asked than the video has: the loader caps the count first, every frame once
    assert middle_indices(3, 8) == [0, 1, 2]
    # not our uniform (the released evaluation's (a + b) // 2): 8 of 16 frames
    assert middle_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert uniform_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]


def test_rand_indices_by_hand() -> None:
    draws = [rand_indices(10, 4, torch.Generator().manual_seed(s)) for s in range(200)]
    # segments [0,2) [2,5) [5,7) [7,10): draw ranges range(0,1), range(2,4), range(5,6), range(7,9)
    assert {d[0] for d in draws} == {0} and {d[2] for d in draws} == {5}
    assert {d[1] for d in draws} == {2, 3} and {d[3] for d in draws} == {7, 8}
    # 4 of 100: a segment's last frame (24, 49, 74, 99) is never drawn
    seen = {i for s in range(300) for i in rand_indices(100, 4, torch.Generator().manual_seed(s))}
    assert seen <= set(range(0, 24)) | set(range(25, 49)) | set(range(50, 74)) | set(range(75, 99))
    assert not seen & {24, 49, 74, 99} and {0, 23, 98} <= seen
    # 4 of 5: linspace gives 0, 1, 2, 3, 5 -> range(0, 0) is empty -> a sorted random 4-subset of 0..4
    subsets = {tuple(rand_indices(5, 4, torch.Generator().manual_seed(s))) for s in range(200)}
    assert subsets == {tuple(i for i in range(5) if i != skip) for skip in range(5)}
    assert rand_indices(4, 4, torch.Generator()) == [0, 1, 2, 3]
    # the generator decides: the same seed, the same frames
    assert rand_indices(100, 8, torch.Generator().manual_seed(7)) == rand_indices(100, 8, torch.Generator().manual_seed(7))


def test_fps_and_auto_by_hand() -> None:
    # fps2 of 50 frames at 25 fps: clip centres 0.25, 0.75, 1.25, 1.75 s -> 6.25, 18.75, 31.25, 43.75 -> rounded
    assert fps_indices(50, 25.0, 2.0) == [6, 19, 31, 44]
    # fps0.5 of 30 frames at 10 fps: centres 1 s, 3 s -> 10, 30; 30 is past the end
    assert fps_indices(30, 10.0, 0.5) == [10]
    # 128x128: 9 * 9 patches // 2 = 40 per frame; 640x360 (under the 1280 edge): 45 * 25 // 2 = 562
    assert auto_num_frames(128, 128, 400) == 10
    assert auto_num_frames(360, 640, 120_000) == 213
    with pytest.raises(ValueError, match="no frame"):
        auto_num_frames(360, 640, 100)


FRAMES = 24


@pytest.fixture(scope="module")
def released_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real media under a LLaVA-Video-178K / LLaVA-OneVision / CC12M-PixelProse layout and their annotations."""
    root = tmp_path_factory.mktemp("released")
    (root / "LLaVA-Video-178K" / "academic").mkdir(parents=True)
    # every frame its own grey level, so frames at other indices give other pixels
    frames = np.stack([np.full((48, 64, 3), 8 + 10 * i, dtype=np.uint8) for i in range(FRAMES)])
    frames[:, 10:20, 10:30] = 255 - frames[:, 10:20, 10:30]
    for k in range(2):
        write_mp4(root / "LLaVA-Video-178K" / "academic" / f"v{k}.mp4", frames, fps=8)
    for folder in ("onevision", "cc12m"):
        (root / folder).mkdir()
        for k in range(4):
            Image.fromarray(np.full((48, 64, 3), 30 * k + 20, dtype=np.uint8)).save(root / folder / f"{k:03d}.jpg")
    conv = [{"from": "human", "value": "<video>\nWhat changes?"}, {"from": "gpt", "value": "The brightness."}]
    (root / "activitynetqa_processed.json").write_text(json.dumps(
        [{"id": f"v{k}", "image": f"academic/v{k}.mp4", "conversations": conv} for k in range(2)]))
    (root / "llava_video_178k_all_data_packed.json").write_text(json.dumps([{
        "id": "v1", "image": "academic/v1.mp4",
        "all_conversations": [conv, [{"from": "human", "value": "<video>\nHow long is it?"},
                                     {"from": "gpt", "value": "Three seconds."}]]}]))
    (root / "llava_onevision.json").write_text(json.dumps([
        {"id": f"ov{k}", "image": f"{k:03d}.jpg", "data_source": "synthetic",
         "conversations": [{"from": "human", "value": "<image>\nWhat grey is this?"},
                           {"from": "gpt", "value": f"Level {k}."}]} for k in range(4)]))
    (root / "pixelprose.jsonl").write_text("".join(
        json.dumps({"image": f"{k:03d}.jpg", "caption": f"A flat grey picture number {k}.", "url": "x"}) + "\n"
        for k in range(4)))
    return root


def video_source(root: Path, name: str, json_name: str, fmt: str, sample_type: str, num_frames) -> dict:
    return {"data_path": str(root / "LLaVA-Video-178K"), "dataset_type": "video", "format": fmt,
            "img_do_resize": False, "img_longest_edge": 1280, "img_shortest_edge": 128,
            "json_path": str(root / json_name), "name": name, "video_sample_type": sample_type,
            "video_num_frames": num_frames, "shuffle": True, "split": "train"}


def write_config(root: Path, sources: list[dict], name: str = "data.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump({"data": sources}, sort_keys=False))
    return path


def test_sft_layout_samples_and_frames(released_files: Path, tokenizer) -> None:
    """A config shaped as data_llava_ov_video_packed.yaml: frames, resize and text of every source."""
    root = released_files
    config = write_config(root, [
        {"data_path": str(root / "onevision"), "dataset_type": "image", "format": "conversation_packed",
         "pack_size": 8, "img_do_resize": False, "img_longest_edge": 1920, "img_shortest_edge": 128,
         "json_path": str(root / "llava_onevision.json"), "name": "llava_onevision", "shuffle": True,
         "split": "train"},
        video_source(root, "activitynet_qa", "activitynetqa_processed.json", "conversation", "middle", "auto"),
        video_source(root, "llava_video_178k_all", "llava_video_178k_all_data_packed.json", "llava_video_packed",
                     "middle", "auto"),
    ])
    mixture = Mixture.from_yaml(config, max_img_seq_len=400)
    assert isinstance(mixture, ReleasedMixture) and random_video_sources(mixture) == []
    # balancing over units (1 pack of 4 images, 2 videos, 1 packed record): N = 4, sqrt 1, 1.414, 1
    # -> p = 0.293, 0.414, 0.293 -> int(4 * 0.322) = 1, int(4 * 0.456) = 1, int(4 * 0.322) = 1
    names = [mixture.source_name(i) for i in range(len(mixture))]
    assert sorted(names) == ["activitynet_qa"] + ["llava_onevision"] * 4 + ["llava_video_178k_all"]
    ds = VambaDataset(mixture, tokenizer, ProcessingConfig(on_error="raise", max_text_tokens=None))
    by_name = {}
    for i, name in enumerate(names):
        by_name.setdefault(name, []).append(i)
    # video, auto: 64x48 -> edge rule 128x128 -> 40 patches per frame -> 400 // 40 = 10 frames of 24, middle:
    # linspace(0, 24, 11) -> 0 2 4 7 9 12 14 16 19 21 24 -> (a + b - 1) // 2
    expected = [0, 2, 5, 7, 10, 12, 14, 17, 19, 22]
    video = root / "LLaVA-Video-178K" / "academic"
    for name in ("activitynet_qa", "llava_video_178k_all"):
        sample = ds[by_name[name][0]]
        raw = mixture.get(by_name[name][0])
        reference, _ = process_frames(open_video(raw.media[0].source).get_frames(expected),
                                      VisionConfig(shortest_edge=128, longest_edge=1280))
        assert sample.grid_thw.tolist() == [[5, 10, 10]]  # 10 frames; 128 -> smart resize 140 = 10 patches
        assert torch.equal(sample.pixel_values, reference)
        assert Path(raw.media[0].source).parent == video
    packed = ds[by_name["llava_video_178k_all"][0]]
    text = tokenizer.decode(packed.input_ids)
    assert "What changes?" in text and "How long is it?" in text and "<video>" not in text
    assert text.count("<|vision_start|>") == 1  # one video for both conversations
    # image: 64x48 -> shortest edge 128 -> 128x128 -> 140x140
    image = ds[by_name["llava_onevision"][0]]
    raw = mixture.get(by_name["llava_onevision"][0])
    reference, _ = process_frames(load_image(raw.media[0].source), VisionConfig(shortest_edge=128, longest_edge=1920))
    assert image.grid_thw.tolist() == [[1, 10, 10]] and torch.equal(image.pixel_values, reference)
    # a budget large enough for the whole video: every frame once (24, never more than the video has)
    whole = VambaDataset(Mixture.from_yaml(config), tokenizer, ProcessingConfig(on_error="raise"))
    assert whole[by_name["activitynet_qa"][0]].grid_thw.tolist() == [[12, 10, 10]]


def test_rand_frames_are_seeded_per_sample(released_files: Path, tokenizer) -> None:
    """rand draws from the sample's generator (seed, epoch, index): the same after a restart, other next epoch."""
    root = released_files
    config = write_config(root, [video_source(root, "perceptiontest", "activitynetqa_processed.json",
                                              "conversation", "rand", 8)], "rand.yaml")

    def sample(epoch: int):
        ds = VambaDataset(Mixture.from_yaml(config), tokenizer, ProcessingConfig(on_error="raise", seed=3))
        ds.set_epoch(epoch)
        return ds[0]

    first, again = sample(0), sample(0)
    assert first.grid_thw.tolist() == [[4, 10, 10]]
    assert torch.equal(first.pixel_values, again.pixel_values)
    assert any(not torch.equal(first.pixel_values, sample(e).pixel_values) for e in (1, 2, 3))
    # the frames are a released draw: one of range(3j, 3j + 2) per segment [3j, 3j + 3) of 24 frames
    # `vamba distill-cache` refuses such a source (the cached targets would be for other frames)
    assert random_video_sources(Mixture.from_yaml(config)) == ["perceptiontest"]
    raw = Mixture.from_yaml(config).get(0)
    vision = VisionConfig(shortest_edge=128, longest_edge=1280)
    reader = open_video(raw.media[0].source)
    options = [[process_frames(reader.get_frames([3 * j + d, 3 * j + d]), vision)[0] for d in (0, 1)]
               for j in range(8)]
    per_frame = first.pixel_values.reshape(4, 100, 3, 2, 14, 14)  # (t, patches, C, frame of the pair, 14, 14)
    for j in range(8):
        got = per_frame[j // 2, :, :, j % 2]
        assert any(torch.equal(got, o.reshape(1, 100, 3, 2, 14, 14)[0, :, :, 0]) for o in options[j]), j


def test_caption_layout_and_record_order(released_files: Path, tokenizer) -> None:
    """data_cc12m_pixelprose_packed.yaml's shape: captions as replies; shuffle and max_size as released."""
    root = released_files
    source = {"name": "cc12m_pixelprose", "format": "caption_packed", "split": "train",
              "json_path": str(root / "pixelprose.jsonl"), "data_path": str(root / "cc12m"),
              "dataset_type": "image", "img_do_resize": False, "pack_size": 8, "shuffle": True}
    mixture = Mixture.from_yaml(write_config(root, [source], "pt.yaml"))
    assert sorted(r for _, r in mixture.order) == [0, 1, 2, 3]  # one source: every record once
    sample = VambaDataset(mixture, tokenizer, ProcessingConfig(on_error="raise"))[0]
    record = mixture.order[0][1]
    text = tokenizer.decode(sample.input_ids)
    assert f"A flat grey picture number {record}." in text
    assert sample.grid_thw.tolist() == [[1, 4, 4]]  # no edge rule: 64x48 -> smart resize 56x56
    # shuffle with random.seed(42) over 5 records gives 3, 1, 2, 4, 0 (CPython); max_size keeps the first 3
    records = [{"image": "000.jpg", "caption": f"c{k}"} for k in range(5)]
    (root / "five.json").write_text(json.dumps(records))
    cut = Mixture.from_yaml(write_config(root, [{**source, "json_path": str(root / "five.json"), "max_size": 3}],
                                         "cut.yaml"))
    assert sorted(r for _, r in cut.order) == [1, 2, 3]


def test_balancing_counts_packs(released_files: Path) -> None:
    """Several train sources: the released square-root balancing over their items (packs for packed formats)."""
    root = released_files
    (root / "ten.json").write_text(json.dumps([{"image": "000.jpg", "caption": f"c{k}"} for k in range(10)]))
    (root / "nine.json").write_text(json.dumps([{"image": "000.jpg", "caption": f"c{k}"} for k in range(9)]))
    base = {"data_path": str(root / "cc12m"), "dataset_type": "image", "split": "train"}
    mixture = Mixture.from_yaml(write_config(root, [
        {**base, "name": "packs", "format": "caption_packed", "pack_size": 4, "json_path": str(root / "ten.json")},
        {**base, "name": "single", "format": "caption", "json_path": str(root / "nine.json")},
        {**base, "name": "held_out", "format": "caption", "json_path": str(root / "nine.json"), "split": "val"},
    ], "mix.yaml"))
    # units 3 packs (4 + 4 + 2 records) and 9: N = 12, sqrt 1.732 and 3 -> p = 0.366, 0.634
    # -> int(12 * 0.403) = 4 packs (the 4th is the 1st again: 14 records), int(12 * 0.697) = 8 of 9 records
    picks = {"packs": [], "single": []}
    for i, (s, r) in enumerate(mixture.order):
        picks[mixture.source_name(i)].append(r)
    assert sorted(picks["packs"]) == sorted([0, 1, 2, 3] * 2 + [4, 5, 6, 7, 8, 9])
    assert sorted(picks["single"]) == list(range(8))


@pytest.mark.parametrize("change, message", [
    ({"video_sample_tpye": "middle"}, r"unknown field\(s\) \['video_sample_tpye'\]"),
    ({"img_do_resize": True}, "video_num_frames: auto needs the edge rule"),
    ({"img_longest_edge": None}, "give both img_shortest_edge and img_longest_edge"),
    ({"video_sample_type": "uniform"}, "must be middle, rand or fps<rate>"),
    ({"video_num_frames": 0}, "must be a positive integer or auto"),
    ({"max_txt_seq_len": 1000}, "per-source text limit is not supported"),
    ({"logit_cache_path": "/cache"}, "vamba distill-cache"),
    ({"format": "conversations"}, "format='conversations': must be one of"),
    ({"split": "val"}, "no source with split: train"),
])
def test_bad_fields_name_the_source_and_field(released_files: Path, change: dict, message: str) -> None:
    source = {**video_source(released_files, "next_qa", "activitynetqa_processed.json", "conversation", "middle",
                             "auto"), **change}
    with pytest.raises(ValueError, match=message) as error:
        Mixture.from_yaml(write_config(released_files, [source], "bad.yaml"))
    assert "next_qa" in str(error.value) or "split" in message


def test_missing_field_and_detection(released_files: Path) -> None:
    source = video_source(released_files, "next_qa", "activitynetqa_processed.json", "conversation", "middle", "auto")
    missing = {k: v for k, v in source.items() if k != "dataset_type"}
    with pytest.raises(ValueError, match=r"'next_qa'\): missing field\(s\) \['dataset_type'\]"):
        Mixture.from_yaml(write_config(released_files, [missing], "bad.yaml"))
    # `format: vamba_released` marks a released config explicitly (for a file whose shape is ambiguous)
    path = released_files / "marked.yaml"
    path.write_text(yaml.safe_dump({"format": "vamba_released", "data": [missing]}))
    with pytest.raises(ValueError, match=r"missing field\(s\) \['dataset_type'\]"):
        Mixture.from_yaml(path)
    # our own mixture format is still read as before
    ours = released_files / "ours.yaml"
    ours.write_text(yaml.safe_dump({"sources": [{"name": "c", "format": "caption", "path": "pixelprose.jsonl",
                                                 "media_root": "cc12m"}]}))
    assert type(Mixture.from_yaml(ours)) is Mixture


def test_train_data_mixture_takes_the_released_file(released_files: Path, synth_dir: Path, tokenizer,
                                                     tmp_path: Path) -> None:
    """``vamba train data.mixture=<released yaml>``: the composed, validated config builds packed rows from it,
    with ``data.max_img_seq_len`` as the ``auto`` budget."""
    from tests.training.conftest import compose_config
    from vamba.training.build import build_dataset
    from vamba.training.config import validate

    config = write_config(released_files, [video_source(released_files, "next_qa", "activitynetqa_processed.json",
                                                         "conversation", "middle", "auto")], "train.yaml")
    cfg = compose_config(f"data.mixture={config}", f"data.tokenizer={synth_dir / 'tokenizer'}",
                         "data.max_img_seq_len=400", "data.packing=true", "data.text_budget=4096",
                         "data.video_budget=4096", "device=cpu", f"output_dir={tmp_path / 'run'}")
    validate(cfg)
    rows = build_dataset(cfg, tokenizer)
    samples = [s for r in range(len(rows)) for s in rows[r]]
    assert len(samples) == 2 and all(s.grid_thw.tolist() == [[5, 10, 10]] for s in samples)


def test_a_data_list_without_paths_is_not_taken_for_ours(released_files: Path) -> None:
    path = released_files / "half.yaml"
    path.write_text(yaml.safe_dump({"data": [{"name": "x", "format": "caption"}]}))
    with pytest.raises(ValueError, match="each `data:` entry needs json_path and data_path"):
        Mixture.from_yaml(path)


def test_a_released_record_leaving_its_data_path_is_a_counted_skip(released_files: Path, tokenizer,
                                                                   tmp_path: Path) -> None:
    """Media confinement holds for released configs too: an ``image`` of ``../..`` or an absolute path is not read
    (data.confine_media, on by default), and is read with it off."""
    root = released_files
    outside = root / "onevision" / "000.jpg"  # a real image, outside the video source's data_path
    (tmp_path / "escape.json").write_text(json.dumps([
        {"id": "up", "image": "../onevision/000.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat grey?"}, {"from": "gpt", "value": "Dark."}]},
        {"id": "abs", "image": str(outside), "conversations": [
            {"from": "human", "value": "<image>\nWhat grey?"}, {"from": "gpt", "value": "Dark."}]}]))
    source = {"data_path": str(root / "LLaVA-Video-178K"), "dataset_type": "image", "format": "conversation",
              "img_do_resize": False, "img_longest_edge": 1280, "img_shortest_edge": 128,
              "json_path": str(tmp_path / "escape.json"), "name": "escape", "shuffle": False, "split": "train"}
    config = write_config(tmp_path, [source])
    for i in range(2):
        with pytest.raises(SampleError, match="leaves data_path"):
            Mixture.from_yaml(config).get(i)
    ds = VambaDataset(Mixture.from_yaml(config, confine_media=False), tokenizer,
                      ProcessingConfig(on_error="raise", max_text_tokens=None))
    assert ds[0].grid_thw.tolist() == [[1, 10, 10]] and ds[1].grid_thw.tolist() == [[1, 10, 10]]
