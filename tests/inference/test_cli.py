"""`vamba chat` through the real CLI entry point: one question, interactive follow-ups, clear errors."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from vamba.cli import main as vamba_main
from vamba.data.sampling import FrameSampling
from vamba.inference.chat import VambaChat


def args(checkpoint: Path, video: Path, *rest: str) -> list[str]:
    return ["chat", f"model.path={checkpoint}", f"video={video}", "num_frames=6", "model.device=cpu",
            "model.dtype=float32", "piece_frames=4", "max_new_tokens=4", *rest]


@pytest.fixture(scope="module")
def expected(checkpoint: Path, synth_dir: Path) -> tuple[str, str, str]:
    chat = VambaChat.from_pretrained(checkpoint, device="cpu", dtype="float32")
    video = chat.encode(synth_dir / "videos" / "video_00000.mp4", sampling=FrameSampling("uniform", 6))
    first = chat.ask(video, "What shape?", max_new_tokens=4)
    follow = chat.ask(video, "Which colour?", history=[("What shape?", first)], max_new_tokens=4)
    fresh = chat.ask(video, "Which colour?", max_new_tokens=4)
    assert all(expected_reply.strip() for expected_reply in (first, follow, fresh))  # nothing vacuous to compare
    return first, follow, fresh


def test_one_question(checkpoint: Path, synth_dir: Path, expected, capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(args(checkpoint, synth_dir / "videos" / "video_00000.mp4", "What shape?")) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == expected[0]
    assert "6 frames" in captured.err and "video tokens" in captured.err


def test_interactive_follow_ups_and_reset(checkpoint: Path, synth_dir: Path, expected, monkeypatch,
                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Which colour?\n/reset\n\nWhich colour?\n/quit\nnever asked\n"))
    assert vamba_main(args(checkpoint, synth_dir / "videos" / "video_00000.mp4", "What shape?", "-i")) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert lines == [expected[0], expected[1], expected[2]]


def test_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(args(checkpoint, tmp_path / "missing.mp4", "Q?")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert vamba_main(args(tmp_path / "nockpt", tmp_path / "missing.mp4", "Q?")) == 2
    assert "checkpoint directory" in capsys.readouterr().err
    assert vamba_main(["chat", "video=x.mp4"]) == 2
    assert "required: model.path=..." in capsys.readouterr().err
    assert vamba_main(["chat", "model.path=x", "video=x.mp4", "num_frame=8"]) == 2
    assert "unknown key num_frame; did you mean num_frames?" in capsys.readouterr().err
    assert vamba_main(["chat", "model.path=x", "video=x.mp4", "do_sample=true", "temperature=0", "Q?"]) == 2
    assert "do_sample=true needs temperature > 0" in capsys.readouterr().err


def test_old_flags_parse_to_the_same_config_with_a_deprecation_line(capsys: pytest.CaptureFixture) -> None:
    from vamba.inference.cli import parse

    old = parse(["--model", "ckpt", "--video", "v.mp4", "--frames", "6", "--device", "cpu", "--dtype", "float32",
                 "--piece-frames", "4", "--max-new-tokens", "4", "--sample", "--top-p=0.5", "Q?", "-i"])
    err = capsys.readouterr().err
    new = parse(["model.path=ckpt", "video=v.mp4", "num_frames=6", "model.device=cpu", "model.dtype=float32",
                 "piece_frames=4", "max_new_tokens=4", "do_sample=true", "top_p=0.5", "question=Q?",
                 "interactive=true"])
    assert old == new and capsys.readouterr().err == ""
    for line in ["--model ckpt is deprecated; write model.path=ckpt", "--frames 6 is deprecated; write num_frames=6",
                 "--sample is deprecated; write do_sample=true", "-i is deprecated; write interactive=true"]:
        assert f"vamba chat: {line}" in err


def test_interactive_video_switch_and_bad_video(checkpoint: Path, synth_dir: Path, tmp_path: Path, monkeypatch,
                                                capsys: pytest.CaptureFixture) -> None:
    other = synth_dir / "lvbench" / "videos" / "synth0001.mp4"
    chat = VambaChat.from_pretrained(checkpoint, device="cpu", dtype="float32")
    want = chat.ask(chat.encode(other, sampling=FrameSampling("uniform", 6)), "What shape?", max_new_tokens=4)
    script = f"/video {tmp_path / 'gone.mp4'}\nWhat shape?\n/video {other}\nWhat shape?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert vamba_main(args(checkpoint, synth_dir / "videos" / "video_00000.mp4", "-i")) == 0
    captured = capsys.readouterr()
    assert "give /video PATH again" in captured.err and "no video encoded" in captured.err
    assert captured.out.strip() == want  # only the question after the successful /video was answered


def test_num_frames_caps_a_checkpoints_rate_as_the_processor_does(checkpoint: Path, synth_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A checkpoint whose processor samples at 1 fps: ``num_frames=6`` is the cap of that rate, in ``vamba chat`` as
    through the processor (chat used to switch to 6 uniform frames)."""
    import shutil

    from vamba.data.video_processor import VambaVideoProcessor

    ckpt = tmp_path / "fps_ckpt"
    shutil.copytree(checkpoint, ckpt)
    VambaVideoProcessor(fps=1.0).save_pretrained(ckpt)
    video = synth_dir / "videos" / "video_00000.mp4"
    sampling = VambaVideoProcessor.from_pretrained(ckpt).frame_sampling(6)
    assert sampling.mode == "fps"
    frames = VambaChat.from_pretrained(ckpt, device="cpu").encode(video, sampling=sampling).frames
    assert vamba_main(args(ckpt, video, "What shape?")) == 0
    assert f"[{frames} frames" in capsys.readouterr().err and frames != 6
