"""The evaluator: metrics, confidence intervals, the leakage guard, determinism, reports, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augkit.augment import Context
from augkit.data import DatasetWriter, H5Dataset, import_source, stratified_split
from augkit.errors import DataError, UserError
from augkit.evaluate import evaluate
from augkit.evaluate.metrics import bootstrap_interval, classification_metrics, compare_arms, seed_interval
from augkit.generate import augment_to_file
from augkit.registry import get_augmenter

FAST = {"model": "test_resnet", "epochs": 2, "batch_size": 16, "lr": 3e-3}


def test_metrics_match_a_hand_computed_confusion_matrix():
    # confusion (rows true, cols predicted): [[3, 1, 0], [0, 2, 2], [1, 0, 1]]
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 2])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["confusion"] == [[3, 1, 0], [0, 2, 2], [1, 0, 1]]
    precision = [3 / 4, 2 / 3, 1 / 3]
    recall = [3 / 4, 2 / 4, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    np.testing.assert_allclose(m["per_class"]["precision"], precision)
    np.testing.assert_allclose(m["per_class"]["recall"], recall)
    np.testing.assert_allclose(m["per_class"]["f1"], f1)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert m["weighted_f1"] == pytest.approx(np.dot(f1, [4, 4, 2]) / 10)
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_a_class_never_predicted_counts_as_zero_not_an_error():
    m = classification_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]), 4)
    assert m["per_class"]["precision"][1] == 0 and m["per_class"]["support"] == [1, 1, 1, 0]


def test_seed_interval_is_a_t_interval():
    mean, low, high = seed_interval(np.array([[0.01], [0.03], [0.02]]))
    assert mean[0] == pytest.approx(0.02)
    # t(0.975, 2) = 4.303, sd = 0.01, sem = 0.01 / sqrt(3)
    assert high[0] - mean[0] == pytest.approx(4.3027 * 0.01 / np.sqrt(3), rel=1e-3)


def test_paired_bootstrap_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    a = np.where(rng.random(400) < 0.6, y, (y + 1) % 3)
    better = np.where(rng.random(400) < 0.5, y, a)  # fixes about half of a's mistakes
    point, low, high = bootstrap_interval(y, a, better, 3, n_boot=300)
    assert point[1] > 0 and low[1] > 0  # index 1: macro F1
    same_point, same_low, same_high = bootstrap_interval(y, a, a, 3, n_boot=50)
    assert same_point[0] == 0 and same_low[0] == 0 == same_high[0]
    runs = [{"metrics": classification_metrics(y, a, 3), "y_true": y.tolist(), "y_pred": a.tolist()}]
    runs_b = [{"metrics": classification_metrics(y, better, 3), "y_true": y.tolist(), "y_pred": better.tolist()}]
    out = compare_arms(runs, runs_b, 3, n_boot=100)
    assert out["weighted_f1"]["includes_zero"] is False and len(out["recall"]) == 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    import_source("demo", d / "demo.h5", size=16, n=240, seed=0)
    base = H5Dataset(d / "demo.h5")
    split = stratified_split(base, seed=0)
    split.save(d / "split.json")
    augment_to_file(get_augmenter("classical"), split.apply(base, "train"), d / "shard.h5", 0.5,
                    Context(seed=0, device="cpu"))
    return d


def test_evaluate_writes_every_report_file_and_is_deterministic(demo, tmp_path):
    arms = ["baseline", f"classical={demo / 'shard.h5'}"]
    a = evaluate(demo / "demo.h5", arms, tmp_path / "a", split=demo / "split.json", config=FAST, device="cpu",
                 n_boot=50)
    for name in ("metrics.json", "report.md", "confusion_baseline.png", "confusion_classical.png", "deltas.png",
                 "split.json", "runs/baseline-seed0.json", "runs/classical-seed0.json"):
        assert (tmp_path / "a" / name).is_file(), name
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["arms"]["classical"]["synthetic_rows"] == a["arms"]["classical"]["synthetic_rows"] > 0
    assert saved["arms"]["baseline"]["runs"][0]["seed"] == 0
    assert "bootstrap" in saved["deltas"]["classical"]["method"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| classical |" in report and "Per-class deltas" in report
    b = evaluate(demo / "demo.h5", arms, tmp_path / "b", split=demo / "split.json", config=FAST, device="cpu",
                 n_boot=50)
    for arm in ("baseline", "classical"):
        assert a["arms"][arm]["runs"][0]["metrics"] == b["arms"][arm]["runs"][0]["metrics"]
        assert a["arms"][arm]["runs"][0]["history"] == b["arms"][arm]["runs"][0]["history"]


def test_finished_runs_are_reused_when_evaluation_restarts(demo, tmp_path):
    first = evaluate(demo / "demo.h5", ["baseline"], tmp_path, split=demo / "split.json",
                     config={**FAST, "epochs": 1}, device="cpu")
    run_file = tmp_path / "runs" / "baseline-seed0.json"
    stamp = run_file.stat().st_mtime_ns
    again = evaluate(demo / "demo.h5", ["baseline"], tmp_path, split=demo / "split.json",
                     config={**FAST, "epochs": 1}, device="cpu")
    assert run_file.stat().st_mtime_ns == stamp and again["arms"] == first["arms"]


def test_synthetic_rows_from_held_out_images_are_refused(demo, tmp_path):
    base = H5Dataset(demo / "demo.h5")
    # a shard made from ALL real images (no split) has parents in validation and test
    augment_to_file(get_augmenter("classical"), base.real(), tmp_path / "leaky.h5", 0.5, Context(seed=0, device="cpu"))
    with pytest.raises(DataError, match="derive from validation/test images"):
        evaluate(demo / "demo.h5", [f"leaky={tmp_path / 'leaky.h5'}"], tmp_path / "o", split=demo / "split.json",
                 config=FAST, device="cpu")


def test_validation_and_test_hold_real_rows_only(demo, tmp_path):
    """Even a split that names synthetic rows cannot put them in validation or test."""
    from augkit.data import Split

    merged = tmp_path / "merged.h5"
    base = H5Dataset(demo / "demo.h5")
    split = stratified_split(base, seed=0)
    augment_to_file(get_augmenter("classical"), split.apply(base, "train"), merged, {"per_class": 2},
                    Context(seed=0, device="cpu"), base=base)
    m = H5Dataset(merged)
    synthetic_row = int(np.flatnonzero(m.origin == 1)[0])
    bad = Split(train=split.train, val=np.append(split.val, synthetic_row), test=split.test, seed=0,
                fingerprint=m.info.fingerprint)
    with pytest.raises(DataError, match="validation split: holds synthetic rows"):
        evaluate(merged, ["baseline"], tmp_path / "o", split=bad, config=FAST, device="cpu")


def test_external_test_set_is_matched_by_class_name(demo, tmp_path):
    base = H5Dataset(demo / "demo.h5")
    names = list(base.class_names)
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "locked.h5", class_names=names[::-1], image_size=16) as w:
        w.append(rng.integers(0, 256, (len(names), 16, 16, 3), dtype=np.uint8), np.arange(len(names)))
    out = evaluate(demo / "demo.h5", ["baseline"], tmp_path / "o", test=tmp_path / "locked.h5",
                   config={**FAST, "epochs": 1}, device="cpu")
    run = json.loads((tmp_path / "o" / "runs" / "baseline-seed0.json").read_text())
    # row k of the locked file is class names[::-1][k], i.e. index len-1-k of the training data
    assert run["y_true"] == list(range(len(names)))[::-1] and out["test_source"].endswith("locked.h5")
    with DatasetWriter(tmp_path / "other.h5", class_names=[*names[:-1], "megakaryocyte"], image_size=16) as w:
        w.append(np.zeros((1, 16, 16, 3), np.uint8), [0])
    with pytest.raises(DataError, match=r"class names differ .*lacks \['platelet'\].*unknown \['megakaryocyte'\]"):
        evaluate(demo / "demo.h5", ["baseline"], tmp_path / "o2", test=tmp_path / "other.h5", config=FAST,
                 device="cpu")


def test_bad_inputs_are_clear_errors(demo, tmp_path):
    data = demo / "demo.h5"
    with pytest.raises(UserError, match="unknown timm model 'resnet81'; close matches: .*resnet18"):
        evaluate(data, ["baseline"], tmp_path / "o", config={**FAST, "model": "resnet81"}, device="cpu")
    with pytest.raises(UserError, match="hub cannot be downloaded"):
        evaluate(data, ["baseline"], tmp_path / "o", config={**FAST, "pretrained": "imagenet"}, device="cpu")
    with pytest.raises(UserError, match="arm 'empty': give at least one shard"):
        evaluate(data, ["empty="], tmp_path / "o", config=FAST, device="cpu")
    with pytest.raises(DataError, match="holds no synthetic rows"):
        evaluate(data, [f"realonly={data}"], tmp_path / "o", config=FAST, device="cpu")
    base = H5Dataset(data)
    with DatasetWriter(tmp_path / "renamed.h5", class_names=[n.upper() for n in base.class_names], image_size=16,
                       origins=["real", "gan"]) as w:
        w.append(np.zeros((2, 16, 16, 3), np.uint8), [0, 1], origin=1)
    with pytest.raises(DataError, match="arm 'gan': .*renamed.h5: class names differ"):
        evaluate(data, [f"gan={tmp_path / 'renamed.h5'}"], tmp_path / "o", config=FAST, device="cpu")
    assert not (tmp_path / "o").exists()  # nothing is written before the inputs are checked


def test_equal_steps_is_the_default_and_plain_epochs_an_explicit_option(demo, tmp_path):
    arms = ["baseline", f"classical={demo / 'shard.h5'}"]
    config = {**FAST, "epochs": 1}
    by_epochs = evaluate(demo / "demo.h5", arms, tmp_path / "a", split=demo / "split.json",
                         config={**config, "equal_steps": False}, device="cpu", n_boot=50)
    steps = {arm: by_epochs["arms"][arm]["runs"][0]["optimizer_steps"] for arm in ("baseline", "classical")}
    assert steps["classical"] > steps["baseline"]  # epochs over a larger set: more steps (the confound)
    assert "plain epochs" in by_epochs["protocol"]
    default = evaluate(demo / "demo.h5", arms, tmp_path / "b", split=demo / "split.json", config=config,
                       device="cpu", n_boot=50)
    assert default["config"]["equal_steps"] is True and "equal optimiser steps" in default["protocol"]
    assert default["arms"]["classical"]["runs"][0]["optimizer_steps"] == steps["baseline"]
    assert default["arms"]["baseline"]["runs"][0]["optimizer_steps"] == steps["baseline"]


def test_a_baseline_is_shared_by_evaluations_that_differ_only_in_what_synthetic_rows_do(demo, tmp_path):
    arms = ["baseline", f"classical={demo / 'shard.h5'}"]
    # weights that barely move: validation flat from the first check, so the cut comes at the second
    config = {**FAST, "epochs": 3, "lr": 1e-12, "patience": 1, "patience_steps": 0}
    cache = tmp_path / "cache"
    mixed = evaluate(demo / "demo.h5", arms, tmp_path / "a", split=demo / "split.json", config=config, device="cpu",
                     n_boot=50, run_cache=cache)
    phased = evaluate(demo / "demo.h5", arms, tmp_path / "b", split=demo / "split.json",
                      config={**config, "synthetic_phase": "before_cut"}, device="cpu", n_boot=50, run_cache=cache)
    assert mixed["reused_runs"] == [] and phased["reused_runs"] == ["baseline seed 0"]  # the augmented arm trains
    assert phased["config"]["synthetic_phase"] == "before_cut" and "learning-rate cut" in phased["protocol"]
    again = evaluate(demo / "demo.h5", arms, tmp_path / "b", split=demo / "split.json",
                     config={**config, "synthetic_phase": "before_cut"}, device="cpu", n_boot=50, run_cache=cache)
    assert again["reused_runs"] == [] and again["arms"] == phased["arms"]  # both runs finished in its folder
    until = phased["arms"]["classical"]["runs"][0]["synthetic_until_step"]
    assert until is not None and f"real images alone from step {until}" in (tmp_path / "b" / "report.md").read_text()
    assert mixed["arms"]["classical"]["runs"][0]["synthetic_until_step"] is None
    weighted = evaluate(demo / "demo.h5", arms, tmp_path / "c", split=demo / "split.json",
                        config={**config, "synthetic_weight": 0.25}, device="cpu", n_boot=50, run_cache=cache)
    assert weighted["reused_runs"] == ["baseline seed 0"] and "weighs 0.25" in weighted["protocol"]


def test_an_arm_with_a_shard_per_seed_trains_each_seed_on_its_own(demo, tmp_path):
    """``a.h5|b.h5``: seed 0 trains on a, seed 1 on b, exactly as an arm of that one shard would, so the
    seed-to-seed spread holds the variation between generator runs; such runs share the cache."""
    base = H5Dataset(demo / "demo.h5")
    other = tmp_path / "other.h5"
    augment_to_file(get_augmenter("classical"), stratified_split(base, seed=0).apply(base, "train"), other, 0.25,
                    Context(seed=1, device="cpu"))
    shard = demo / "shard.h5"
    config = {**FAST, "epochs": 1}
    kw = dict(split=demo / "split.json", config=config, device="cpu", n_boot=50)
    cache = tmp_path / "cache"
    one = evaluate(demo / "demo.h5", ["baseline", f"g={shard}"], tmp_path / "one", seeds=[0], run_cache=cache, **kw)
    two = evaluate(demo / "demo.h5", ["baseline", f"g={other}"], tmp_path / "two", seeds=[1], run_cache=cache, **kw)
    alone = {0: one["arms"]["g"]["runs"][0], 1: two["arms"]["g"]["runs"][0]}
    assert alone[0]["synthetic_rows"] != alone[1]["synthetic_rows"]
    each = evaluate(demo / "demo.h5", ["baseline", f"g={shard}|{other}"], tmp_path / "each", seeds=2, **kw)
    for seed, run in enumerate(each["arms"]["g"]["runs"]):
        assert run["seed"] == seed and run["train_counts"] == alone[seed]["train_counts"]
        assert run["history"] == alone[seed]["history"] and run["metrics"] == alone[seed]["metrics"]
    assert each["arms"]["g"]["shards_per_seed"] == [[str(shard)], [str(other)]]
    report = (tmp_path / "each" / "report.md").read_text()
    assert "Arm `g`: each seed trains on its own synthetic images" in report and "one draw, shared" not in report
    # the folder's finished runs serve only the same images: an arm renamed onto other shards trains again
    moved = evaluate(demo / "demo.h5", ["baseline", f"g={shard}"], tmp_path / "each", seeds=2, **kw)
    assert moved["arms"]["g"]["runs"][1]["train_counts"] == alone[0]["train_counts"]
    assert moved["arms"]["g"]["runs"][0]["history"] == alone[0]["history"]
    # the same runs, found in the cache: nothing trains
    cached = evaluate(demo / "demo.h5", ["baseline", f"g={shard}|{other}"], tmp_path / "cached", seeds=2,
                      run_cache=cache, **kw)
    assert sorted(cached["reused_runs"]) == ["baseline seed 0", "baseline seed 1", "g seed 0", "g seed 1"]
    # a shard shared by every seed joins the per-seed one; an arm without per-seed shards keeps the old line
    mixed = evaluate(demo / "demo.h5", ["baseline", f"g={shard}|{other}", f"c={shard}", f"c+g={shard},{shard}|{other}"],
                     tmp_path / "mixed", seeds=2, run_cache=cache, **kw)
    assert [r["synthetic_rows"] for r in mixed["arms"]["c+g"]["runs"]] == [
        2 * alone[0]["synthetic_rows"], alone[0]["synthetic_rows"] + alone[1]["synthetic_rows"]]
    report = (tmp_path / "mixed" / "report.md").read_text()
    assert "Arms `g`, `c+g`: each seed trains on its own" in report and "Arm `c`: synthetic images are one draw" in report
    assert "In `c+g`, shard.h5 is shared by all seeds: one draw, not covered." in report
    # a seed's shards keep the order written: shared part last is the arm written so, run for run
    last = evaluate(demo / "demo.h5", ["baseline", f"g+c={shard}|{other},{shard}"], tmp_path / "last", seeds=2,
                    run_cache=cache, **kw)
    # seed 0 (shard, shard) is c+g's seed 0 exactly; seed 1 (other, shard) is c+g's (shard, other) reversed
    assert last["reused_runs"] == ["baseline seed 0", "baseline seed 1", "g+c seed 0"]
    written = evaluate(demo / "demo.h5", ["baseline", f"g+c={other},{shard}"], tmp_path / "written", seeds=[1], **kw)
    assert written["arms"]["g+c"]["runs"][0]["history"] == last["arms"]["g+c"]["runs"][1]["history"]


@pytest.mark.parametrize("arm, seeds, message", [
    ("g={shard}|{shard}", 3, "2 shards separated by '\\|', one per seed, but 3 seed"),
    ("g={shard}|", 2, "an empty shard name"),
    ("g={shard}|{shard},{shard}|{shard}|{shard}", 2, "name 2 and 3 shards"),
])
def test_per_seed_shards_that_do_not_match_the_seeds_are_refused(demo, tmp_path, arm, seeds, message):
    with pytest.raises(UserError, match=message):
        evaluate(demo / "demo.h5", ["baseline", arm.format(shard=demo / "shard.h5")], tmp_path / "o", seeds=seeds,
                 split=demo / "split.json", config=FAST, device="cpu")
    assert not (tmp_path / "o").exists()


def test_versus_compares_two_augmented_arms_paired_by_seed(demo, tmp_path):
    """classical+more vs classical: the Δ is the reference's runs subtracted seed by seed, read and
    reported as the baseline comparisons are."""
    base = H5Dataset(demo / "demo.h5")
    split = stratified_split(base, seed=0)
    augment_to_file(get_augmenter("classical"), split.apply(base, "train"), tmp_path / "more.h5", 0.5,
                    Context(seed=1, device="cpu"))
    arms = ["baseline", f"classical={demo / 'shard.h5'}", f"classical+more={demo / 'shard.h5'},{tmp_path / 'more.h5'}"]
    out = evaluate(demo / "demo.h5", arms, tmp_path / "o", split=demo / "split.json", seeds=2,
                   config={**FAST, "epochs": 1}, device="cpu", n_boot=50, versus=["classical+more=classical"])
    c = out["versus"]["classical+more vs classical"]
    assert (c["arm"], c["reference"]) == ("classical+more", "classical")
    f1 = {arm: [r["metrics"]["weighted_f1"] for r in out["arms"][arm]["runs"]] for arm in ("classical", "classical+more")}
    assert c["weighted_f1"]["delta"] == pytest.approx(np.mean(f1["classical+more"]) - np.mean(f1["classical"]))
    assert c["covers_training_noise"] and "x 1 comparisons" in c["correction"]
    assert all("p_holm" in e for e in c["f1"])
    assert set(out["deltas"]) == {"classical", "classical+more"}  # the baseline comparisons are unchanged
    report = (tmp_path / "o" / "report.md").read_text()
    assert "| classical+more | classical |" in report and "## Per-class deltas: classical+more − classical" in report
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["versus"]["classical+more vs classical"]["weighted_f1"] == c["weighted_f1"]


@pytest.mark.parametrize("versus, message", [
    ("classical", "expected ARM=REFERENCE"),
    ("classical=cgan", "no arm named 'cgan' \\(arms: baseline, classical\\)"),
    ("classical=baseline", "compared with the baseline already"),
    ("classical=classical", "compared with itself"),
])
def test_a_bad_versus_is_refused_before_anything_trains(demo, tmp_path, versus, message):
    with pytest.raises(UserError, match=message):
        evaluate(demo / "demo.h5", ["baseline", f"classical={demo / 'shard.h5'}"], tmp_path / "o",
                 split=demo / "split.json", config=FAST, device="cpu", versus=[versus])
    assert not (tmp_path / "o").exists()
