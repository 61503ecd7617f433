"""One rank of ``test_ranks_fail_together``: ``vamba train``'s task (``_train_task``) on a 2-rank gloo group whose
recipe fails on one rank while the other waits in a collective. Usage: ``fail_worker.py raise|setup``."""
from __future__ import annotations

import sys

import torch.distributed as dist
from omegaconf import OmegaConf

from vamba.training.cli import Recipe, _train_task
from vamba.training.config import TrainConfig


def main(mode: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def run(config: TrainConfig) -> None:
        if mode == "raise":
            if rank == 1:
                raise RuntimeError("first error: rank 1 failed")
            dist.barrier()  # rank 0 waits here for a rank that will never come
        else:  # rank-0-only set-up that fails
            from vamba.utils.distributed import on_rank_zero

            def setup() -> None:
                raise OSError("first error: rank 0 set-up failed")

            on_rank_zero(setup, "set-up")
        dist.barrier()
        print(f"rank {rank} went on", flush=True)

    cfg = OmegaConf.structured(TrainConfig)
    cfg.data.mixture = "unused.yaml"
    cfg.output_dir = "unused"
    _train_task(cfg, {"fail": Recipe(TrainConfig, run)})


if __name__ == "__main__":
    main(sys.argv[1])
