"""What FP8 costs in accuracy (``VambaConfig.fp8``), measured, on two models:

1. **The official fixture** (tests/fixtures/official_tiny: random weights and inputs written by the official VAMBA
   code, with its fp32 and bf16 logits and 8 greedy tokens): our logits at each precision against the official fp32
   logits (relative Frobenius error), the share of positions whose argmax agrees, and whether greedy decoding gives
   the official tokens. The official bf16 logits' own error sets the scale.
2. **A random model at a released size** (``size``: 7b on a GPU, tiny on the CPU), one video of ``frames`` frames and
   a text prompt: the relative error of every decoder layer's two outputs (text and video stream) and of the vision
   tower's, in bf16 and in FP8 (bf16 weights), against the same model in float32.

    python scripts/fp8_accuracy.py out=docs/results [size=7b frames=64 device=cuda]

Writes ``fp8_accuracy_<device>.json`` (and .md) with the provenance header. On the CPU, ``torch._scaled_mm`` runs the
same FP8 arithmetic (tests/ops/test_fp8.py), so the errors hold there too; only the speed needs Hopper.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vamba.bench.build import build, device_tag, frame_grid, vamba_config
from vamba.models.fp8 import set_fp8
from vamba.utils.cli_args import parse_args
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.provenance import header

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "official_tiny"
INPUT_NAMES = ("input_ids", "pixel_values_videos", "video_grid_thw")
# (name, weights' dtype, fp8 mode)
FIXTURE_SETTINGS = (("fp32", torch.float32, "none"), ("bf16", torch.bfloat16, "none"),
                    ("fp8_vision", torch.bfloat16, "vision"), ("fp8_all", torch.bfloat16, "all"),
                    ("fp8_all_fp32_weights", torch.float32, "all"))


@dataclass
class AccuracyArgs:
    out: str = "docs/results"  # folder of fp8_accuracy_<tag>.json / .md
    tag: str | None = None  # file name tag (default: the device kind)
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    size: str | None = None  # the random model: 7b | 2b | tiny (default: 7b on CUDA, tiny on the CPU)
    frames: int = 64  # the random model's video
    frame_size: str = "640x360"  # WIDTHxHEIGHT of its frames
    text_tokens: int = 64


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius, in float64)."""
    return float((got.double() - want.double()).norm() / want.double().norm())


def fixture_rows(device: torch.device) -> list[dict[str, Any]]:
    """The official fixture at each of ``FIXTURE_SETTINGS`` (module docstring, 1)."""
    from safetensors.torch import load_file

    from vamba.models import VambaForConditionalGeneration

    io = load_file(str(FIXTURE / "io.safetensors"))
    official = io["logits_fp32"].double()
    rows = [{"precision": "official_bf16", "rel_err_logits": relative_error(io["logits_bf16"], official),
             "argmax_agree": float((io["logits_bf16"].argmax(-1) == official.argmax(-1)).float().mean())}]
    for name, dtype, mode in FIXTURE_SETTINGS:
        model = VambaForConditionalGeneration.from_pretrained(FIXTURE, dtype=dtype, fp8=mode).to(device).eval()
        inputs = {k: io[k].to(device) for k in INPUT_NAMES}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(dtype)
        with torch.no_grad():
            logits = model(**inputs).logits.float().cpu()
            generated = model.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]),
                                       do_sample=False, max_new_tokens=8).cpu()
        rows.append({"precision": name, "rel_err_logits": relative_error(logits, official),
                     "argmax_agree": float((logits.argmax(-1) == official.argmax(-1)).float().mean()),
                     "greedy_tokens_equal": bool(torch.equal(generated, io["generated"])),
                     "greedy_tokens_agree": float((generated == io["generated"]).float()[:, 40:].mean())})
    return rows


def _layer_outputs(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every decoder layer's text and video outputs and the vision tower's merged tokens, in float32 on the host."""
    found: dict[str, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def keep(_module, _args, out, i=i):
            found[f"layer{i}.text"] = out[0].float().cpu()
            if out[1] is not None:
                found[f"layer{i}.video"] = out[1].float().cpu()
        hooks.append(layer.register_forward_hook(keep))
    try:
        with torch.no_grad():
            found["vision"] = model._vision_tower(batch["pixel_values"], batch["grid_thw"]).float().cpu()
            found["logits"] = model(**batch).logits.float().cpu()
    finally:
        for h in hooks:
            h.remove()
    return found


def layer_rows(args: AccuracyArgs, device: torch.device) -> dict[str, Any]:
    """The random model's per-layer errors (module docstring, 2)."""
    from vamba.models import VambaForConditionalGeneration

    size = args.size or ("7b" if device.type == "cuda" else "tiny")
    config = vamba_config(size, "fast" if device.type == "cuda" else "reference")
    torch.manual_seed(0)
    model = build(VambaForConditionalGeneration, config, device, torch.float32)
    width, height = (int(v) for v in args.frame_size.split("x"))
    h, w = frame_grid(width, height) if size != "tiny" else (4, 6)
    g = torch.Generator().manual_seed(0)
    grid = torch.tensor([[args.frames // 2, h, w]])
    video_tokens = args.frames // 2 * h * w // 4
    # random ids below the special tokens; the video reaches the text through cross-attention, not as tokens
    ids = torch.randint(3, min(1000, config.text_config.vocab_size - 5), (1, args.text_tokens), generator=g)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "pixel_values": torch.randn(int(grid.prod()), 1176, generator=g).to(device), "grid_thw": grid.to(device),
             "visual_row": torch.zeros(1, dtype=torch.long, device=device),
             "visual_seq_idx": torch.zeros(1, dtype=torch.long, device=device)}
    reference = _layer_outputs(model, batch)
    results: dict[str, dict[str, float]] = {}
    model.to(torch.bfloat16)
    bf16_batch = dict(batch, pixel_values=batch["pixel_values"].to(torch.bfloat16))
    for mode in ("none", "vision", "all"):
        set_fp8(model, mode)
        got = _layer_outputs(model, bf16_batch)
        results["bf16" if mode == "none" else f"fp8_{mode}"] = {k: relative_error(got[k], reference[k])
                                                                 for k in reference}
    return {"size": size, "frames": args.frames, "frame_size": args.frame_size, "video_tokens": video_tokens,
            "text_tokens": args.text_tokens, "against": "the same weights in float32", "rel_err": results}


def report(result: dict[str, Any]) -> str:
    lines = [f"# FP8 accuracy ({result['device']}, {result['date']}, commit {result.get('code_commit')})", "",
             "## The official fixture (tests/fixtures/official_tiny): logits against the official fp32 logits", "",
             "| precision | rel. error of logits | argmax agrees | 8 greedy tokens equal |", "|---|---|---|---|"]
    for r in result["fixture"]:
        lines.append(f"| {r['precision']} | {r['rel_err_logits']:.2e} | {100 * r['argmax_agree']:.1f} % | "
                     f"{r.get('greedy_tokens_equal', '')} |")
    layers = result["layers"]
    keys = list(next(iter(layers["rel_err"].values())))
    lines += ["", f"## A random {layers['size']} model, {layers['frames']} frames ({layers['video_tokens']} video "
              f"tokens), each output against float32", "", "| output | " + " | ".join(layers["rel_err"]) + " |",
              "|---" * (len(layers["rel_err"]) + 1) + "|"]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{v[k]:.2e}" for v in layers["rel_err"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(AccuracyArgs, argv, prog="fp8_accuracy.py", doc=__doc__ or "")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    started = time.perf_counter()
    result: dict[str, Any] = {"what": __doc__.splitlines()[0], **header(device)}
    result["fixture"] = fixture_rows(device)
    result["layers"] = layer_rows(args, device)
    result["seconds"] = round(time.perf_counter() - started, 1)
    tag = args.tag or device_tag(device)[1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"fp8_accuracy_{tag}.json", result)
    text = report(result)
    atomic_write_text(out / f"fp8_accuracy_{tag}.md", text)
    print(text)
    return 0
