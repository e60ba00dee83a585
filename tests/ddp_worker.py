"""What each of the two torchrun processes of tests/test_distributed.py does (gloo on the CPU).

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py SCENARIO DIR``;
every rank writes what the test compares into DIR/<name>-rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from augkit import distributed
from augkit.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_cases import CASES  # noqa: E402


def train_cases(folder: Path) -> None:
    """A tiny cgan from scratch under DDP, the resume of a single-process checkpoint under DDP, a tiny
    classifier, generation of a shard, and a caught error on one rank."""
    device = distributed.setup("cpu")
    rank = distributed.rank()
    for name, case in CASES.items():
        result = case(folder, device)
        torch.save(result, folder / f"{name}-rank{rank}.pt")

    # an error on rank 1 only, at a sync point: every rank raises, rank 0 names rank 1
    try:
        with distributed.fail_together():
            if rank == 1:
                raise UserError("bad input on rank 1")
        outcome = "no error"
    except distributed.RankFailed as exc:
        outcome = f"RankFailed: {exc} (exit {exc.exit_code})"
    except UserError as exc:
        outcome = f"UserError: {exc}"
    torch.save({"outcome": outcome}, folder / f"fail_together-rank{rank}.pt")
    distributed.end_process(0)  # as augkit's CLI ends: without interpreter teardown under torchrun


def crash_in_training(folder: Path) -> None:
    """Rank 1 dies in the middle of GAN training while rank 0 waits for it in DDP's all-reduce."""
    from ddp_cases import tiny_gan

    device = distributed.setup("cpu")

    def crash(step: int) -> None:
        if step == 2 and distributed.rank() == 1:
            raise RuntimeError("simulated failure on rank 1 at step 2")

    tiny_gan(folder / "crash", device, steps=40, callback=crash)
    (folder / f"finished-rank{distributed.rank()}").write_text("training finished")


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    np.set_printoptions(linewidth=200)
    {"train": train_cases, "crash": crash_in_training}[scenario](out)
