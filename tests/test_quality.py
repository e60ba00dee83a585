"""Generative quality (`augkit quality`): the metrics on controlled cases, the CLI and the recipe stage.

Where the metric itself is tested, a fixed random projection of the pixels stands in for the trained
feature extractor (fast, deterministic); the CLI and the recipe tests train the real one for one epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from augkit.data.demo import make_demo
from augkit.data.reader import ArrayDataset, H5Dataset
from augkit.data.writer import DatasetWriter
from augkit.errors import DataError, ParamError
from augkit.quality.assess import QualitySpec, assess
from augkit.quality.distances import frechet_distance, kernel_distance
from augkit.quality.manifold import manifold_scores
from augkit.quality.memorisation import calibrate_threshold, memorisation
from augkit.quality.two_sample import TwoSampleSpec, describe, real_vs_fake


def invoke(*args):
    """`augkit ...` in this process (no interpreter start-up per call)."""
    from click.testing import CliRunner

    from augkit.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)

FAST = ["distances", "manifold", "memorisation"]  # diversity (MS-SSIM) only where it is tested: slower


class RandomProjection:
    """A fixed random linear map of the pixels to 24 dimensions: an extractor without training."""

    identity = {"model": "random-projection", "dim": 24}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def describe(self) -> str:
        return "a fixed random projection of the pixels (test stand-in)"

    def features(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255
        w = np.random.default_rng(self.seed).normal(size=(flat.shape[1], 24)).astype(np.float32)
        return flat @ w / np.sqrt(flat.shape[1])


@pytest.fixture(scope="module")
def demo():
    """Two classes of demo cells at 16 px, cut into two disjoint real samples."""
    images, labels, names = make_demo(n=900, size=16, seed=0)
    keep = np.flatnonzero(np.isin(labels, [0, 1]))[:360]
    images, labels = images[keep], labels[keep]
    half = np.arange(len(keep)) % 2 == 0
    ref = ArrayDataset(images[half], labels[half], names)
    other = ArrayDataset(images[~half], labels[~half], names)
    return ref, other


def _assess(ref, fake, tmp_path, checks=FAST):
    spec = QualitySpec(checks=checks, min_class_images=20, diversity_images=40)
    return assess(ref, fake, RandomProjection(), spec, tmp_path)


# -- the metrics on vectors --------------------------------------------------------------------
def test_frechet_distance_matches_the_closed_form_and_stays_finite_when_n_is_below_d():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 5)), rng.normal(1.0, 2.0, size=(400, 5))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    small = frechet_distance(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))  # singular covariances
    assert np.isfinite(small) and small > 0


def test_kid_is_near_zero_for_one_distribution_and_large_for_two():
    rng = np.random.default_rng(1)
    same, same_std = kernel_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subsets=10, subset_size=100)
    far, _ = kernel_distance(rng.normal(size=(300, 8)), rng.normal(2.0, 1.0, size=(300, 8)), subsets=10, subset_size=100)
    assert abs(same) < 3 * same_std + 0.02
    assert far > 50 * max(abs(same), 0.01)


def test_precision_recall_density_coverage_separate_fidelity_from_variety():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(500, 4))
    matched = manifold_scores(real, rng.normal(size=(500, 4)))
    assert matched["precision"] > 0.85 and matched["recall"] > 0.85 and matched["coverage"] > 0.85
    assert 0.7 < matched["density"] < 1.4
    far = manifold_scores(real, rng.normal(8.0, 1.0, size=(500, 4)))
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0
    collapsed = manifold_scores(real, rng.normal(0, 0.05, size=(500, 4)))  # all near one point: real-looking
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.1 and collapsed["coverage"] < 0.1


def test_the_copy_threshold_is_a_low_quantile_of_real_nearest_neighbour_distances():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 6))
    threshold = calibrate_threshold(real, percentile=1.0)
    assert 0 < threshold < np.median(np.sort(np.linalg.norm(real[:, None] - real[None], axis=2), 1)[:, 1])
    assert calibrate_threshold(np.concatenate([real, real[:10]]), percentile=1.0) < 1e-6  # exact duplicates count


# -- the controlled cases on images ------------------------------------------------------------
def test_a_disjoint_real_sample_is_close_and_noise_is_far(demo, tmp_path):
    ref, other = demo
    near = _assess(ref, other, tmp_path / "near")
    rng = np.random.default_rng(0)
    noise = ArrayDataset(rng.integers(0, 256, (len(other), 16, 16, 3), dtype=np.uint8), other.labels, other.class_names)
    far = _assess(ref, noise, tmp_path / "far")
    assert near["overall"]["precision"] > 0.8 and near["overall"]["recall"] > 0.8
    # noise lands outside every real neighbourhood; (recall is not asserted: the noise set's own k-NN balls
    # are wide, the outlier weakness that density and coverage were designed against)
    assert far["overall"]["precision"] < 0.05 and far["overall"]["coverage"] < 0.05
    assert far["overall"]["density"] < 0.05 < 0.7 < near["overall"]["density"]
    assert far["overall"]["fd"] > 20 * near["overall"]["fd"]
    assert far["overall"]["kid"] > 20 * abs(near["overall"]["kid"])
    assert [r["class"] for r in near["classes"]] == list(ref.class_names[:2]) + list(ref.class_names[2:])
    per_class = [r for r in near["classes"] if r["fake_n"]]
    assert len(per_class) == 2 and all(r["precision"] > 0.7 for r in per_class)
    assert all("n too small" in r["note"] or r["note"] == "no generated images" for r in near["classes"][2:])
    assert near["extractor"]["description"].startswith("a fixed random projection")
    assert (tmp_path / "near" / "closest_pairs.png").is_file() and near["worst_classes"]


def test_a_planted_collapse_is_flagged(demo, tmp_path):
    ref, other = demo
    images, labels = other.images.copy(), other.labels
    first = np.flatnonzero(labels == 0)
    images[first] = images[first[0]]  # class 0: one image, repeated
    result = _assess(ref, ArrayDataset(images, labels, other.class_names), tmp_path, FAST + ["diversity"])
    rows = {r["class"]: r for r in result["classes"]}
    assert rows[other.class_names[0]]["collapsed"] and rows[other.class_names[0]]["fake_ms_ssim"] > 0.99
    assert not rows[other.class_names[1]]["collapsed"]
    assert rows[other.class_names[0]]["recall"] < 0.2 < rows[other.class_names[1]]["recall"]


def test_a_planted_copy_of_a_training_image_is_flagged_as_memorised(demo, tmp_path):
    ref, other = demo
    images = other.images.copy()
    images[7] = ref.images[11]
    result = _assess(ref, ArrayDataset(images, other.labels, other.class_names), tmp_path)
    mem = result["memorisation"]
    assert mem["closest"][0]["pixel_distance"] < 1e-6 and mem["closest"][0]["copy"]
    assert mem["closest"][0]["real_row"] == int(ref.rows[11])
    assert 1 <= mem["copies"] <= 0.05 * mem["checked"]  # a disjoint real sample is mostly not a copy

    direct = memorisation(images, ref.images, RandomProjection().features(images), RandomProjection().features(ref.images))
    assert direct["copy"][7] and direct["pixel_index"][7] == 11 and direct["feature_distance"][7] < 1e-5
    assert np.array_equal(direct["copy"], direct["pixel_close"] & direct["feature_close"])  # close in both
    # thresholds from an earlier call test more images against the same real set without recalibrating
    again = memorisation(images[:20], ref.images, RandomProjection().features(images[:20]),
                         RandomProjection().features(ref.images), thresholds=direct["thresholds"])
    assert again["thresholds"] == direct["thresholds"] and np.array_equal(again["copy"], direct["copy"][:20])


def test_the_two_sample_classifier_tells_noise_from_cells_and_gives_an_interval(demo):
    ref, _ = demo
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 16, 16, 3), dtype=np.uint8)
    result = real_vs_fake(ref.images[:120], noise, TwoSampleSpec(model="test_resnet", epochs=4, batch_size=16), "cpu")
    assert result["per_side"] == 120 and result["test_images"] == 60
    assert result["accuracy"] > 0.75 and result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert result["p_value"] < 0.01
    assert not result["inconclusive"] and "held-out accuracy" in describe(result, 0.71)


def test_a_two_sample_classifier_that_calls_every_image_one_side_is_inconclusive_not_indistinguishable(demo, monkeypatch):
    import augkit.quality.two_sample as two_sample

    ref, _ = demo

    def learnt_nothing(x, y, val, spec, names, device, test, label):  # predicts the prior: "real" for all
        return None, {"y_pred": np.zeros(len(test[1]), np.int64), "best_epoch": 1}

    monkeypatch.setattr(two_sample.Classifier, "fit", staticmethod(learnt_nothing))
    result = real_vs_fake(ref.images[:60], ref.images[60:120], TwoSampleSpec(model="test_resnet", epochs=1), "cpu")
    assert result["accuracy"] == 0.5 and result["inconclusive"] and result["predicted_generated"] == 0.0
    line = describe(result, 0.71)
    assert line.startswith("inconclusive: the classifier called 100% of the 30 held-out images 'real'")
    assert "indistinguishable" not in line


@pytest.mark.parametrize("balanced, uninformative", [(0.55, True), (0.58, False)])  # 8 classes: the line at 0.5625
def test_a_cas_whose_real_trained_reference_learnt_little_is_called_uninformative(monkeypatch, balanced, uninformative):
    import augkit.quality.cas as cas_module
    from augkit.quality.checks import _cas_rows

    def trained(images, labels, test, num_classes, spec, device, label):
        # the reference's plain accuracy is high either way (a test set dominated by one class): only its
        # balanced accuracy, whose chance is 1/classes, tells whether it learnt the classes
        if label.startswith("reference"):
            return {"accuracy": 0.9, "balanced_accuracy": balanced, "per_class_recall": [0.9] * num_classes}
        return {"accuracy": 0.5, "balanced_accuracy": 0.5, "per_class_recall": [0.5] * num_classes}

    monkeypatch.setattr(cas_module, "_one", trained)
    images = np.zeros((80, 8, 8, 3), np.uint8)
    labels = np.repeat(np.arange(8), 10)
    result = cas_module.classification_accuracy_score((images, labels), (images, labels), 8,
                                                      cas_module.CASSpec(epochs=2), "cpu", real=(images, labels))
    assert result["uninformative"] is uninformative
    line = cas_module.describe(result)
    row = _cas_rows({"overall": {"cas_accuracy": 0.5, "reference_accuracy": 0.9}, "cas": result})[0]
    if uninformative:
        assert line.startswith("uninformative: the reference trained on as many real images reached a balanced "
                               "accuracy of only 0.550 (chance 0.125) in 2 epochs")
        assert "--cas-epochs" in line and "cas_epochs in a recipe's [quality]" in line and line in row
    else:
        assert line == "CAS 0.500 vs 0.900 when trained on as many real images"
        assert "uninformative" not in row and "train on as many real images: 0.9" in row


def test_each_assessment_classifier_trains_a_floor_of_steps_on_small_sets_and_as_asked_on_large_ones():
    spec = QualitySpec()  # at least 300 steps of batch 64, within 30 epochs
    assert spec.floored_epochs(3, 9564, 64) == 3  # PBC's full training split: 3 x 149 steps already
    assert spec.floored_epochs(3, 955, 64) == 22  # its 10%: 14 steps an epoch
    assert spec.floored_epochs(3, 955, 32) == 11  # smaller batches: more steps an epoch, fewer epochs
    assert spec.floored_epochs(3, 40, 64) == 30  # a tiny set: the cap, not 300 epochs
    assert spec.floored_epochs(40, 955, 64) == 40  # asking for more is never cut
    assert QualitySpec(min_steps=0).floored_epochs(3, 955, 64) == 3  # off: the epochs as given


def test_unknown_checks_and_mismatched_classes_or_sizes_are_clear_errors(demo, tmp_path):
    ref, other = demo
    with pytest.raises(ValueError, match="unknown check 'fd'.*distances"):
        QualitySpec(checks=["fd"])
    renamed = ArrayDataset(other.images, other.labels, ["x" + n for n in other.class_names])
    with pytest.raises(DataError, match="class 'x.*is not a class of the real dataset.*--overall-only"):
        _assess(ref, renamed, tmp_path)
    small = ArrayDataset(other.images[:, :8, :8], other.labels, other.class_names)
    with pytest.raises(DataError, match="8x8 px but the real images .* 16x16"):
        _assess(ref, small, tmp_path)


# -- the command line --------------------------------------------------------------------------
def _write(path: Path, images, labels, names, origins=("real",), origin=0) -> Path:
    with DatasetWriter(path, class_names=names, image_size=images.shape[1], origins=origins) as w:
        w.append(images, labels, origin=origin)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """real.h5 (demo, 3 classes, 16 px) with a split, and a shard of other demo images."""
    folder = tmp_path_factory.mktemp("quality")
    images, labels, names = make_demo(n=600, size=16, seed=0)
    keep = np.flatnonzero(labels < 3)
    images, labels = images[keep], labels[keep]
    real = _write(folder / "real.h5", images[: len(keep) // 2 + 60], labels[: len(keep) // 2 + 60], names)
    _write(folder / "shard.h5", images[len(keep) // 2 + 60:], labels[len(keep) // 2 + 60:], names,
           origins=("real", "planted"), origin=1)
    assert invoke("-q", "data", "split", str(real), "--out", str(folder / "split.json")).exit_code == 0
    return folder


def test_cli_writes_json_and_markdown_that_name_the_extractor_and_never_use_test_rows(files, tmp_path, monkeypatch):
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    common = ["-q", "quality", "--real", str(files / "real.h5"), "--fake", str(files / "shard.h5"), "--split",
              str(files / "split.json"), "--n-per-class", "60", "--device", "cpu"]
    args = [*common, "--features", "test_resnet", "--epochs", "1", "--cas-epochs", "1", "--two-sample-epochs", "1",
            "--min-steps", "4"]
    done = invoke(*args, "--out", str(tmp_path / "q"))
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "q" / "quality.json").read_text())
    split = json.loads((files / "split.json").read_text())
    # each classifier trains at least 4 steps of batch 64: more than the 1 epoch asked of these few images
    floor = QualitySpec(min_steps=4)
    n_fake = len(H5Dataset(files / "shard.h5"))
    assert result["cas"]["epochs"] == floor.floored_epochs(1, n_fake, 64) > 1
    assert result["two_sample"]["epochs"] == floor.floored_epochs(1, result["two_sample"]["per_side"], 64) > 1
    assert result["extractor"]["epochs"] > 1 and "trained for 1 epoch" not in result["extractor"]["description"]
    assert result["real_images"] == len(split["train"]) and result["real"]["rows"] == "the split's training rows"
    assert result["cas"]["test_images"] == len(split["val"]) and result["cas"]["reference"] is not None
    assert 0 <= result["two_sample"]["accuracy"] <= 1 and result["memorisation"]["checked"] > 0
    assert 0 <= result["memorisation"]["held_out_real_copy_rate"] <= 1  # the rate of certain non-copies
    assert result["extractor"]["model"] == "test_resnet" and len(result["extractor"]["weights_sha256"]) == 64
    text = (tmp_path / "q" / "quality.md").read_text()
    assert "augkit's own test_resnet classifier" in text and "not Inception" in text
    assert "| precision |" in text and "## Per class" in text and "generative quality" in done.stdout

    again = invoke(*args, "--out", str(tmp_path / "q2"), "--checks", "distances")
    assert again.exit_code == 0, again.output
    assert "reusing the test_resnet feature extractor" in again.stderr  # trained once per data and split
    assert len(list((tmp_path / "cache" / "quality" / "features").glob("*.npy"))) == 2
    second = json.loads((tmp_path / "q2" / "quality.json").read_text())
    assert second["overall"]["fd"] == pytest.approx(result["overall"]["fd"])  # same features, same sample
    by_folder = invoke(*common, "--features", result["extractor"]["folder"], "--checks", "distances",
                       "--out", str(tmp_path / "q3"))
    assert by_folder.exit_code == 0, by_folder.output
    third = json.loads((tmp_path / "q3" / "quality.json").read_text())
    assert third["extractor"]["weights_sha256"] == result["extractor"]["weights_sha256"]
    assert third["overall"]["fd"] == pytest.approx(result["overall"]["fd"])

    exists = invoke(*args, "--out", str(tmp_path / "q"))
    assert exists.exit_code == 2 and "already exists; pass --force" in exists.stderr


def test_cli_names_the_file_when_classes_or_sizes_do_not_match(files, tmp_path):
    images = np.zeros((20, 16, 16, 3), np.uint8)
    odd = _write(tmp_path / "odd.h5", images, np.zeros(20, np.int64), ["blast"], origins=("real", "x"), origin=1)
    done = invoke("quality", "--real", str(files / "real.h5"), "--fake", str(odd), "--out", str(tmp_path / "o"))
    assert done.exit_code == 2 and f"{odd}: class 'blast' is not a class of" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
    big = _write(tmp_path / "big.h5", np.zeros((4, 24, 24, 3), np.uint8), np.zeros(4, np.int64),
                 list(H5Dataset(files / "real.h5").class_names), origins=("real", "x"), origin=1)
    done = invoke("quality", "--real", str(files / "real.h5"), "--fake", str(big), "--out", str(tmp_path / "o"))
    assert done.exit_code == 2 and f"{big}: images are 24x24 px" in done.stderr
    done = invoke("quality", "--real", str(files / "real.h5"), "--fake", str(files / "shard.h5"), "--features",
                  str(tmp_path / "no-extractor"), "--out", str(tmp_path / "o"))
    assert done.exit_code == 2 and "no-extractor: no such extractor folder" in done.stderr


# -- the recipe stage --------------------------------------------------------------------------
RECIPE = """
[data]
source = "demo"
image_size = 16
demo_images = 240

[[augment]]
name = "classical"
amount = 0.5

[quality]
features = "test_resnet"
epochs = 1
checks = ["distances", "manifold", "diversity", "memorisation"]
min_class_images = 10
min_steps = 0
"""


def test_a_recipe_quality_stage_is_recorded_skipped_on_resume_and_reported(tmp_path, monkeypatch):
    from augkit.recipe import load_recipe
    from augkit.runner import run_recipe

    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "q.toml"
    path.write_text(RECIPE)
    recipe = load_recipe(path, out=tmp_path / "run")
    assert recipe.quality.features == "test_resnet" and recipe.resolved["quality"]["enabled"] is True
    run_recipe(recipe, device="cpu")
    stages = json.loads((tmp_path / "run" / "state.json").read_text())["stages"]
    assert stages["quality classical"]["path"] == str(tmp_path / "run" / "quality" / "classical")
    result = json.loads((tmp_path / "run" / "quality" / "classical" / "quality.json").read_text())
    assert result["checks"] == ["distances", "manifold", "diversity", "memorisation"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Generative quality" in report and "not from Inception" in report
    assert "(quality/classical/closest_pairs.png)" in report
    assert "quality/classical/closest_pairs.png" not in (tmp_path / "run" / "report.html").read_text()  # embedded
    lines = []
    run_recipe(load_recipe(path, out=tmp_path / "run"), device="cpu", resume=True, say=lines.append)
    assert "quality classical: done before" in "\n".join(lines)
    off = load_recipe(path, ["quality.enabled=false"], out=tmp_path / "off")
    assert off.quality is None and off.resolved["quality"]["enabled"] is False


def test_recipe_mistakes_in_quality_name_the_file_line_and_key(tmp_path):
    from augkit.recipe import load_recipe

    path = tmp_path / "q.toml"
    path.write_text(RECIPE.replace('checks = ["distances"', 'checks = ["fid"').replace("epochs = 1", "epochz = 1"))
    with pytest.raises(ParamError, match=r"q.toml, line \d+: \[quality\]: unknown key 'epochz'; did you mean 'epochs'"):
        load_recipe(path)
    path.write_text(RECIPE.replace('checks = ["distances"', 'checks = ["fid"'))
    with pytest.raises(ParamError, match=r"q.toml, line 14: \[quality\]: key 'checks': unknown check 'fid'"):
        load_recipe(path)


# -- checks are registered: a plugin adds one ------------------------------------------------------
def test_a_plugin_adds_a_quality_check_with_its_numbers_and_report_rows(demo, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from augkit import hookimpl, registry
    from augkit.quality.checks import QualityCheck
    from augkit.quality.report import quality_markdown

    def mean_brightness(a):
        real, fake = a.read_whole(a.real).mean(), a.read_whole(a.fake).mean()
        a.result["overall"]["brightness_gap"] = float(fake - real)
        for label, row in a.comparable_classes():
            row["brightness_gap"] = float(a.fake.read(a.fake_pos[label]).mean() - a.real.read(a.real_pos[label]).mean())

    check = QualityCheck(
        "brightness", mean_brightness,
        overall_rows=lambda r: [f"| brightness gap | {r['overall']['brightness_gap']:+.2f} | grey levels |"],
        class_columns=lambda r: [("brightness gap", lambda row: f"{row.get('brightness_gap', 0):+.2f}")])
    reg = registry.Registry().load_plugins()
    info = reg.register(SimpleNamespace(augkit_quality_checks=hookimpl(lambda: [check])), "bright")
    assert info.error is None and info.quality_checks == ["brightness"]
    monkeypatch.setattr(registry, "_default", reg)

    ref, other = demo
    darker = type(other)(other.images // 2, other.labels, other.class_names)
    result = _assess(ref, darker, tmp_path, checks=["distances", "brightness"])
    assert result["checks"] == ["distances", "brightness"]
    assert result["overall"]["brightness_gap"] < -20 and "fd" in result["overall"]
    compared = [row for row in result["classes"] if not row["note"]]
    assert len(compared) == 2 and all(row["brightness_gap"] < -20 for row in compared)
    text = quality_markdown(result, "q")
    assert "| brightness gap | -" in text and "brightness gap |" in text.split("Per class")[1]
    with pytest.raises(ValueError, match="unknown check 'brightnes'; did you mean 'brightness'"):
        QualitySpec(checks=["brightnes"])
    bad = reg.register(SimpleNamespace(augkit_quality_checks=hookimpl(lambda: ["not a check"])), "bad")
    assert "is not an augkit.quality.checks.QualityCheck" in bad.error
