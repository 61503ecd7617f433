"""`vamba data synth` never deletes nor overwrites a file it did not write (issue 28, item 1; docs/reliability.md)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vamba.data.synth import SynthConfig, generate
from vamba.data.synth_files import PARTIAL, OutputFolderInUse

SMALL = {"num_videos": 1, "num_images": 1, "num_bench_videos": 1, "min_frames": 8, "max_frames": 8,
         "tokenizer": False}


def test_a_rerun_keeps_the_users_files_in_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate(SynthConfig(out=str(out), **SMALL))
    (out / "notes.txt").write_text("mine")
    manifest = generate(SynthConfig(out=str(out), **SMALL))
    assert "notes.txt" not in manifest["files"]
    # (before: the first rerun's manifest listed it, and the next rerun deleted it)
    manifest = generate(SynthConfig(out=str(out), **SMALL))
    assert (out / "notes.txt").read_text() == "mine"
    assert set(manifest["files"]) >= {"captions.jsonl", "videos/video_00000.mp4"}
    assert all(set(r) == {"size", "sha256"} for r in manifest["files"].values())
    # a file of the user's inside a folder synth writes: refused, untouched; with overwrite kept and never listed
    (out / "videos" / "my_clip.mp4").write_bytes(b"mine")
    with pytest.raises(OutputFolderInUse, match="videos/my_clip.mp4"):
        generate(SynthConfig(out=str(out), **SMALL))
    for _ in range(2):
        manifest = generate(SynthConfig(out=str(out), overwrite=True, **SMALL))
        assert "videos/my_clip.mp4" not in manifest["files"]
    assert (out / "videos" / "my_clip.mp4").read_bytes() == b"mine" and (out / "notes.txt").read_text() == "mine"


def test_a_hand_edited_manifest_cannot_delete_outside_the_folder_or_a_changed_file(tmp_path: Path, caplog) -> None:
    out = tmp_path / "data"
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    generate(SynthConfig(out=str(out), **SMALL))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["../victim.txt"] = {"size": 7, "sha256": "x"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "captions.jsonl").write_text("edited by the user\n")
    with pytest.raises(OutputFolderInUse, match="captions.jsonl"):
        generate(SynthConfig(out=str(out), **SMALL))
    assert victim.read_text() == "outside"
    assert (out / "captions.jsonl").read_text() == "edited by the user\n"
    assert "victim.txt listed in the old manifest: outside the output folder" in caplog.text
    # an old-style manifest (a list of names) naming a file outside: kept too
    (out / "manifest.json").write_text(json.dumps({"files": ["../victim.txt", "captions.jsonl"]}))
    generate(SynthConfig(out=str(out), **SMALL))
    assert victim.read_text() == "outside"


def test_a_non_empty_folder_without_manifest_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(OutputFolderInUse, match="thesis.tex"):
        generate(SynthConfig(out=str(out), **SMALL))
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]  # nothing written
    (out / "mixture.yaml").write_text("mine")
    manifest = generate(SynthConfig(out=str(out), overwrite=True, **SMALL))
    assert (out / "thesis.tex").read_text() == "mine" and "thesis.tex" not in manifest["files"]
    assert "mixture.yaml" in manifest["files"]  # replaced, as asked: now synth's
    generate(SynthConfig(out=str(out), **SMALL))  # a rerun on its own output needs no overwrite
    assert (out / "thesis.tex").read_text() == "mine"


def test_a_rerun_after_a_killed_run_starts_again_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a user's file, allowed by overwrite=true
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "vamba.cli", "data", "synth", f"out={out}", "num_videos=200",
                             "num_images=0", "num_bench_videos=1", "min_frames=8", "max_frames=8", "tokenizer=false",
                             "overwrite=true"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "videos" / "video_00003.mp4").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / PARTIAL).exists() and not (out / "manifest.json").exists()
    manifest = generate(SynthConfig(out=str(out), **SMALL))
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["video_00000.mp4"]  # the killed run's are gone
    assert (out / "notes.txt").read_text() == "mine" and not (out / PARTIAL).exists()
    assert "videos/video_00003.mp4" not in manifest["files"]
