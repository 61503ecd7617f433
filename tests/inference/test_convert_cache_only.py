"""``vamba convert <hub id>`` reads the local Hugging Face cache and never downloads, even online (docs/model.md)."""
from __future__ import annotations

import httpx
import pytest
from huggingface_hub import constants

from tests.inference.test_convert import fixture_tokenizer
from tests.models.test_hub_cache import REPO_ID, fixture_files, write_hub_cache
from vamba.cli import main as vamba_main


@pytest.fixture()
def online_without_network(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Online mode (HF_HUB_OFFLINE off) whose every HTTP request fails the test: any download attempt shows."""
    def no_network(*args, **kwargs):
        raise AssertionError("vamba convert went to the network")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(httpx.Client, "send", no_network)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_cached_hub_id_converts_without_the_network(online_without_network, tmp_path, capsys) -> None:
    write_hub_cache(online_without_network, REPO_ID, fixture_files(sharded=False))
    tokenizer = fixture_tokenizer(tmp_path / "tok")
    assert vamba_main(["convert", REPO_ID, str(tmp_path / "out"), "--tokenizer", str(tokenizer)]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "out" / "config.json").exists()


def test_an_uncached_hub_id_is_an_error_saying_it_does_not_download(online_without_network, tmp_path,
                                                                     capsys) -> None:
    assert vamba_main(["convert", "someone/not-cached", str(tmp_path / "out")]) == 2
    assert "does not download" in capsys.readouterr().err
