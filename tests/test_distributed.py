"""Several processes with torchrun (gloo on the CPU): a GAN and a classifier trained with DDP, checkpoints
that cross between DDP and one process, generation shared out over ranks, failures that stop every rank,
and the larger-than-memory (streamed) paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augkit import distributed
from augkit.data.reader import H5Dataset
from augkit.loading import StackedImages, fits_in_memory, parse_bytes
from augkit.errors import UserError
from augkit.train.checkpoint import load_checkpoint
from conftest import write_dataset
from ddp_cases import classifier, d2d_batch, shard, tiny_data, tiny_diffusion, tiny_gan

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Two CPU processes; the timeout only guards the suite against a hang."""
    env = {**os.environ, "AUGKIT_LOADER_WORKERS": "0", **(env or {})}
    env.pop("AUGKIT_TRACEBACK", None)
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, env=env, timeout=300, cwd=TESTS)


def params(state: dict) -> dict:
    """Everything in a state dict except BatchNorm running statistics (each rank's own batches)."""
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """One torchrun launch runs every case of ddp_cases on 2 ranks; returns the folder and a loader."""
    folder = tmp_path_factory.mktemp("ddp")
    tiny_gan(folder / "gan_single", steps=2)  # a single-process start that DDP continues
    proc = torchrun(str(TESTS / "ddp_worker.py"), "train", str(folder))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def load(name: str) -> list[dict]:
        return [torch.load(folder / f"{name}-rank{r}.pt", weights_only=True) for r in (0, 1)]

    return folder, load


def test_a_gan_trained_with_ddp_has_the_same_weights_on_both_ranks_and_used_both_ranks_batches(ddp, tmp_path):
    folder, load = ddp
    r0, r1 = load("gan_ddp")
    assert r0["steps"] == r1["steps"] == 4
    for net in ("G", "D", "ema"):
        assert_same(params(r0[net]), params(r1[net]))
    losses = [[{k: v for k, v in h.items() if k.startswith("loss")} for h in r["history"]] for r in (r0, r1)]
    assert losses[0] == losses[1]  # averaged over the ranks
    # one process with the same seed draws rank 0's batches only: its weights must differ
    alone = tiny_gan(tmp_path / "alone", steps=4)
    assert not torch.equal(alone["G"]["dense.weight"], r0["G"]["dense.weight"])
    # rank 0 alone wrote the run folder; the checkpoint holds plain (unwrapped) networks
    state = load_checkpoint(folder / "gan_ddp" / "checkpoints" / "latest.pt", kind="cgan")
    assert not any(k.startswith("module.") for k in state["G"])
    assert len(state["rng_ranks"]) == 2
    assert json.loads((folder / "gan_ddp" / "config.json").read_text())["world_size"] == 2


def test_ada_s_probability_is_decided_over_both_ranks_and_keeps_them_in_step(ddp):
    _, load = ddp
    r0, r1 = load("gan_ada_ddp")
    p = [[h["ada_p"] for h in r["history"]] for r in (r0, r1)]
    assert p[0] == p[1] and max(p[0]) > 0  # one p for both ranks, and it moved
    for net in ("G", "D", "ema"):
        assert_same(params(r0[net]), params(r1[net]))


def test_a_d2d_head_trains_with_ddp_to_the_same_weights_on_both_ranks(ddp):
    _, load = ddp
    r0, r1 = load("gan_d2d_ddp")
    for net in ("G", "D", "ema"):
        assert_same(params(r0[net]), params(r1[net]))
    assert any(k.startswith("d2d.proxy") for k in r0["D"]) and all(h["loss_aux"] > 0 for h in r0["history"])


def test_d2d_negatives_come_from_every_rank_and_ddp_gets_the_global_batch_s_gradient(ddp):
    from augkit.train.losses import d2d_ce

    _, load = ddp
    r0, r1 = load("d2d_loss")
    packed, y = d2d_batch()
    whole = packed.clone().requires_grad_()
    loss = d2d_ce(whole, y)
    loss.backward()
    assert torch.allclose((r0["loss"] + r1["loss"]) / 2, loss)
    # DDP averages parameter gradients over the 2 ranks: each rank's rows, halved, are one process's
    assert torch.allclose(torch.cat([r0["grad"], r1["grad"]]) / 2, whole.grad, atol=1e-6)
    # with each rank's own images as its only negatives, rank 0's loss would be another
    assert not torch.allclose(d2d_ce(packed[:6], y[:6]), r0["loss"])


def test_the_diffusion_plugin_trains_with_ddp_to_the_same_weights_on_both_ranks_from_both_ranks_batches(ddp, tmp_path):
    _, load = ddp
    r0, r1 = load("diffusion_ddp")
    assert_same(r0["ema"], r1["ema"])
    alone = tiny_diffusion(tmp_path / "alone")  # rank 0's batches only
    assert any(not torch.equal(alone["ema"][k], r0["ema"][k]) for k in alone["ema"])


def test_a_ddp_run_resumed_under_ddp_reaches_the_uninterrupted_weights(ddp):
    _, load = ddp
    whole, resumed = load("gan_ddp")[0], load("gan_ddp_resumed")[0]
    for net in ("G", "D", "ema"):
        assert_same(whole[net], resumed[net])


def test_checkpoints_cross_between_ddp_and_one_process(ddp):
    folder, load = ddp
    # one process -> DDP: the run left at step 2 by one process was finished by two
    r0, r1 = load("gan_resumed")
    assert r0["steps"] == 4 and [h["step"] for h in r0["history"]] == [1, 2, 3, 4]
    assert_same(params(r0["G"]), params(r1["G"]))
    assert load_checkpoint(folder / "gan_single" / "checkpoints" / "latest.pt", kind="cgan")["step"] == 4
    # DDP -> one process: the DDP run goes on alone from its step 4
    more = tiny_gan(folder / "gan_ddp", steps=6, resume=True)
    assert more["steps"] == 6 and [h["step"] for h in more["history"]][-2:] == [5, 6]


def test_a_classifier_trained_with_ddp_is_the_same_on_both_ranks(ddp, tmp_path):
    _, load = ddp
    r0, r1 = load("classifier")
    assert_same(params(r0["model"]), params(r1["model"]))
    assert r0["y_pred"] == r1["y_pred"]  # each rank predicted half; both have all of them
    alone = classifier(tmp_path, "cpu")
    assert r0["steps"] * 2 == alone["steps"]  # global batch = batch size x 2 ranks: half the steps


def test_generation_under_ddp_writes_the_file_one_process_writes(ddp, tmp_path):
    folder, _ = ddp
    shard(tmp_path, "cpu")
    one, two = H5Dataset(tmp_path / "shard_ddp.h5"), H5Dataset(folder / "shard_ddp.h5")
    assert len(one) == len(two) == 900
    assert one.info.fingerprint == two.info.fingerprint
    assert np.array_equal(one.read(np.arange(900)), two.read(np.arange(900)))
    assert np.array_equal(one.parent, two.parent) and np.array_equal(one.labels, two.labels)
    assert not any(p.name.endswith(".parts") for p in folder.iterdir())  # the part files are gone


def test_an_error_at_a_sync_point_on_one_rank_is_raised_on_every_rank(ddp):
    _, load = ddp
    r0, r1 = load("fail_together")
    assert r0["outcome"] == "RankFailed: rank 1 failed: bad input on rank 1 (exit 2)"
    assert r1["outcome"] == "UserError: bad input on rank 1"


def test_a_crash_on_one_rank_stops_every_rank_with_the_error(tmp_path):
    proc = torchrun(str(TESTS / "ddp_worker.py"), "crash", str(tmp_path))
    assert proc.returncode != 0
    assert "simulated failure on rank 1 at step 2" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("finished-rank*"))  # rank 0 did not go on training alone


def test_torchrun_runs_a_recipe_with_two_processes(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("""
[recipe]
name = "tiny-ddp"
[data]
source = "demo"
image_size = 16
demo_images = 120
[[augment]]
name = "classical"
amount = 0.5
[evaluate]
model = "test_resnet"
arms = ["baseline", "classical"]
epochs = 1
batch_size = 8
bootstrap = 100
""")
    out = tmp_path / "run"
    proc = torchrun("-m", "augkit", "run", str(recipe), "--out", str(out), "--device", "cpu",
                    env={"AUGKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1  # rank 0 alone reports
    assert (out / "report.html").exists() and (out / "shards" / "classical.h5").exists()
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert list(stages) == ["data", "split", "generate classical", "evaluate", "report"]
    assert json.loads((out / "evaluate" / "metrics.json").read_text())["arms"]["classical"]["synthetic_rows"] > 0
    log = (out / "run.log").read_text()
    assert log.count("split: train") == 1  # one writer of the log


@pytest.mark.parametrize("world, code, status, rest", [
    ("2", "3", 3, ""),                   # under torchrun: no interpreter teardown, so no atexit handler
    ("2", "'bad recipe'", 1, ""),        # sys.exit's message convention
    ("2", "None", 0, ""),
    ("1", "3", 3, "atexit ran"),         # one process: a plain sys.exit
])
def test_end_process_exits_with_the_code_and_keeps_what_was_printed(world, code, status, rest):
    script = ("import atexit, sys; from augkit import distributed; "
              "atexit.register(lambda: print('atexit ran', end='')); "
              "print('work done', end=''); print('to stderr', end='', file=sys.stderr); "
              f"distributed.end_process({code})")
    env = {**os.environ, "WORLD_SIZE": world}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == status
    assert proc.stdout == "work done" + rest  # block-buffered pipe, flushed before the exit
    assert proc.stderr.startswith("to stderr")
    if code.startswith("'"):
        assert "bad recipe" in proc.stderr


# -- larger than memory: the streamed paths ------------------------------------------------------

def test_a_streamed_classifier_trains_exactly_as_the_one_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_LOADER_WORKERS", "0")
    streamed, in_memory = classifier(tmp_path, "cpu", streamed=True), classifier(tmp_path, "cpu")
    assert_same(streamed["model"], in_memory["model"])


def test_a_streamed_gan_reads_from_hdf5_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_LOADER_WORKERS", "1")  # a DataLoader worker process reads the batches
    path = write_dataset(tmp_path / "d.h5", counts=(12, 12, 12))
    data = H5Dataset(path)
    whole = tiny_gan(tmp_path / "whole", data=data)
    tiny_gan(tmp_path / "split", data=data, steps=2)
    resumed = tiny_gan(tmp_path / "split", data=data, resume=True)
    assert_same(whole["G"], resumed["G"])


def test_the_memory_budget_decides_between_memory_and_streaming(monkeypatch):
    monkeypatch.delenv("AUGKIT_IN_MEMORY", raising=False)
    monkeypatch.setenv("AUGKIT_MEMORY_BUDGET", "1.5MiB")
    assert parse_bytes("1.5MiB") == 1572864 and parse_bytes("8GB") == 8 * 10**9
    assert fits_in_memory(1572864) and not fits_in_memory(1572865)
    monkeypatch.setenv("AUGKIT_IN_MEMORY", "1")
    assert fits_in_memory(10**15)
    monkeypatch.setenv("AUGKIT_MEMORY_BUDGET", "lots")
    monkeypatch.delenv("AUGKIT_IN_MEMORY")
    with pytest.raises(UserError, match="AUGKIT_MEMORY_BUDGET: 'lots' is not a size"):
        fits_in_memory(1)


def test_stacked_views_read_each_row_from_its_own_part():
    a, b = tiny_data(6, seed=1), tiny_data(4, seed=2)
    stacked = StackedImages([(a, a.labels), (b, np.full(4, 2))])
    pos = np.array([9, 0, 5, 6])
    assert np.array_equal(stacked.read(pos), np.concatenate([b.images[3:4], a.images[[0, 5]], b.images[0:1]]))
    assert stacked.labels.tolist() == a.labels.tolist() + [2, 2, 2, 2]


def test_sync_bn_on_cpus_is_refused_with_a_reason(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="--sync-bn needs GPUs"):
        distributed.setup("cpu", sync_batchnorm=True)


def test_joining_the_group_again_keeps_the_sync_bn_choice_of_the_first_call(monkeypatch):
    # the CLI calls setup(device, sync_batchnorm=...); evaluate() and the runner then call setup(device)
    # again, which must not switch SyncBatchNorm back off
    monkeypatch.setattr(distributed, "launched", lambda: True)
    monkeypatch.setattr("torch.distributed.is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "_sync_bn", True)
    distributed.setup("cpu")
    assert distributed.sync_bn() is True
    distributed.setup("cpu", sync_batchnorm=False)
    assert distributed.sync_bn() is False
