"""``vamba train experiment=demo``: the whole VAMBA recipe, end to end, on a CPU with nothing downloaded.

1. data       ``vamba.data.synth``: real H.264 videos of shapes with questions that need the whole video
              (needle colour, event order, counting), captions, images and a tokenizer (seed 0); the
              held-out benchmark is a second synthetic set (seed 1) in the official LVBench layout.
2. teacher    a tiny ``Qwen2VLForConditionalGeneration`` (transformers' own class) trained on all of it:
              it stands in for the pretrained Qwen2-VL that cannot be downloaded here.
3. convert    ``VambaForConditionalGeneration.from_pretrained(teacher)``: cross-attention from self-attention.
4. pretrain   stage 1: cross-attention, Mamba-2 blocks and alpha train on captions,
              LM loss + lambda * KL(teacher || VAMBA), the teacher run online on each batch.
5. sft        stage 2: merger + language model on the instruction data.
6. evaluate   both models with the evaluation harness (LVBench protocol: its prompt and answer extraction,
              frames and resolution of the demo) and print accuracy against chance.

Every stage writes into ``output_dir`` and is skipped when its output already exists, so an interrupted
demo continues where it stopped. Numbers go to ``results.json`` and ``results.md``.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vamba.recipes.config import DemoConfig, DemoTrainConfig, validate_demo
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.logging import get_logger

logger = get_logger(__name__)
CHANCE = 25.0  # four options
TEACHER, VAMBA = "Qwen2-VL teacher (transformer)", "VAMBA (after pretrain + sft)"


def _synth(out: Path, seed: int, videos: int, images: int, bench: int, d: DemoConfig) -> Path:
    from vamba.data.synth import SynthConfig, generate

    if not (out / "manifest.json").exists():
        generate(SynthConfig(out=str(out), num_videos=videos, num_images=images, num_bench_videos=bench,
                             size=d.frame_size, min_frames=32, max_frames=64, seed=seed,
                             shuffle_options=d.shuffle_options, order_question=d.order_question,
                             tasks=tuple(d.tasks), workers=d.data_workers))
    return out


def _protocol(frames: int, max_new_tokens: int = 4):
    """LVBench's VAMBA protocol (prompt, extraction, greedy) at the demo's frame count and native resolution."""
    from vamba.evaluation.benchmarks import get_benchmark
    from vamba.evaluation.runner import resolve_protocol

    benchmark = get_benchmark("lvbench")
    spec = resolve_protocol(benchmark, "vamba", num_frames=frames, max_new_tokens=max_new_tokens)
    frames_ = dataclasses.replace(spec.frames, shortest_edge=None, longest_edge=None)
    return benchmark, dataclasses.replace(spec, frames=frames_)


def held_out_questions(cfg: DemoTrainConfig, data: dict[str, Path]) -> list:
    """The held-out benchmark's questions (``vamba.evaluation`` ``Question``s) in benchmark order."""
    benchmark, _ = _protocol(cfg.demo.num_frames)
    return benchmark.load(data["bench"], {})


def _reply(question, explain: bool) -> str:
    """The training reply: the letter, or (``demo.explain``) the option's text first, verbatim (the same
    tokens as in the prompt, so the letter is found by matching them), then "The answer is X." (the
    LVBench/VAMBA extractor reads the letter after "the answer is"): the model names what it saw before it
    has to find that option's letter."""
    if not explain:
        return question.answer
    return f"{_option_text(question)}. The answer is {question.answer}."


def _option_text(question) -> str:
    return next(x for x in question.question.split("\n") if x.startswith(f"({question.answer})"))[4:].strip()


def write_data(cfg: DemoTrainConfig, out: Path) -> dict[str, Path]:
    """Synthetic training data, the multiple-choice instruction files and the mixtures the stages use."""
    d = cfg.demo
    train = _synth(out / "train", 0, d.num_videos, d.num_images, d.num_mc_videos, d)
    bench = _synth(out / "bench", 1, 0, 0, d.num_bench_videos, d)
    # Multiple-choice training questions: the training set's own benchmark split, phrased exactly as the
    # evaluation prompts (the held-out benchmark uses other videos: seed 1).
    benchmark, spec = _protocol(d.num_frames)
    mc = [{"id": f"mc_{q.qid}", "video": os.path.relpath(q.video, train), "conversations": [
        {"from": "human", "value": "<video>\n" + spec.prompt(q)}, {"from": "gpt", "value": _reply(q, d.explain)}]}
        for q in benchmark.load(train / "lvbench", {})]
    atomic_write_json(train / "llava_video_mc.json", mc)
    # The same questions without their videos, the correct option's text given in the question: they teach
    # the option -> letter lookup that a pretrained LLM brings and a tiny model trained from scratch lacks
    # (without them both models learn to name what they saw but answer one fixed letter).
    text_mc = [{"id": f"text_mc_{q.qid}", "conversations": [
        {"from": "human", "value": spec.prompt(dataclasses.replace(
            q, question=f'The correct option is "{_option_text(q)}". ' + q.question))},
        {"from": "gpt", "value": _reply(q, d.explain)}]} for q in benchmark.load(train / "lvbench", {})]
    atomic_write_json(train / "llava_text_mc.json", text_mc)
    atomic_write_text(train / "pretrain.yaml", "seed: 0\nsources:\n"
                      "  - {name: captions, format: caption, path: captions.jsonl}\n")
    atomic_write_text(train / "sft.yaml", "seed: 0\nsources:\n"
                      "  - {name: video_mc, format: llava, path: llava_video_mc.json, weight: 2.0}\n"
                      "  - {name: text_mc, format: llava, path: llava_text_mc.json, weight: 2.0}\n"
                      "  - {name: video_qa, format: llava, path: llava_video.json}\n"
                      "  - {name: image_qa, format: llava, path: llava_image.json, weight: 0.5}\n")
    atomic_write_text(train / "all.yaml", "seed: 0\nsources:\n"
                      "  - {name: captions, format: caption, path: captions.jsonl}\n"
                      "  - {name: video_mc, format: llava, path: llava_video_mc.json}\n"
                      "  - {name: text_mc, format: llava, path: llava_text_mc.json, weight: 2.0}\n"
                      "  - {name: video_qa, format: llava, path: llava_video.json}\n"
                      "  - {name: image_qa, format: llava, path: llava_image.json, weight: 0.5}\n")
    return {"train": train, "bench": bench / "lvbench", "tokenizer": train / "tokenizer"}


def train_teacher(cfg: DemoTrainConfig, data: dict[str, Path], out: Path) -> Path:
    """Train the tiny Qwen2-VL teacher on every training file (HF Trainer, plain LM loss)."""
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from vamba.data.collate import Collator
    from vamba.data.dataset import MemoryCache, VambaDataset
    from vamba.data.mixture import Mixture
    from vamba.data.teacher_view import teacher_training_batch
    from vamba.models.presets import special_token_ids, tiny_qwen2vl
    from vamba.training.build import data_config

    if (out / "config.json").exists():
        return out
    d = cfg.demo
    tok = AutoTokenizer.from_pretrained(data["tokenizer"])
    ids = special_token_ids(tok)
    collate = Collator(tok.pad_token_id)
    dataset = MemoryCache(VambaDataset(Mixture.from_yaml(data["train"] / "all.yaml"), tok,
                                       data_config(dataclasses.replace(cfg.data, num_frames=d.num_frames), None)))

    def collator(items):
        return teacher_training_batch(collate(items), vision_start_id=ids["vision_start_token_id"],
                                      video_pad_id=ids["video_token_id"], pad_id=tok.pad_token_id)

    model = tiny_qwen2vl(tok, cfg.model.tiny, seed=cfg.seed)
    args = TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=d.batch_size,
                             learning_rate=d.teacher_lr, lr_scheduler_type="cosine", warmup_steps=0.03,
                             weight_decay=0.01, max_steps=d.teacher_steps, logging_steps=25, save_strategy="no",
                             report_to="none", use_cpu=True, seed=cfg.seed, remove_unused_columns=False,
                             disable_tqdm=not cfg.logging.progress)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    # A Qwen2-VL checkpoint as transformers writes one: its image processor's pixel limits (those the demo trains
    # with) in preprocessor_config.json, which `vamba convert` and VambaProcessor read.
    from transformers import Qwen2VLImageProcessorPil

    Qwen2VLImageProcessorPil(min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    model.save_pretrained(str(out))  # last: config.json marks the teacher as done
    return out


def stage_config(cfg: DemoTrainConfig, *, stage: str, model_path: Path, mixture: Path, tokenizer: Path, out: Path,
                 steps: int, lr: float, distill_weight: float = 0.0, teacher: Path | None = None) -> DemoTrainConfig:
    """The demo's config for one stage: the user's config with the stage (its ``TRAINABLE`` patterns), data and
    schedule filled in."""
    from vamba.training.params import trainable_for

    c = copy.deepcopy(cfg)
    c.output_dir, c.device = str(out), "cpu"
    c.model.path = str(model_path)
    c.data.mixture, c.data.tokenizer, c.data.num_frames = str(mixture), str(tokenizer), cfg.demo.num_frames
    c.data.sampling, c.data.cache_in_memory, c.data.num_workers = "uniform", True, 0
    c.stage.name = stage
    c.stage.trainable = trainable_for(stage, vision_mixer=cfg.model.vision_mixer != "none",
                                      alpha=cfg.model.use_alpha_balancing)
    c.stage.distill.weight = distill_weight
    c.stage.distill.teacher = str(teacher) if teacher else None
    c.stage.distill.source = "online"
    c.optim.lr, c.optim.max_steps, c.optim.warmup_ratio = lr, steps, 0.03
    c.optim.per_device_batch_size = c.optim.global_batch_size = cfg.demo.batch_size
    c.logging.save_steps = max(steps // 2, 1)
    c.logging.logging_steps = min(10, steps)
    return c


def evaluate_model(cfg: DemoTrainConfig, data: dict[str, Path], model_dir: Path, out: Path, *,
                   teacher: bool = False) -> dict[str, Any]:
    """Accuracy of one checkpoint (the Qwen2-VL teacher or a VAMBA run) on the held-out benchmark."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    from vamba.evaluation.runner import evaluate
    from vamba.inference.qwen2vl_video_qa import Qwen2VLVideoQA
    from vamba.inference.video_qa import load_video_qa_model

    benchmark, spec = _protocol(cfg.demo.num_frames, max_new_tokens=16 if cfg.demo.explain else 4)
    if teacher:
        tok = AutoTokenizer.from_pretrained(data["tokenizer"])
        model = Qwen2VLVideoQA(Qwen2VLForConditionalGeneration.from_pretrained(str(model_dir)), tok)
    else:
        model = load_video_qa_model(str(model_dir), device="cpu", dtype="float32", fp8=cfg.model.fp8)
    summary = evaluate(benchmark, benchmark.load(data["bench"], {}), model, out, spec=spec,
                       progress=cfg.logging.progress, extra={"model": str(model_dir), "fp8": "none" if teacher else cfg.model.fp8})
    return {"accuracy": summary["score"], "answered": summary["answered"],
            "by_question_type": summary["metrics"].get("by_question_type")}


def evaluate_models(cfg: DemoTrainConfig, data: dict[str, Path], teacher_dir: Path, vamba_dir: Path,
                    out: Path) -> dict[str, Any]:
    return {TEACHER: evaluate_model(cfg, data, teacher_dir, out / "teacher", teacher=True),
            VAMBA: evaluate_model(cfg, data, vamba_dir, out / "vamba")}


def task_accuracy(result: dict[str, Any]) -> dict[str, float]:
    """Accuracy per synthetic task (needle / order / count) from the LVBench category breakdown."""
    from vamba.data.synth import LVBENCH_TYPES

    by_type = result.get("by_question_type") or {}
    return {task: by_type[types[0]]["acc"] for task, types in LVBENCH_TYPES.items()
            if by_type.get(types[0], {}).get("total")}


TASK_TITLES = {"needle": "needle colour", "order": "event order", "count": "counting", "after": "colour after"}


def render_table(results: dict[str, Any], questions: int, seconds: dict[str, float],
                 tasks: list[str] | tuple[str, ...] = ("needle", "order", "count")) -> str:
    lines = [f"| model | accuracy (%) on {questions} held-out questions | "
             + " | ".join(TASK_TITLES[t] for t in tasks) + " | chance (%) |", "|---" * (len(tasks) + 3) + "|"]
    for name, r in results.items():
        acc = task_accuracy(r)
        lines.append(f"| {name} | {r['accuracy']:.1f} | " + " | ".join(
            f"{acc[t]:.1f}" if t in acc else "-" for t in tasks) + f" | {CHANCE:.1f} |")
    lines += ["", "wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())]
    return "\n".join(lines)


def train_vamba(cfg: DemoTrainConfig, data: dict[str, Path], teacher: Path, out: Path,
                lap: Callable[[str], None] | None = None) -> Path:
    """Convert the teacher, run stage 1 (distillation weight ``demo.distill_weight``) and stage 2 in ``out``;
    a stage whose final checkpoint exists is skipped. Returns the final checkpoint."""
    from vamba.training.run import train

    d = cfg.demo
    pre = stage_config(cfg, stage="pretrain", model_path=teacher, mixture=data["train"] / "pretrain.yaml",
                       tokenizer=data["tokenizer"], out=out / "pretrain", steps=d.pretrain_steps, lr=d.pretrain_lr,
                       distill_weight=d.distill_weight, teacher=teacher)
    if not (out / "pretrain" / "final" / "config.json").exists():
        train(pre)
        gc.collect()  # stage 1's sample cache, before stage 2 builds its own
    if lap:
        lap("pretrain")
    sft = stage_config(cfg, stage="sft", model_path=out / "pretrain" / "final", mixture=data["train"] / "sft.yaml",
                       tokenizer=data["tokenizer"], out=out / "sft", steps=d.sft_steps, lr=d.sft_lr)
    if not (out / "sft" / "final" / "config.json").exists():
        train(sft)
    if lap:
        lap("sft")
    return out / "sft" / "final"


# The training keys ``stage_config`` sets for each stage -> what sets them instead (a value given for one of them
# would be ignored: check_stages refuses it). data.mixture and data.tokenizer are left out: the default data group
# (data=synthetic) sets them, so their default is not the schema's.
DEMO_SETS = {
    "model.path": "the demo's own teacher", "data.num_frames": "demo.num_frames", "data.sampling": "the demo (uniform)",
    "data.cache_in_memory": "the demo (true)", "data.num_workers": "the demo (0)", "stage.name": "the demo (both stages)",
    "stage.trainable": "the demo (each stage's own)", "stage.distill.weight": "demo.distill_weight",
    "stage.distill.teacher": "the demo's own teacher", "stage.distill.source": "the demo (online)",
    "optim.lr": "demo.pretrain_lr and demo.sft_lr", "optim.max_steps": "demo.pretrain_steps and demo.sft_steps",
    "optim.warmup_ratio": "the demo (0.03)", "optim.per_device_batch_size": "demo.batch_size",
    "optim.global_batch_size": "demo.batch_size", "logging.save_steps": "the demo (half the steps)",
    "logging.logging_steps": "the demo (10)",
}


def _key(cfg: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        cfg = getattr(cfg, name)
    return cfg


def check_stages(cfg: DemoTrainConfig) -> None:
    """Before any work: no training key that the demo sets itself (``DEMO_SETS``) is given another value than the
    schema's default (it would be ignored without a word), and the two stage configs ``train_vamba`` will run pass
    ``vamba train``'s checks (vamba.training.config.validate, without the path checks: their data and teacher do
    not exist yet), so a bad key fails here, not minutes later in stage 1. Raises ``ConfigError``."""
    from vamba.training.config import ConfigError, validate

    default = type(cfg)()
    for key, instead in DEMO_SETS.items():
        if _key(cfg, key) != _key(default, key):
            raise ConfigError(f"{key}={_key(cfg, key)!r}: the demo sets {key} itself (from {instead}); remove it"
                              + (f" and set {instead}" if instead.startswith("demo.") else ""))
    d, placeholder = cfg.demo, Path(cfg.output_dir)  # the paths are not checked
    validate(stage_config(cfg, stage="pretrain", model_path=placeholder, mixture=placeholder, tokenizer=placeholder,
                          out=placeholder, steps=d.pretrain_steps, lr=d.pretrain_lr, distill_weight=d.distill_weight,
                          teacher=placeholder), paths=False)
    validate(stage_config(cfg, stage="sft", model_path=placeholder, mixture=placeholder, tokenizer=placeholder,
                          out=placeholder, steps=d.sft_steps, lr=d.sft_lr), paths=False)


def run_demo(cfg: DemoTrainConfig) -> dict[str, Any]:
    from vamba.training.run import write_run_info

    validate_demo(cfg)
    check_stages(cfg)
    # NOTE: one thread: the tiny model's ops are too small to split, and two threads on two busy cores
    # were 10x slower per step than one (OpenMP workers waiting on each other).
    torch.set_num_threads(cfg.demo.threads)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(cfg, out)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now
        logger.info("demo: %s done in %.0f s", name, seconds[name])

    data = write_data(cfg, out / "data")
    lap("data")
    teacher = train_teacher(cfg, data, out / "teacher")
    lap("teacher")
    vamba = train_vamba(cfg, data, teacher, out, lap)
    results = evaluate_models(cfg, data, teacher, vamba, out / "eval")
    lap("eval")
    seconds["total"] = sum(seconds.values())
    n = len(list((data["bench"] / "videos").glob("*.mp4")))
    table = render_table(results, n, seconds, cfg.demo.tasks)
    atomic_write_json(out / "results.json", {"results": results, "chance": CHANCE, "questions": n,
                                             "seconds": {k: round(v, 1) for k, v in seconds.items()}})
    atomic_write_text(out / "results.md", table + "\n")
    print("\n" + table + f"\n\nrun directory: {out}")
    return results
