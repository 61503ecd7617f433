"""`vamba train` end to end on CPU: real configs, real mp4 data, tiny real models, the HF Trainer."""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from tests.training.conftest import compose_config
from vamba.models.presets import TinyDims, tiny_qwen2vl
from vamba.training.build import build_model
from vamba.training.cli import main as train_main
from vamba.training.config import ConfigError
from vamba.training.run import train
from vamba.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _losses(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_jsonl(run_dir / "log.jsonl") if "loss" in r}


def test_loss_falls_when_overfitting_one_batch(train_overrides) -> None:
    cfg = compose_config(*train_overrides, "debug=overfit", "optim.max_steps=12", "stage=sft", "optim.lr=3e-3")
    result = train(cfg)
    losses = [r["loss"] for r in result.log_history if "loss" in r]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5 and losses[-1] == min(losses), losses
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert saved["model_type"] == "vamba" and (result.final_dir / "tokenizer_config.json").exists()
    info = json.loads((result.output_dir / "run_info.json").read_text())
    assert info["environment"]["versions"]["torch"] and info["argv"] and info["world_size"] == 1
    assert "code_commit" in info and (result.output_dir / "config.yaml").read_text().count("stage:") == 1


def test_pretrain_trains_only_new_modules(train_overrides) -> None:
    cfg = compose_config(*train_overrides, "optim.max_steps=2")
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    before = build_model(cfg, tok).state_dict()
    result = train(cfg)
    from vamba.models import VambaForConditionalGeneration

    after = VambaForConditionalGeneration.from_pretrained(str(result.final_dir)).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(".cross_attn." in k or ".vision_mixer." in k or k.endswith(".alpha") for k in changed), changed
    assert not any(k.startswith("model.layers.1.vision_mixer.") for k in changed)  # no effect: frozen
    assert any(".cross_attn." in k for k in changed) and any(k.endswith(".alpha") for k in changed)
    assert "alpha/layer_0" in _losses(result.output_dir)[2]


def test_vision_tower_options_reach_the_model(train_overrides) -> None:
    cfg = compose_config(*train_overrides)
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    assert build_model(cfg, tok).config.vision_attention == "auto"  # the fast vision forward by default
    cfg = compose_config(*train_overrides, "model.vision_attention=reference", "model.vision_compile=true")
    config = build_model(cfg, tok).config
    assert config.vision_attention == "reference" and config.vision_compile is True


def test_fp8_training_runs_its_layers_in_fp8(train_overrides) -> None:
    """model.fp8=all: the decoder's and the merger's linear layers are FP8Linear and the step trains (stage 2)."""
    from vamba.models.fp8 import FP8Linear

    cfg = compose_config(*train_overrides, "stage=sft", "optim.max_steps=2", "model.fp8=all")
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    model = build_model(cfg, tok)
    assert model.config.fp8 == "all" and type(model.model.layers[0].mlp.gate_proj) is FP8Linear
    losses = [r["loss"] for r in train(cfg).log_history if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


class _SlowSave(TrainerCallback):
    """Stands in for a stuck collective: the first step's end (where logging and saving follow) blocks 1.5 s."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            time.sleep(1.5)


def test_stall_dump_prints_every_threads_stack_when_a_step_stalls(train_overrides, capfd) -> None:
    cfg = compose_config(*train_overrides, "optim.max_steps=2", "debug.stall_dump_s=0.5")
    train(cfg, callbacks=[_SlowSave()])
    err = capfd.readouterr().err
    assert "Thread 0x" in err and "in on_step_end" in err, err[-2000:]
    capfd.readouterr()
    time.sleep(0.8)  # the watchdog is disarmed once training ends
    assert "Thread 0x" not in capfd.readouterr().err


def test_profile_steps_record_the_listed_steps_only(train_overrides) -> None:
    cfg = compose_config(*train_overrides, "optim.max_steps=3", "debug.profile_steps=[2]")
    result = train(cfg)
    profile = result.output_dir / "profile"
    assert sorted(p.name for p in profile.iterdir()) == ["step2_rank0.json.gz", "step2_rank0.txt"]
    table = (profile / "step2_rank0.txt").read_text()
    assert table.startswith("optimizer step 2, rank 0:") and "aten::mm" in table  # the model's matmuls were recorded
    with gzip.open(profile / "step2_rank0.json.gz", "rt") as f:
        events = json.load(f)["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    assert sorted(_losses(result.output_dir)) == [1, 2, 3]  # the run itself went on
    with pytest.raises(ConfigError, match=r"debug.profile_steps=\[0\]"):
        train(compose_config(*train_overrides, "debug.profile_steps=[0]"))


def test_lambda_zero_never_builds_a_teacher(train_overrides) -> None:
    # The teacher path does not exist: any attempt to load it would fail the run.
    cfg = compose_config(*train_overrides, "optim.max_steps=1", "stage.distill.weight=0",
                         "stage.distill.teacher=/nonexistent/qwen2vl")
    result = train(cfg)
    assert "distill_loss" not in _losses(result.output_dir)[1]


def test_lora_sft_trains_adapters_and_merger(train_overrides) -> None:
    # LoRA on the decoder's linear layers, the merger in full (stage.lora.train_in_full), nothing else
    cfg = compose_config(*train_overrides, "stage=sft", "stage.lora.enable=true", "stage.lora.r=4",
                         "stage.lora.train_in_full=[visual.merger.*]", "optim.max_steps=2")
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    before = build_model(cfg, tok).state_dict()
    result = train(cfg)
    from vamba.models import VambaForConditionalGeneration

    after = VambaForConditionalGeneration.from_pretrained(str(result.final_dir)).state_dict()
    assert set(after) == set(before)  # merged: the checkpoint has the plain layout
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("visual.merger.") for k in changed)
    assert any(".self_attn.q_proj.weight" in k for k in changed)  # LoRA delta merged into the weight
    assert not any(k.startswith("visual.blocks.") for k in changed)
    assert not any(".input_layernorm." in k or "embed_tokens" in k for k in changed)


def test_cli_overrides_and_errors(train_overrides, capsys) -> None:
    assert train_main([*train_overrides, "optim.max_steps=1"]) == 0
    out_dir = Path(next(o.split("=", 1)[1] for o in train_overrides if o.startswith("output_dir=")))
    assert (out_dir / "final" / "config.json").exists() and (out_dir / ".hydra" / "overrides.yaml").exists()
    with pytest.raises(SystemExit) as e:
        train_main([*train_overrides, "data.mixture=/missing.yaml"])
    assert e.value.code == 2 and "data.mixture='/missing.yaml'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_gloo_data_parallel_step(train_overrides, tmp_path) -> None:
    """Also the exit: a rank used to abort after a run that succeeded ("terminate called without an active
    exception", about 1 run in 8 here) until the process skipped the interpreter's finalisation
    (vamba.utils.distributed.end_process; 0 aborts in 37 runs on 2026-12-07)."""
    out = tmp_path / "ddp"
    overrides = [o for o in train_overrides if not o.startswith(("output_dir=", "optim.global_batch_size="))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "vamba.cli", "train", *overrides, f"output_dir={out}", "optim.global_batch_size=4",
           "optim.max_steps=2", "logging.save_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["world_size"] == 2
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(math.isfinite(r["loss"]) for r in losses.values())
    assert (out / "checkpoint-2").is_dir() and (out / "final" / "model.safetensors").exists()


def _teacher_dir(synth: Path, tmp_path: Path) -> Path:
    tok = AutoTokenizer.from_pretrained(synth / "tokenizer")
    dims = TinyDims(hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, vision_depth=1,
                    vision_embed_dim=16)
    teacher = tiny_qwen2vl(tok, dims, seed=3)
    teacher.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def _reference_teacher_logits(teacher, ids: list[int], grids: torch.Tensor, pixels: torch.Tensor, start: int,
                              pad: int) -> torch.Tensor:
    """Teacher logits at one sample's text tokens, its input written in Qwen2-VL's own format (pads inline)."""
    full, k = [], 0
    for t in ids:
        full.append(t)
        if t == start:
            full += [pad] * (int(grids[k].prod()) // 4)
            k += 1
    x = torch.tensor([full])
    kwargs = {}
    if len(grids):
        kwargs = dict(pixel_values_videos=pixels, video_grid_thw=grids, mm_token_type_ids=(x == pad).int() * 2)
    return teacher(input_ids=x, **kwargs).logits[0, x[0] != pad]


def test_distillation_loss_equals_hand_computation(train_overrides, synth, tmp_path) -> None:
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.data.collate import Collator
    from vamba.data.dataset import VambaDataset
    from vamba.data.mixture import Mixture
    from vamba.training.build import data_config

    teacher_dir = _teacher_dir(synth, tmp_path)
    lam, k = 0.5, 8
    cfg = compose_config(*train_overrides, f"model.path={teacher_dir}", f"stage.distill.weight={lam}",
                         f"stage.distill.teacher={teacher_dir}", f"stage.distill.top_k={k}", "debug.overfit_batches=1",
                         "optim.max_steps=1")
    logged = _losses(train(cfg).output_dir)[1]

    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    student = build_model(cfg, tok)  # same seed: the weights the run started from
    samples = [VambaDataset(Mixture.from_yaml(cfg.data.mixture), tok, data_config(cfg.data, None))[i] for i in (0, 1)]
    batch = Collator(tok.pad_token_id)(samples)
    teacher = Qwen2VLForConditionalGeneration.from_pretrained(teacher_dir).eval()
    start, pad = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|video_pad|>")
    with torch.no_grad():
        out = student(**batch, return_logits=True)
        kls = []
        for b, s in enumerate(samples):
            t_logits = _reference_teacher_logits(teacher, s.input_ids.tolist(), s.grid_thw, s.pixel_values, start, pad)
            for t in range(len(s.input_ids) - 1):
                if s.labels[t + 1] == -100:
                    continue
                top = t_logits[t].topk(k).indices
                p = torch.softmax(t_logits[t][top], -1)
                log_q = torch.log_softmax(out.logits[b, t][top], -1)
                kls.append((p * (p.log() - log_q)).sum())
    hand_kl = torch.stack(kls).mean().item()
    assert logged["lm_loss"] == pytest.approx(out.loss.item(), abs=2e-4)
    assert logged["distill_loss"] == pytest.approx(hand_kl, abs=2e-4)
    assert logged["loss"] == pytest.approx(out.loss.item() + lam * hand_kl, abs=5e-4)


def test_cached_teacher_gives_the_online_losses(train_overrides, synth, tmp_path) -> None:
    from vamba.training.cli import distill_cache_main
    from vamba.training.distill_cache import TopKCache

    teacher_dir = _teacher_dir(synth, tmp_path)
    common = [*train_overrides, f"model.path={teacher_dir}", "stage.distill.weight=1.0", "stage.distill.top_k=8",
              f"stage.distill.teacher={teacher_dir}", "optim.max_steps=3"]
    cache = tmp_path / "cache"
    assert distill_cache_main([*common, f"stage.distill.cache_dir={cache}"]) == 0
    assert len(TopKCache(cache)) > 0
    online = _losses(train(compose_config(*common, f"output_dir={tmp_path / 'online'}")).output_dir)
    cached = _losses(train(compose_config(*common, "stage.distill.source=cache", f"stage.distill.cache_dir={cache}",
                                          f"output_dir={tmp_path / 'cached'}")).output_dir)
    for step in (1, 2, 3):
        assert cached[step]["lm_loss"] == pytest.approx(online[step]["lm_loss"], abs=1e-3)
        # the cache stores bf16 logits: equal up to that rounding
        assert cached[step]["distill_loss"] == pytest.approx(online[step]["distill_loss"], rel=2e-2, abs=2e-3)


def test_optimizer_groups_exempt_ssm_norm_bias_and_alpha_from_decay(train_overrides) -> None:
    from transformers import TrainingArguments

    from vamba.models.presets import special_token_ids
    from vamba.training.build import apply_stage
    from vamba.training.trainer import VambaTrainer

    cfg = compose_config(*train_overrides)
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    model = build_model(cfg, tok)
    apply_stage(model, cfg.stage)
    args = TrainingArguments(output_dir=cfg.output_dir, weight_decay=0.01, use_cpu=True, report_to="none")
    trainer = VambaTrainer(model=model, args=args,
                           token_ids={**special_token_ids(tok), "pad_token_id": tok.pad_token_id})
    groups = trainer.create_optimizer().param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay and plain and not decay & plain
    assert decay | plain == {n for n, p in model.named_parameters() if p.requires_grad}
    for suffix in (".A_log", ".D", ".dt_bias", ".alpha", ".norm.weight", ".conv1d.bias"):
        assert any(n.endswith(suffix) for n in plain), suffix
        assert not any(n.endswith(suffix) for n in decay), suffix
    assert any(n.endswith("cross_attn.q_proj.weight") for n in decay)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_zero_with_mixed_batches_saves_and_resumes(train_overrides, synth, tmp_path, stage) -> None:
    """DeepSpeed ZeRO-2/3 over gloo with mixed batches (no hang), a checkpoint after 2 steps, the resumed run
    continues to step 4; ZeRO-2 trains LoRA (the released scripts' LoRA setting), whose final/ is the merged model
    (the Trainer's own save kept only the adapters). Skipped without deepspeed (the ``train`` extra)."""
    pytest.importorskip("deepspeed")
    text = [{"id": f"t{i}", "conversations": [{"from": "human", "value": f"Count to {i + 2}."},
                                             {"from": "gpt", "value": " ".join(map(str, range(1, i + 3)))}]}
            for i in range(4)]
    (tmp_path / "text.json").write_text(json.dumps(text))
    # half the samples are text-only and each rank takes one per step: over 4 steps ranks meet batches with
    # and without video at the same time (the model then runs its video path on a dummy item)
    (tmp_path / "mixed.yaml").write_text(
        "seed: 0\nsources:\n"
        f"  - {{name: video, format: llava, path: {synth / 'llava_video.json'}, num_samples: 4}}\n"
        f"  - {{name: text, format: llava, path: {tmp_path / 'text.json'}}}\n")
    out = tmp_path / f"zero{stage}"
    overrides = [o for o in train_overrides if not o.startswith(("output_dir=", "optim.global_batch_size=",
                                                                "optim.per_device_batch_size=", "data.mixture="))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29540 + stage),
           "-m", "vamba.cli", "train", *overrides, f"output_dir={out}", f"data.mixture={tmp_path / 'mixed.yaml'}",
           f"deepspeed=zero{stage}", "optim.per_device_batch_size=1", "optim.global_batch_size=2",
           "optim.max_steps=4", "logging.save_steps=2", *(["stage=sft", "stage.lora.enable=true", "stage.lora.r=4"]
                                                          if stage == 2 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.run([*cmd, "debug.stop_after_steps=2"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoint-2").is_dir() and not (out / "final").exists()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(_losses(out)) == [1, 2, 3, 4]
    assert (out / "final" / "config.json").exists()
    from safetensors import safe_open

    with safe_open(out / "final" / "model.safetensors", "pt") as f:  # our layout, LoRA merged
        assert "model.layers.0.self_attn.q_proj.weight" in f.keys() and not any("lora_" in k for k in f.keys())


def test_an_empty_training_file_is_an_error_naming_it(train_overrides, tmp_path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "mix.yaml").write_text("sources:\n  - {name: caps, format: caption, path: empty.jsonl}\n")
    cfg = compose_config(*train_overrides, f"data.mixture={tmp_path / 'mix.yaml'}", "optim.max_steps=1")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty.jsonl'} has no records"):
        train(cfg)


def test_checkpoints_carry_the_processor(train_overrides) -> None:
    """final/ and every checkpoint-N/ load with AutoProcessor as a VambaProcessor holding the run's frames and
    resize settings (and the model with AutoModelForImageTextToText)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vamba.data.processor import VambaProcessor
    from vamba.data.sampling import FrameSampling
    from vamba.models import VambaForConditionalGeneration

    cfg = compose_config(*train_overrides, "optim.max_steps=2", "logging.save_steps=1", "data.sampling=random",
                         "data.max_pixels=40000", "stage=sft")
    result = train(cfg)
    for folder in (result.output_dir / "checkpoint-1", result.output_dir / "checkpoint-2", result.final_dir):
        processor = AutoProcessor.from_pretrained(folder)
        assert isinstance(processor, VambaProcessor), folder
        assert processor.frame_sampling() == FrameSampling("uniform", 4)
        assert (processor.vision_config().min_pixels, processor.vision_config().max_pixels) == (56 * 56, 40000)
        assert processor.image_processor.size.longest_edge == 40000
        assert not list(folder.parent.glob(f".{folder.name}.processor.*"))  # the temporary folder is gone
    assert isinstance(AutoModelForImageTextToText.from_pretrained(result.final_dir), VambaForConditionalGeneration)


def test_uint8_pixels_train_exactly_as_float32(train_overrides, synth, tmp_path) -> None:
    """data.pixel_dtype=uint8: the workers send the frames' uint8 values in the patch layout, the trainer (and the
    teacher's view) normalise them; the losses, distillation included, equal float32 pixel_values' bit for bit."""
    teacher_dir = _teacher_dir(synth, tmp_path)
    common = [o for o in train_overrides if not o.startswith("output_dir=")]
    common += [f"model.path={teacher_dir}", "stage.distill.weight=0.5", f"stage.distill.teacher={teacher_dir}",
               "stage.distill.top_k=8", "optim.max_steps=2"]
    losses = {}
    for dtype in ("float32", "uint8"):
        cfg = compose_config(*common, f"data.pixel_dtype={dtype}", f"output_dir={tmp_path / dtype}")
        losses[dtype] = [(r["loss"], r["lm_loss"], r["distill_loss"]) for r in _losses(train(cfg).output_dir).values()]
    assert len(losses["uint8"]) == 2 and losses["uint8"] == losses["float32"]
    from vamba.training.build import build_dataset

    dataset = build_dataset(cfg, AutoTokenizer.from_pretrained(cfg.data.tokenizer))
    pixels = [dataset[i].pixel_values for i in range(len(dataset))]
    assert all(p.dtype == torch.uint8 for p in pixels) and any(p.numel() for p in pixels)


def test_a_teacher_without_a_distillation_weight_is_said(train_overrides, caplog) -> None:
    """lambda = 0 loads no teacher: a teacher given anyway (a path that does not even exist) trains without
    distillation, and the log says so rather than nothing."""
    train(compose_config(*train_overrides, "optim.max_steps=1", "stage.distill.teacher=does/not/exist"))
    assert "stage.distill.weight=0: no distillation; stage.distill.teacher=does/not/exist is not used" in caplog.text


def test_a_trainable_pattern_that_matches_nothing_is_a_config_error(train_overrides, capsys) -> None:
    """A typo in stage.trainable: one line naming the key and exit code 2 (it was a ValueError traceback, exit 1)."""
    with pytest.raises(SystemExit) as e:
        train_main([*train_overrides, "optim.max_steps=1", "stage.trainable=[*.cros_attn.*]"])
    assert e.value.code == 2
    assert "stage.trainable: trainable pattern(s) ['*.cros_attn.*'] match no parameter" in capsys.readouterr().err
