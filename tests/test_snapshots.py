"""Metric-driven snapshots: the loop keeps the best-scored snapshot, a resumed or budgeted run keeps the
record an uninterrupted one keeps, and the judge's scores tell a generator that carries its class from
one that does not."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from augkit.augment import Context
from augkit.data.reader import ArrayDataset
from augkit.errors import ParamError, Paused
from augkit.train.checkpoint import load_checkpoint
from augkit.train.loop import Cadence, Snapshots, Streams, Task, best_snapshot_path, read_metrics, run_training
from augkit.train.snapshots import SnapshotJudge, SnapshotSpec


def scores(folder) -> list[dict]:
    """The score rows without their wall time (the one thing two runs of the same steps differ in)."""
    rows = read_metrics(folder)
    assert all(r["train_seconds"] >= 0 for r in rows)
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


class _Walk(Task):
    """One number that moves each step; the planted scores, not the number, decide what is best."""

    kind = "walk"

    def __init__(self, streams: Streams):
        self.streams, self.w, self.steps = streams, torch.zeros(3), 0

    def step(self):
        self.w += torch.randn(3, generator=self.streams.torch["noise"])
        self.steps += 1
        return {"loss_w": float(self.w.abs().sum())}, 1

    def state_dict(self):
        return {"w": self.w.clone(), "steps": self.steps}

    def load_state_dict(self, state):
        self.w, self.steps = state["w"].clone(), state["steps"]


PLANTED = {2: 5.0, 4: 1.0, 6: 3.0, 7: 2.0}  # score per scored step (every 2, and the last, 7)


def _run(folder, minimise=True, resume=False, callback=None):
    streams = Streams(3, {"noise": 1})
    task = _Walk(streams)
    weights = {}

    def score():
        weights[task.steps] = task.w.clone()
        return {"value": PLANTED[task.steps], "per_class": {"a": PLANTED[task.steps]}}

    snapshots = Snapshots(2, score, lambda: {"w": task.w.clone()}, "value", minimise)
    out = run_training(task, streams, Cadence(7, log_every=1, sample_every=100, checkpoint_every=100), folder,
                       config={}, resume=resume, callback=callback, snapshots=snapshots)
    return out, weights


@pytest.mark.parametrize("minimise, best_step", [(True, 4), (False, 2)])
def test_the_kept_snapshot_is_the_best_by_its_metric_not_the_last(tmp_path, minimise, best_step):
    out, weights = _run(tmp_path, minimise)
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6, 7]
    assert [r["value"] for r in read_metrics(tmp_path)] == [PLANTED[s] for s in (2, 4, 6, 7)]
    assert out["best_snapshot"] == {"step": best_step, "key": "value", "value": PLANTED[best_step]}
    kept = load_checkpoint(best_snapshot_path(tmp_path), kind="walk-snapshot")
    assert kept["step"] == best_step and torch.equal(kept["w"], weights[best_step])
    assert not torch.equal(kept["w"], weights[7])


CAS_ROWS = {2: (0.70, 0.40), 4: (0.66, 0.85), 6: (0.72, 0.30), 7: (0.60, 0.80)}  # (cas_mean, cas_ratio_min)


@pytest.mark.parametrize("metric, best_step", [("cas", 6), ("cas_worst", 4), ("fd", 7)])
def test_each_snapshot_metric_keeps_the_step_that_is_best_by_it(tmp_path, metric, best_step):
    """A mean that rises while one class falls away: cas keeps that step, cas_worst the step whose
    weakest class is strongest (fd, lower is better, is planted to fall to the end)."""
    spec = SnapshotSpec(every=2, metric=metric)
    streams = Streams(3, {"noise": 1})
    task = _Walk(streams)

    def score():
        mean, worst = CAS_ROWS[task.steps]
        return {"fd_mean": 10.0 - task.steps, "cas_mean": mean, "cas_ratio_min": worst}

    snapshots = Snapshots(spec.every, score, lambda: {"w": task.w.clone()}, spec.key, spec.minimise)
    out = run_training(task, streams, Cadence(7, log_every=1, sample_every=100, checkpoint_every=100), tmp_path,
                       config={}, snapshots=snapshots)
    assert out["best_snapshot"]["step"] == best_step and out["best_snapshot"]["key"] == spec.key


def test_a_killed_and_resumed_run_keeps_the_record_of_an_uninterrupted_one(tmp_path):
    ref, _ = _run(tmp_path / "straight")

    def killed(step):
        if step == 5:  # after step 4's score and checkpoint: step 5 is lost, as with a kill
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", callback=killed)
    # a score written after the last checkpoint (here: none) would be dropped and made again
    (tmp_path / "killed" / "metrics.jsonl").open("a").write(json.dumps({"step": 6, "value": -1.0}) + "\n")
    out, _ = _run(tmp_path / "killed", resume=True)
    assert scores(tmp_path / "killed") == scores(tmp_path / "straight")
    assert out["best_snapshot"] == ref["best_snapshot"]
    a = load_checkpoint(best_snapshot_path(tmp_path / "straight"), kind="walk-snapshot")
    b = load_checkpoint(best_snapshot_path(tmp_path / "killed"), kind="walk-snapshot")
    assert torch.equal(a["w"], b["w"]) and a["step"] == b["step"]


# -- the judge's scores, on planted features ----------------------------------------------------------

class _ColourG(torch.nn.Module):
    """Images of one flat colour per class (plus a little noise from z); ``swap`` paints class c with the
    colour of class c + 1: varied and realistic-looking, but not of the class asked for."""

    def __init__(self, colours: torch.Tensor, swap: bool = False, drop: int | None = None):
        super().__init__()
        self.colours, self.swap, self.drop = colours, swap, drop
        self.latent_dim, self.size = 4, 8

    def forward(self, z, y=None):
        c = (y + 1) % len(self.colours) if self.swap else y
        base = self.colours[c][:, :, None, None].expand(-1, -1, 8, 8).clone()
        if self.drop is not None:  # class ``drop`` comes out in its colour's opposite: like no real class
            base[y == self.drop] = -self.colours[self.drop][:, None, None]
        return (base + 0.05 * z[:, :1, None, None]).clamp(-1, 1)


def _mean_colour(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1, 3).mean(1).astype(np.float32) / 255


def test_the_judge_scores_a_generator_that_keeps_its_class_above_one_that_swaps_them():
    colours = torch.tensor([[-0.8, 0.0, 0.8], [0.8, -0.8, 0.0], [0.0, 0.8, -0.8]])
    rng = np.random.default_rng(0)
    real, reference = [], []
    for c in range(3):  # real features: each class's colour with some spread
        centre = _mean_colour(((colours[c].numpy() + 1) * 127.5).astype(np.uint8)[None, None, None].repeat(8, 1)
                              .repeat(8, 2))
        real.append((centre + 0.02 * rng.standard_normal((20, 3))).astype(np.float32))
        reference.append((centre + 0.02 * rng.standard_normal((20, 3))).astype(np.float32))
    judge = SnapshotJudge(SnapshotSpec(every=1, per_class=20), _mean_colour, real, reference, ["a", "b", "c"],
                          latent_dim=4, conditional=True, seed=0)
    good = judge.score(_ColourG(colours), torch.device("cpu"))
    swapped = judge.score(_ColourG(colours, swap=True), torch.device("cpu"))
    assert good["cas_mean"] == 1.0 and good["cas_ratio_min"] == 1.0
    assert swapped["cas_mean"] == 0.0
    dropped = judge.score(_ColourG(colours, drop=2), torch.device("cpu"))
    assert dropped["cas_recall"] == {"a": 1.0, "b": 1.0, "c": 0.0}  # the mean hides the lost class,
    assert dropped["cas_mean"] == pytest.approx(2 / 3) and dropped["cas_ratio_min"] == 0.0  # the worst shows it
    assert good["fd_mean"] < swapped["fd_mean"] / 10 and good["kid_mean"] < swapped["kid_mean"]
    assert set(good["fd"]) == {"a", "b", "c"} and good["cas_reference"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    again = judge.score(_ColourG(colours), torch.device("cpu"))
    assert again == good  # fixed latents and samples: the same generator scores the same


def test_the_snapshot_extractor_trains_enough_steps_on_a_small_training_set():
    spec = SnapshotSpec()
    assert spec.extractor_epochs(8608, 64) == 3  # PBC's whole training split: 3 epochs are 402 steps
    assert spec.extractor_epochs(860, 64) == 24  # its 10%: 13 steps an epoch, 3 epochs would be 39
    assert spec.extractor_epochs(10, 10) == 30  # capped: a tiny set is not trained for 300 epochs
    assert SnapshotSpec(feature_epochs=40).extractor_epochs(860, 64) == 40  # more epochs asked: given
    assert SnapshotSpec(feature_steps=1).extractor_epochs(860, 64) == 3


def test_cas_snapshots_need_a_class_conditional_generator():
    ds = ArrayDataset(np.zeros((8, 16, 16, 3), np.uint8), np.zeros(8, int), ["a"])
    with pytest.raises(ParamError, match="needs a class-conditional generator"):
        SnapshotJudge.build(SnapshotSpec(every=1, metric="cas"), ds, 4, False, 0, "cpu", None)


# -- a GAN with snapshots, in budget pieces -------------------------------------------------------------

def _data() -> ArrayDataset:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 16)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    images[..., labels[:, None, None] % 3] //= 4  # each class a tint, so the extractor learns something
    return ArrayDataset(images, labels, ["a", "b", "c"])


def _cgan(minutes: float = 0.0):
    from augkit_gan.augmenters import CGAN

    return CGAN({"steps": 4, "batch_size": 8, "g_channels": 16, "d_channels": 8, "snapshot_every": 2,
                 "snapshot_per_class": 6, "minutes": minutes, "checkpoint_every": 100, "sample_every": 100})


def test_a_gan_trained_in_two_budget_pieces_equals_one_trained_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    train = _data()
    whole = _cgan()
    whole.fit(train, Context(seed=0, device="cpu", workdir=tmp_path / "whole"))
    with pytest.raises(Paused, match="minutes = 1e-09.*step 1 of 4.*--resume"):
        _cgan(minutes=1e-9).fit(train, Context(seed=0, device="cpu", workdir=tmp_path / "pieces"))
    pieces = _cgan()
    pieces.fit(train, Context(seed=0, device="cpu", workdir=tmp_path / "pieces", resume=True))
    assert scores(tmp_path / "pieces" / "cgan") == scores(tmp_path / "whole" / "cgan")
    assert [r["step"] for r in read_metrics(tmp_path / "whole" / "cgan")] == [2, 4]
    assert pieces.snapshot == whole.snapshot and whole.snapshot["key"] == "fd_mean"
    for a, b in zip(whole.G.state_dict().values(), pieces.G.state_dict().values()):
        assert torch.equal(a, b)
    # generation uses the kept snapshot: its weights are the best.pt generator's
    kept = load_checkpoint(best_snapshot_path(tmp_path / "whole" / "cgan"), kind="cgan-snapshot")
    for name, value in whole.G.state_dict().items():
        assert torch.equal(value, kept["G"][name])
    assert (tmp_path / "whole" / "cgan" / "metrics.png").exists()


def test_every_installed_augmenters_wall_time_budget_is_marked_as_one():
    """An unmarked budget would enter the cache key: a run made in pieces would train again."""
    from augkit.params import budget_fields
    from augkit.registry import get_registry

    registry = get_registry()
    with_minutes = {n: registry.get(n).cls.Params for n in registry.names()
                    if "minutes" in {f.name for f in dataclasses.fields(registry.get(n).cls.Params)}}
    assert {"vanilla", "acgan", "cgan", "latent_perturb", "latent_interp", "diffusion"} <= set(with_minutes)
    assert all(budget_fields(params) == {"minutes"} for params in with_minutes.values())
