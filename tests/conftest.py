"""Shared test setup: offline hubs, no wandb, deterministic seeds, GPU tests skipped without CUDA."""
from __future__ import annotations

import os

# NOTE: set before transformers/wandb are imported anywhere: an accidental hub lookup then fails in
# milliseconds instead of retrying for minutes, and no test can reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from vamba.data.video import decord_available

# decord's first import in this process goes through vamba.data.video.import_decord (its libraries kept out of the
# global symbol scope, as in the project's own processes), before any test's `import decord`.
decord_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
