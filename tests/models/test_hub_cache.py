"""A hub model id resolves from the local Hugging Face cache with HF_HUB_OFFLINE=1 (tests/conftest.py sets it):
the cache is laid out as huggingface_hub lays it (models--org--name/{refs/main, snapshots/<commit>/, blobs/})
and holds the official fixture, as one file and as shards with an index."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors.torch import load_file, save

from tests.models.test_official_fixture import FIXTURE, INPUT_NAMES, relative_error
from vamba.models import VambaForConditionalGeneration
from vamba.models.loading import checkpoint_keys
from vamba.utils.io import read_checkpoint_json

REPO_ID = "vamba-tests/Vamba-Tiny-Official"  # made up: nothing by that name need exist on the hub
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def blob_name(data: bytes, lfs: bool) -> str:
    """The blob file name huggingface_hub uses: the file's sha256 for LFS files (weights), its git blob id otherwise."""
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out as a download of ``repo_id`` at COMMIT; returns the snapshot directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = repo / "blobs" / blob_name(data, lfs=name.endswith(".safetensors"))
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def fixture_files(sharded: bool) -> dict[str, bytes]:
    files = {"config.json": (FIXTURE / "config.json").read_bytes()}
    if not sharded:
        files["model.safetensors"] = (FIXTURE / "model.safetensors").read_bytes()
        return files
    state = load_file(str(FIXTURE / "model.safetensors"))
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        files[file] = save({k: state[k] for k in part}, metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


@pytest.mark.parametrize("sharded", [False, True], ids=["one file", "sharded"])
def test_hub_id_loads_from_the_local_cache_offline(tmp_path, sharded):
    assert constants.HF_HUB_OFFLINE  # no network: the cache alone must do
    cache = tmp_path / "hub"
    write_hub_cache(cache, REPO_ID, fixture_files(sharded))
    hub = {"cache_dir": str(cache)}
    assert try_to_load_from_cache(REPO_ID, "config.json", cache_dir=str(cache)) is not None  # a real cache layout
    # Our own path logic goes through the cache, not the file system.
    assert read_checkpoint_json(REPO_ID, "config.json", hub)["vision_mamba_mixer_config"]["enable"] is True
    assert (read_checkpoint_json(REPO_ID, "model.safetensors.index.json", hub) is None) is not sharded
    keys = checkpoint_keys(REPO_ID, hub)
    assert len(keys) == 92 and "model.layers.1.vision_mixer.mixer.A_log" in keys
    model = VambaForConditionalGeneration.from_pretrained(REPO_ID, cache_dir=str(cache), dtype=torch.float32).eval()
    io = load_file(str(FIXTURE / "io.safetensors"))
    with torch.no_grad():
        logits = model(**{k: io[k] for k in INPUT_NAMES}).logits
    assert relative_error(logits, io["logits_fp32"]) < 1e-4


def test_a_hub_id_missing_from_the_cache_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{REPO_ID}: no config.json: .* Hugging Face cache {tmp_path} "
                                                r"\(offline: HF_HUB_OFFLINE=1\)"):
        VambaForConditionalGeneration.from_pretrained(REPO_ID, cache_dir=str(tmp_path))
