"""Media paths of a data set row stay inside the source's media_root (issue 28 item 8): ``../..`` and absolute
paths are counted skips, not reads; ``confine_media=False`` (``data.confine_media=false``) reads them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from vamba.data.dataset import ProcessingConfig, VambaDataset
from vamba.data.formats import Source
from vamba.data.mixture import Mixture
from vamba.utils.paths import is_inside


def test_is_inside_is_lexical() -> None:
    assert is_inside("/data/media/a/../b.png", "/data/media")
    assert not is_inside("/data/media/../../etc/passwd", "/data/media")
    assert not is_inside("/data/media-other/x.png", "/data/media")
    assert not is_inside("/etc/passwd", "/data/media/")


def _escaping_rows(tmp_path: Path, synth_dir: Path) -> Path:
    """A source in tmp/ds whose rows name a real image outside it: by ``../`` and by an absolute path."""
    outside = tmp_path / "secret.png"
    shutil.copy(synth_dir / "images" / "image_00000.png", outside)
    (tmp_path / "ds" / "media").mkdir(parents=True)
    shutil.copy(outside, tmp_path / "ds" / "media" / "ok.png")
    rows = [{"image": "../secret.png", "caption": "dotdot"}, {"image": str(outside), "caption": "absolute"},
            {"image": "media/ok.png", "caption": "inside"}]
    (tmp_path / "ds" / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ds" / "mixture.yaml").write_text("sources:\n  - {name: s, format: caption, path: ann.jsonl}\n")
    return tmp_path / "ds"


def test_rows_leaving_the_media_root_are_counted_skips(tmp_path: Path, synth_dir: Path, tokenizer) -> None:
    ds_dir = _escaping_rows(tmp_path, synth_dir)
    ds = VambaDataset(Mixture.from_yaml(ds_dir / "mixture.yaml"), tokenizer, ProcessingConfig())
    assert sorted(x is None for x in ds.measure()) == [False, True, True]
    assert ds.skips.counts == {"SampleError": 2}
    source = Source("s", "caption", ds_dir / "ann.jsonl")
    assert source.get(2).media[0].source == str(ds_dir / "media" / "ok.png")


def test_confine_media_false_reads_them(tmp_path: Path, synth_dir: Path, tokenizer) -> None:
    ds_dir = _escaping_rows(tmp_path, synth_dir)
    ds = VambaDataset(Mixture.from_yaml(ds_dir / "mixture.yaml", confine_media=False), tokenizer, ProcessingConfig())
    assert all(x is not None for x in ds.measure())


def test_training_config_key_turns_it_off() -> None:
    from vamba.training.config import DataConfig

    assert DataConfig().confine_media is True
