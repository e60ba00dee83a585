"""The comparison protocol behind a verdict: plateau stopping, the under-trained flag, nested training
fractions, the verdict's wording and the data-efficiency curve."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from augkit.data.split import nested_subsets, rows_fingerprint
from augkit.errors import DataError, ParamError
from augkit.evaluate.curve import _matching_real_images, efficiency_curve
from augkit.evaluate.report import verdict
from augkit.evaluate.trainer import Plateau, TrainConfig, train_run
from augkit.params import parse_params

FAST = {"model": "test_resnet", "batch_size": 16, "lr": 3e-3}


def test_plateau_cuts_the_learning_rate_then_stops():
    rule = Plateau(patience=2, lr_drops=1)
    decisions = [rule.update(v) for v in [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.69]]
    assert decisions == [(True, "go on"), (True, "go on"), (False, "go on"), (False, "cut"), (True, "go on"),
                         (False, "go on"), (False, "stop")]
    assert rule.best == 0.7 and rule.best_check == 5


def test_plateau_without_cuts_stops_after_patience():
    rule = Plateau(patience=3, lr_drops=0)
    assert [a for _, a in (rule.update(v) for v in [0.1, 0.1, 0.1, 0.1])] == ["go on", "go on", "go on", "stop"]


def _tiny_task(n=96, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen)
    y = torch.arange(n) % 3
    val = (x[:24], y[:24].numpy())
    return x, y, val


def test_a_run_stops_at_a_validation_plateau_and_is_not_flagged():
    x, y, val = _tiny_task()
    # lr 0: the weights never change, so validation never improves after the first check
    cfg = TrainConfig(**{**FAST, "lr": 0.0}, epochs=50, patience=2, patience_steps=0, lr_drops=1, checks_per_epoch=2)
    run = train_run(x, y, val, val, 3, cfg, seed=0, device="cpu")
    assert run["stopped"] == "plateau" and not run["under_trained"]
    assert len(run["history"]) == 5  # best, then 2 without improvement -> cut, 2 more -> stop
    assert run["history"][3]["lr"] == 0.0 and run["best_epoch"] == run["history"][0]["epoch"] == 0.5
    assert run["optimizer_steps"] == run["history"][-1]["step"] < 50 * run["steps_per_epoch"]


def test_patience_spans_at_least_patience_steps_on_a_small_training_set():
    x, y, val = _tiny_task()  # 96 images at batch 16: 6 steps per epoch, a check every 3
    frozen = {**FAST, "lr": 0.0, "epochs": 50, "patience": 2, "lr_drops": 1, "checks_per_epoch": 2}
    short = train_run(x, y, val, val, 3, TrainConfig(**frozen, patience_steps=0), seed=0, device="cpu")
    floored = train_run(x, y, val, val, 3, TrainConfig(**frozen, patience_steps=12), seed=0, device="cpu")
    assert short["patience_checks"] == 2 and len(short["history"]) == 1 + 2 + 2
    # 12 steps at 3 steps per check: 4 checks without a new best before the cut, and again before the stop
    assert floored["patience_checks"] == 4 and floored["stopped"] == "plateau"
    assert floored["optimizer_steps"] - floored["best_step"] >= 12 and len(floored["history"]) >= 1 + 4 + 4
    assert TrainConfig(patience=3, patience_steps=200).patience_checks(149) == 3  # full PBC: unchanged
    assert TrainConfig(patience=3, patience_steps=200).patience_checks(14) == 29  # 10% of PBC
    assert "at least 12 optimiser steps" in TrainConfig(**frozen, patience_steps=12).protocol


def _training_batches(monkeypatch) -> list[torch.Tensor]:
    """Every batch of uint8 images the trainer turns into model input (validation's too)."""
    import augkit.evaluate.trainer as trainer

    seen, real_to_input = [], trainer.to_input
    monkeypatch.setattr(trainer, "to_input", lambda images, dev: seen.append(images.clone()) or real_to_input(images, dev))
    return seen


class _Lazy:
    """Images read by position, as from a file too large for memory (the trainer's streamed path)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.image_size = images.numpy(), tuple(images.shape[1:3])

    def read(self, positions) -> np.ndarray:
        return self.images[np.asarray(positions)]


@pytest.mark.parametrize("phase, streamed", [("all", False), ("before_cut", False), ("before_cut", True)])
def test_synthetic_phase_before_cut_trains_on_the_real_rows_alone_after_the_first_cut(monkeypatch, phase, streamed):
    x, y, val = _tiny_task()  # 96 real images below 200
    x = x // 2
    planted = torch.full((48, 16, 16, 3), 255, dtype=torch.uint8)  # synthetic rows: white, easy to spot
    train_x, train_y = torch.cat([x, planted]), torch.cat([y, torch.arange(48) % 3])
    if streamed:
        monkeypatch.setenv("AUGKIT_LOADER_WORKERS", "0")  # batches read here, where the recording sees them
        train_x = _Lazy(train_x)
    seen = _training_batches(monkeypatch)
    # a learning rate too small to move the weights (validation stays flat), but one whose cut shows
    cfg = TrainConfig(**{**FAST, "lr": 1e-12}, epochs=50, patience=2, patience_steps=0, lr_drops=1,
                      checks_per_epoch=2, synthetic_phase=phase)
    run = train_run(train_x, train_y, val, val, 3, cfg, seed=0, device="cpu", epoch_size=96, real_rows=96)
    train_batches = [b for b in seen if len(b) == cfg.batch_size]  # validation's is 24 images
    assert len(train_batches) == run["optimizer_steps"]
    synthetic_in = [bool((b.flatten(1) == 255).all(1).any()) for b in train_batches]
    cut = next(h["step"] for h, after in zip(run["history"], run["history"][1:]) if after["lr"] < h["lr"])
    assert cut < run["optimizer_steps"] and any(synthetic_in[:cut])
    if phase == "all":
        assert run["synthetic_until_step"] is None and any(synthetic_in[cut:])
    else:
        assert run["synthetic_until_step"] == cut and not any(synthetic_in[cut:])
        assert run["best_step"] > cut  # the model tested is one trained on the real images last
        assert "only until the first learning-rate cut" in cfg.protocol


def _with_synthetic_labels(weight: float, labels: torch.Tensor, streamed: bool = False, **settings) -> dict:
    """A short run on 96 real images and 48 synthetic ones (the real images' first half) with ``labels``."""
    x, y, val = _tiny_task()
    train_x, train_y = torch.cat([x, x[:48]]), torch.cat([y, labels])
    if streamed:
        train_x = _Lazy(train_x)
    cfg = TrainConfig(**FAST, epochs=1, synthetic_weight=weight, **settings)
    return train_run(train_x, train_y, val, val, 3, cfg, seed=0, device="cpu", real_rows=96)


@pytest.mark.parametrize("settings, streamed", [({}, False), ({"class_weights": True}, False), ({}, True)])
def test_synthetic_rows_of_weight_zero_teach_nothing_and_of_some_weight_do(monkeypatch, settings, streamed):
    monkeypatch.setenv("AUGKIT_LOADER_WORKERS", "0")
    right, wrong = torch.arange(48) % 3, (torch.arange(48) + 1) % 3  # the same images, labelled two ways
    runs = {(w, name): _with_synthetic_labels(w, labels, streamed, **settings)
            for w in (0.0, 0.5) for name, labels in (("right", right), ("wrong", wrong))}
    # at weight 0 the synthetic rows' labels cannot matter: same batches, same images, same loss
    assert runs[0.0, "right"]["history"] == runs[0.0, "wrong"]["history"]
    assert runs[0.0, "right"]["y_pred"] == runs[0.0, "wrong"]["y_pred"]
    assert [h["loss"] for h in runs[0.5, "right"]["history"]] != [h["loss"] for h in runs[0.5, "wrong"]["history"]]


def test_a_weight_near_one_trains_as_the_plain_loss_does_and_the_protocol_names_the_weight():
    wrong = (torch.arange(48) + 1) % 3
    # weight 1 takes PyTorch's loss; a weight a hair below it takes the row-weighted one, class weights included
    plain, weighted = (_with_synthetic_labels(w, wrong, class_weights=True) for w in (1.0, 1 - 1e-6))
    assert np.allclose([h["loss"] for h in plain["history"]], [h["loss"] for h in weighted["history"]], rtol=1e-2)
    assert "weighs 0.3 of a real one" in TrainConfig(synthetic_weight=0.3).protocol
    assert "weighs" not in TrainConfig().protocol
    with pytest.raises(ParamError, match="synthetic_weight"):
        parse_params(TrainConfig, {"synthetic_weight": 1.5}, where="evaluate")


@pytest.mark.parametrize("settings, why", [({"schedule": "onecycle"}, "has none"), ({"lr_drops": 0}, "has none"),
                                           ({"equal_steps": False}, "needs equal_steps")])
def test_synthetic_phase_before_cut_is_refused_where_it_could_not_happen_as_planned(settings, why):
    with pytest.raises(ParamError, match=f"parameter 'synthetic_phase'.*{why}"):
        parse_params(TrainConfig, {**settings, "synthetic_phase": "before_cut"}, where="evaluate")


def test_a_run_whose_best_check_is_its_last_is_flagged_under_trained():
    x, y, val = _tiny_task()
    cfg = TrainConfig(**FAST, epochs=1, checks_per_epoch=1)
    run = train_run(x, y, val, val, 3, cfg, seed=0, device="cpu")
    assert run["stopped"] == "budget" and run["under_trained"] and len(run["history"]) == 1


def test_the_learning_rate_is_cut_by_lr_factor():
    x, y, val = _tiny_task()
    cfg = TrainConfig(**{**FAST, "lr": 1e-9}, epochs=6, patience=1, lr_drops=2, lr_factor=0.5, checks_per_epoch=1)
    run = train_run(x, y, val, val, 3, cfg, seed=0, device="cpu")
    rates = sorted({h["lr"] for h in run["history"]}, reverse=True)
    assert rates[0] == pytest.approx(1e-9) and all(b == pytest.approx(a * 0.5) for a, b in zip(rates, rates[1:]))


def test_onecycle_keeps_its_fixed_length():
    x, y, val = _tiny_task()
    cfg = TrainConfig(**FAST, epochs=2, schedule="onecycle", checks_per_epoch=1)
    run = train_run(x, y, val, val, 3, cfg, seed=0, device="cpu")
    assert run["optimizer_steps"] == 2 * run["steps_per_epoch"] and run["stopped"] == "budget"
    assert "one-cycle" in cfg.protocol and "equal optimiser steps" in cfg.protocol


def test_nested_subsets_are_nested_stratified_and_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    rows = np.arange(5000, 6000)
    subsets = nested_subsets(rows, labels, [0.1, 0.25, 1.0], seed=3)
    assert set(subsets[0.1]) <= set(subsets[0.25]) <= set(subsets[1.0]) == set(rows)
    label_of = dict(zip(rows, labels))
    for f in (0.1, 0.25):
        got = np.bincount([label_of[r] for r in subsets[f]], minlength=4)
        np.testing.assert_array_equal(got, [round(f * c) for c in np.bincount(labels, minlength=4)])
    again = nested_subsets(rows, labels, [0.25], seed=3)[0.25]
    other = nested_subsets(rows, labels, [0.25], seed=4)[0.25]
    np.testing.assert_array_equal(again, subsets[0.25])
    assert not np.array_equal(other, again)
    assert rows_fingerprint(subsets[0.25][::-1]) == rows_fingerprint(subsets[0.25])  # a set, not an order
    tiny = nested_subsets(np.arange(3), np.array([0, 1, 1]), [0.01], seed=0)[0.01]
    assert len(tiny) == 2  # every class keeps at least one image
    with pytest.raises(DataError, match="train fraction 1.5"):
        nested_subsets(rows, labels, [1.5], seed=0)


def _summary(delta: float, low: float, high: float, seeds=(0, 1, 2), equal_steps=True, flagged=()) -> dict:
    entry = {"delta": delta, "ci_low": low, "ci_high": high, "includes_zero": low <= 0 <= high, "p_value": 0.01}
    return {"config": {"equal_steps": equal_steps}, "seeds": list(seeds), "under_trained": list(flagged),
            "deltas": {"classical": {"weighted_f1": entry, "covers_training_noise": len(seeds) > 1}}}


def test_a_gain_is_called_better_only_when_compute_matched_converged_and_multi_seed():
    assert verdict(_summary(0.01, 0.004, 0.016), "classical") == ("better", [])
    assert verdict(_summary(-0.01, -0.016, -0.004), "classical")[0] == "worse"
    assert verdict(_summary(0.01, -0.004, 0.016), "classical")[0] == "no reliable difference"
    for summary, why in [(_summary(0.01, 0.004, 0.016, equal_steps=False), "plain epochs"),
                         (_summary(0.01, 0.004, 0.016, flagged=["baseline seed 1"]), "under-trained"),
                         (_summary(0.01, 0.004, 0.016, seeds=(0,)), "one training seed")]:
        word, reasons = verdict(summary, "classical")
        assert word == "not established" and any(why in r for r in reasons)
    # a flag on another arm does not taint this comparison
    assert verdict(_summary(0.01, 0.004, 0.016, flagged=["cgan seed 0"]), "classical")[0] == "better"


def test_the_baseline_curve_is_read_backwards_in_log_images():
    points = [(100, 0.80), (1000, 0.90)]
    assert _matching_real_images(points, 0.85) == pytest.approx(np.sqrt(100 * 1000))
    assert _matching_real_images(points, 0.75) == 100
    assert _matching_real_images(points, 0.95) is None
    # a dip in the baseline (noise) is read as its running maximum, never as "fewer images do as well"
    assert _matching_real_images([(100, 0.85), (250, 0.80), (1000, 0.90)], 0.84) == 100
    assert _matching_real_images([(250, 0.80), (1000, 0.90)], 0.84) > 250


def _fraction_summary(train: int, base: float, arm: float, low: float, high: float) -> dict:
    def runs(v):
        return [{"metrics": {"weighted_f1": v}}]
    return {"split": {"sizes": {"train": train}}, "seeds": [0], "protocol": "p",
            "arms": {"baseline": {"runs": runs(base), "synthetic_rows": 0},
                     "classical": {"runs": runs(arm), "synthetic_rows": train // 2}},
            "deltas": {"classical": {"weighted_f1": {"delta": arm - base, "ci_low": low, "ci_high": high}}}}


def test_the_curve_says_what_synthetic_images_are_worth_or_that_they_are_worth_none():
    summaries = {0.1: _fraction_summary(100, 0.80, 0.85, 0.02, 0.08),
                 1.0: _fraction_summary(1000, 0.90, 0.905, -0.01, 0.02)}
    curve = efficiency_curve(copy.deepcopy(summaries))
    small, full = curve["points"]["classical"]
    assert small["worth_real_images"] == round(np.sqrt(100 * 1000)) - 100
    assert full["worth_real_images"] == 0
    text = curve["worth"]["classical"]
    assert "worth about 216 real images" in text and "worth none" in text
    summaries[1.0] = _fraction_summary(1000, 0.90, 0.95, 0.03, 0.07)
    assert "more than the curve measures" in efficiency_curve(summaries)["worth"]["classical"]


def test_dihedral_input_aug_reaches_all_eight_symmetries_and_flip_only_four():
    from augkit.evaluate.trainer import _flip

    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(256, 1, 1, 1)
    dihedral = {tuple(t.flatten().tolist()) for t in _flip(x, torch.Generator().manual_seed(0), turns=True)}
    flips = {tuple(t.flatten().tolist()) for t in _flip(x, torch.Generator().manual_seed(0))}
    assert len(dihedral) == 8 and len(flips) == 4 and flips < dihedral


def test_an_ema_of_the_weights_is_what_validation_scores_and_the_run_returns():
    x, y, val = _tiny_task()
    plain = train_run(x, y, val, val, 3, TrainConfig(**FAST, epochs=2, checks_per_epoch=1, ema_decay=0.0), 0, "cpu",
                      keep_model=True)
    averaged = [train_run(x, y, val, val, 3, TrainConfig(**FAST, epochs=2, checks_per_epoch=1, ema_decay=0.9), 0,
                          "cpu", keep_model=True) for _ in range(2)]
    assert averaged[0]["history"] == averaged[1]["history"]  # reproducible
    ema_weights = averaged[0]["model"].state_dict()
    raw_weights = plain["model"].state_dict()  # the same seed and batches: only the averaging differs
    assert any(not torch.equal(ema_weights[k], raw_weights[k]) for k in raw_weights
               if raw_weights[k].is_floating_point())
    assert plain["optimizer_steps"] == averaged[0]["optimizer_steps"]


def test_test_time_views_are_the_training_symmetries():
    from augkit.evaluate.trainer import _flip, views_of

    x = torch.arange(16.0).view(1, 1, 4, 4)
    for aug, n in (("none", 1), ("flip", 4), ("dihedral", 8)):
        seen = {tuple(view(x).flatten().tolist()) for view in views_of(aug)}
        trained = {tuple(t.flatten().tolist()) for t in _flip(x.repeat(256, 1, 1, 1), torch.Generator().manual_seed(0),
                                                              turns=aug == "dihedral")} if aug != "none" else seen
        assert len(seen) == n and seen == trained
    assert len(views_of("dihedral", square=False)) == 4  # a turn would change a non-square image's shape


def test_test_predictions_average_probabilities_over_the_views():
    from augkit.evaluate.trainer import predict, views_of

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    images = torch.randint(0, 256, (64, 8, 8, 3), dtype=torch.uint8)
    views = views_of("dihedral")
    x = images.permute(0, 3, 1, 2).float() * (2 / 255) - 1
    with torch.no_grad():
        by_hand = sum(model(v(x)).softmax(1) for v in views).argmax(1).numpy()
        single = model(x).argmax(1).numpy()
    np.testing.assert_array_equal(predict(model, images, torch.device("cpu"), 16, views), by_hand)
    np.testing.assert_array_equal(predict(model, images, torch.device("cpu"), 16), single)
    assert (by_hand != single).any()  # a model that is not invariant: the averaging is visible


def test_the_protocol_says_how_test_predictions_are_made():
    assert "averaged over 8 views" in TrainConfig(input_aug="dihedral").protocol
    assert "views" not in TrainConfig(input_aug="dihedral", tta=False).protocol
    assert "views" not in TrainConfig(input_aug="none").protocol
    assert TrainConfig.probe("resnet18", 3, 32, 1e-3).tta is False
