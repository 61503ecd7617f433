from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vamba.data.mixture import Mixture, load_mixture_config


def _write(tmp_path: Path, synth_dir: Path, body: str) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(body.replace("ROOT", str(synth_dir)))
    return path


def test_synthetic_mixture_weights(synth_dir: Path) -> None:
    mix = Mixture.from_yaml(synth_dir / "mixture.yaml")
    counts = Counter(mix.source_name(i) for i in range(len(mix)))
    # captions x1 (10), video QA x2 (12: every record twice), image QA x1 (4)
    assert counts == {"synth_captions": 10, "synth_video_qa": 12, "synth_image_qa": 4}
    per_record = Counter(mix.order[i] for i in range(len(mix)) if mix.source_name(i) == "synth_video_qa")
    assert set(per_record.values()) == {2}
    again = Mixture.from_yaml(synth_dir / "mixture.yaml")
    assert again.order == mix.order


def test_counts_subsample_and_seed(tmp_path: Path, synth_dir: Path) -> None:
    body = """
seed: {seed}
sources:
  - {{name: caps, format: caption, path: ROOT/captions.jsonl, num_samples: 3}}
  - {{name: vids, format: llava, path: ROOT/llava_video.json, weight: 0.5}}
"""
    a = Mixture.from_yaml(_write(tmp_path, synth_dir, body.format(seed=1)))
    b = Mixture.from_yaml(_write(tmp_path, synth_dir, body.format(seed=2)))
    assert len(a) == len(b) == 6
    assert len(set(a.order)) == 6  # subsampling never repeats a record
    assert a.order != b.order
    assert a.get(0).key.split(":")[0] in ("caps", "vids")


def test_relative_paths_resolve_against_the_yaml(synth_dir: Path) -> None:
    cfg = load_mixture_config(synth_dir / "mixture.yaml")
    assert cfg.sources[0].path == str(synth_dir / "captions.jsonl")


@pytest.mark.parametrize("body, match", [
    ("sources:\n  - {name: a, format: caption, path: ROOT/captions.jsonl, wieght: 2}\n", r"unknown key\(s\) \['wieght'\]"),
    ("sources: []\n", "non-empty 'sources'"),
    ("sources:\n  - {name: a, format: caption, path: ROOT/captions.jsonl, weight: 1, num_samples: 2}\n",
     "not both"),
    ("sources:\n  - {name: a, format: caption, path: ROOT/captions.jsonl}\n"
     + "  - {name: a, format: caption, path: ROOT/captions.jsonl}\n", "unique"),
    ("seed: 0\nshuffle: true\nsources:\n  - {name: a, format: caption, path: ROOT/captions.jsonl}\n",
     r"unknown key\(s\) \['shuffle'\]"),
])
def test_config_errors(tmp_path: Path, synth_dir: Path, body: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_mixture_config(_write(tmp_path, synth_dir, body))


def test_missing_annotation_file(tmp_path: Path, synth_dir: Path) -> None:
    path = _write(tmp_path, synth_dir, "sources:\n  - {name: a, format: caption, path: nope.jsonl}\n")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        Mixture.from_yaml(path)


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("empty.json", "[]"), ("blank.json", "")])
def test_an_empty_component_is_an_error_naming_its_file(tmp_path: Path, synth_dir: Path, name: str,
                                                        content: str) -> None:
    (tmp_path / name).write_text(content)
    body = f"sources:\n  - {{name: caps, format: caption, path: ROOT/captions.jsonl}}\n" \
           f"  - {{name: none, format: caption, path: {tmp_path / name}, weight: 1}}\n"
    with pytest.raises(ValueError, match=f"{tmp_path / name}"):
        Mixture.from_yaml(_write(tmp_path, synth_dir, body))


def test_a_mixture_without_samples_is_an_error(tmp_path: Path, synth_dir: Path) -> None:
    body = "sources:\n  - {name: caps, format: caption, path: ROOT/captions.jsonl, weight: 0}\n"
    with pytest.raises(ValueError, match=r"\['caps'\] gives no samples"):
        Mixture.from_yaml(_write(tmp_path, synth_dir, body))
