"""scripts/fp8_accuracy.py on the CPU: the official fixture at every precision and a tiny model's layers."""
from __future__ import annotations

import json
from pathlib import Path

from vamba.bench.fp8_accuracy import FIXTURE_SETTINGS, main


def test_fp8_accuracy_report(tmp_path: Path) -> None:
    assert main([f"out={tmp_path}", "device=cpu", "frames=4", "text_tokens=64", "tag=t"]) == 0
    result = json.loads((tmp_path / "fp8_accuracy_t.json").read_text())
    rows = {r["precision"]: r for r in result["fixture"]}
    assert set(rows) == {"official_bf16", *(name for name, _, _ in FIXTURE_SETTINGS)}
    assert rows["fp32"]["rel_err_logits"] < 1e-4 and rows["fp32"]["greedy_tokens_equal"]  # our fp32 is theirs
    # FP8 costs more than bf16 and stays within a few times bf16's error on this function
    assert rows["bf16"]["rel_err_logits"] < rows["fp8_all"]["rel_err_logits"] < 4 * rows["official_bf16"]["rel_err_logits"]
    errors = result["layers"]["rel_err"]
    assert set(errors) == {"bf16", "fp8_vision", "fp8_all"} and errors["fp8_all"]["logits"] > errors["bf16"]["logits"]
    assert "| fp8_all |" in (tmp_path / "fp8_accuracy_t.md").read_text()
