"""The lmms-eval plugin. lmms-eval itself pins torchvision, wandb==0.25 and av<16, which break this
environment, so CI does not install it: the bridge is tested against lmms-eval's request API (``args``
tuples, ``task_dict[task][split][doc_id]``), and the real ``lmms`` subclass + registry path runs
whenever lmms-eval is importable (``pip install --no-deps lmms-eval loguru pytz``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vamba.evaluation.interface import FrameSettings
from vamba.evaluation.lmms_eval_adapter import (
    CLASS_PATH,
    FrameOverrides,
    LmmsEvalBridge,
    benchmark_for_task,
    edge_arg,
    generation_from_kwargs,
)

from .minibench import Faulty

ROOT = Path(__file__).resolve().parents[2]


def _doc_to_visual(doc: dict) -> list[str]:
    return [doc["video_path"]]


def _task(tmp_path: Path) -> tuple[dict, list[dict], list[dict]]:
    docs = [{"video_path": str(tmp_path / "a.mp4"), "question": "Q0"},
            {"video_path": str(tmp_path / "b.mp4"), "question": "Q1"},
            {"video_path": str(tmp_path / "a.mp4"), "question": "Q2"}]
    records = [{"video": d["video_path"], "prompt": d["question"] + "\nAnswer with the option letter",
                "response": f"{'CAB'[i]}\n\nBecause..."} for i, d in enumerate(docs)]
    return {"lvbench": {"train": docs}}, docs, records


def _args(docs: list[dict], kwargs: dict) -> list[tuple]:
    return [(d["question"] + "\nAnswer with the option letter", dict(kwargs), _doc_to_visual, i, "lvbench", "train")
            for i, d in enumerate(docs)]


def test_importing_the_adapter_needs_no_lmms_eval() -> None:
    code = "import sys, vamba.evaluation.lmms_eval_adapter as a; assert 'lmms_eval' not in sys.modules; print(a.MODEL_ID)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "vamba", out.stderr


def test_entry_point_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib needs Python 3.11; we support 3.10)
    section = text.split('[project.entry-points."lmms_eval.models"]\n', 1)[1].split("\n[", 1)[0]
    assert section.strip() == 'vamba = "vamba.evaluation.lmms_eval_adapter:manifest"'
    assert CLASS_PATH == "vamba.evaluation.lmms_eval_adapter.VambaLmms"


def test_bridge_encodes_each_video_once_and_keeps_request_order(tmp_path: Path) -> None:
    task_dict, docs, records = _task(tmp_path)
    model = Faulty(records)
    bridge = LmmsEvalBridge(model, FrameSettings(8))
    requests = [SimpleNamespace(args=a) for a in _args(docs, {"max_new_tokens": 16, "until": ["\n\n"]})]
    assert bridge.generate_until(requests, task_dict) == ["C", "A", "B"]  # cut at the stop string
    assert model.videos_encoded == 2
    assert [g.max_new_tokens for g in model.answered] == [16, 16, 16] and not model.answered[0].do_sample


class Recording(Faulty):
    """Remembers the frame settings each video was encoded with."""

    def __init__(self, records) -> None:
        super().__init__(records)
        self.frames: dict[str, FrameSettings] = {}

    def encode_video(self, video):
        self.frames[video.path] = video.frames
        return super().encode_video(video)


def test_each_task_gets_its_own_protocol_frames(tmp_path: Path) -> None:
    """Frames come from our benchmark modules per lmms-eval task, not one task's numbers for all."""
    tasks = ("lvbench", "videomme_w_subtitle", "hourvideo", "nextqa_mc_test")
    docs = [{"video_path": str(tmp_path / f"{task}.mp4"), "question": f"Q{i}"} for i, task in enumerate(tasks)]
    task_dict = {task: {"test": [doc]} for task, doc in zip(tasks, docs)}
    records = [{"video": d["video_path"], "prompt": d["question"], "response": "A"} for d in docs]
    requests = [SimpleNamespace(args=(d["question"], {}, _doc_to_visual, 0, task, "test"))
                for task, d in zip(tasks, docs)]
    model = Recording(records)
    assert LmmsEvalBridge(model, FrameOverrides()).generate_until(requests, task_dict) == ["A"] * 4
    edges = {Path(path).stem: (f.num_frames, f.shortest_edge, f.longest_edge) for path, f in model.frames.items()}
    assert edges == {"lvbench": (1024, 256, 560), "videomme_w_subtitle": (512, 256, 480),
                     "hourvideo": (128, 256, 360), "nextqa_mc_test": (512, None, None)}

    # model_args override what they name; native resolution can be asked for
    model = Recording(records)
    LmmsEvalBridge(model, FrameOverrides(64, edge_arg("native", "shortest_edge"), edge_arg(None, "longest_edge"))
                   ).generate_until(requests[:1], task_dict)
    assert model.frames[docs[0]["video_path"]] == FrameSettings(64, shortest_edge=None, longest_edge=None)


def test_frame_model_args() -> None:
    assert [edge_arg(v, "shortest_edge") for v in ("native", "None", None, "336", 448, "protocol")] == \
        [None, None, None, 336, 448, "protocol"]
    with pytest.raises(ValueError, match="shortest_edge='big'"):
        edge_arg("big", "shortest_edge")
    assert [benchmark_for_task(t) for t in ("mvbench_action_count", "longvideobench_val_v", "mlvu_dev", "egoschema")] \
        == ["mvbench", "longvideobench", "mlvu", None]
    assert FrameOverrides(16).for_task("egoschema") == FrameSettings(16)  # other tasks: frames must be given
    with pytest.raises(ValueError, match="'egoschema' is none of our benchmarks.*num_frames"):
        FrameOverrides().for_task("egoschema")


def test_generation_kwargs() -> None:
    greedy = generation_from_kwargs({"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "do_sample": False})
    assert (greedy.max_new_tokens, greedy.do_sample) == (16, False)
    sampled = generation_from_kwargs({"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (True, 0.7, 0.9, 128)
    assert not generation_from_kwargs({"do_sample": True, "temperature": 0}).do_sample  # lmms-eval: T=0 is greedy


def test_bridge_refuses_several_visuals(tmp_path: Path) -> None:
    task_dict, docs, records = _task(tmp_path)
    args = list(_args(docs, {})[0])
    args[2] = lambda doc: [doc["video_path"], doc["video_path"]]
    with pytest.raises(ValueError, match="one video per question"):
        LmmsEvalBridge(Faulty(records), FrameSettings(8)).generate_until([SimpleNamespace(args=tuple(args))], task_dict)


def test_with_real_lmms_eval(tmp_path: Path) -> None:
    pytest.importorskip("lmms_eval.api.model", reason="lmms-eval is not installed")
    import json

    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from vamba.evaluation.lmms_eval_adapter import manifest

    registry = ModelRegistryV2()
    registry.register_manifest(manifest())
    cls = registry.get_model_class("vamba")  # validates: an lmms subclass, simple
    assert issubclass(cls, lmms) and cls.__name__ == "VambaLmms"

    task_dict, docs, records = _task(tmp_path)
    replay = tmp_path / "replies.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = cls.create_from_arg_string(f"replay={replay},num_frames=8,shortest_edge=None,longest_edge=native")
    assert (model.rank, model.world_size) == (0, 1)
    assert model.bridge.frames_for("lvbench") == FrameSettings(8, shortest_edge=None, longest_edge=None)
    assert cls.create_from_arg_string(f"replay={replay}").bridge.frames_for("lvbench").num_frames == 1024
    model.task_dict = task_dict
    requests = [Instance(request_type="generate_until", arguments=a, idx=0,
                         metadata={"task": "lvbench", "doc_id": a[3], "repeats": 1})
                for a in _args(docs, {"until": ["\n\n"], "max_new_tokens": 16})]
    assert model.generate_until(requests) == ["C", "A", "B"]
    with pytest.raises(ValueError, match="pretrained=<checkpoint>"):
        cls()
