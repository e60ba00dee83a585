"""`augkit run`: the run folder, the model cache, resume after an interruption, and the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import augkit.train.loop as loop_module
from augkit.data.reader import H5Dataset
from augkit.errors import UserError
from augkit.recipe import load_recipe
from augkit.runner import run_recipe
from conftest import run_cli

TINY_GAN = "g_channels = 16, d_channels = 8, batch_size = 16, sample_every = 2, checkpoint_every = 2"
DATA_AND_GAN = f"""
[data]
source = "demo"
image_size = 16
demo_images = 160

[[augment]]
name = "vanilla"
params = {{ steps = 4, {TINY_GAN} }}
"""
RECIPE = '[recipe]\nname = "tiny"\n' + DATA_AND_GAN + f"""

[[augment]]
name = "classical"
amount = 0.5

[[augment]]
name = "acgan"
amount = 0.5
params = {{ base = "vanilla", steps = 2, {TINY_GAN} }}

[evaluate]
model = "test_resnet"
arms = ["baseline", "classical", "acgan", "classical+acgan"]
epochs = 1
batch_size = 16
bootstrap = 100
"""


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def recipe_file(tmp_path: Path, text: str = RECIPE, evaluate: bool = True) -> Path:
    if not evaluate:
        text = text[: text.index("[evaluate]")]
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def run(path: Path, out: Path, sets=(), **kwargs) -> Path:
    return run_recipe(load_recipe(path, sets, out=out), device="cpu", **kwargs)


def state(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())["stages"]


def weights(out: Path, step: str) -> dict:
    return torch.load(out / "steps" / step / "augmenter" / "weights.pt", weights_only=True)["G"]


def test_a_run_folder_holds_every_stage_and_a_self_contained_report(tmp_path):
    out = tmp_path / "run"
    report = run(recipe_file(tmp_path), out)
    assert report == out / "report.html"
    for name in ("recipe.toml", "recipe.json", "state.json", "run.log", "split.json", "data/dataset.h5",
                 "steps/vanilla/augmenter/weights.pt", "steps/vanilla/vanilla/losses.png",
                 "steps/acgan/augmenter/weights.pt", "steps/acgan/diversity.md", "shards/classical.h5", "shards/classical.png",
                 "shards/acgan.h5", "shards/acgan.png", "evaluate/metrics.json", "report.md"):
        assert (out / name).exists(), name
    stages = state(out)
    assert list(stages) == ["data", "split", "train vanilla", "generate classical", "train acgan", "generate acgan",
                            "evaluate", "report"]
    # +50% of each class of the training split, from both producing steps
    data = H5Dataset(out / "data" / "dataset.h5")
    train_counts = np.bincount(data.labels[json.loads((out / "split.json").read_text())["train"]], minlength=8)
    for step in ("classical", "acgan"):
        shard = H5Dataset(out / "shards" / f"{step}.h5")
        assert len(shard) == round(0.5 * train_counts.sum())
        assert shard.provenance["step"] == step
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"baseline", "classical", "acgan", "classical+acgan"}
    assert metrics["arms"]["classical+acgan"]["synthetic_rows"] == 2 * round(0.5 * train_counts.sum())
    page = report.read_text()
    assert page.count('src="data:image/png;base64,') >= 6  # grids, loss curves, deltas, confusion matrices
    assert "http://" not in page and "https://" not in page and "<script" not in page
    md = (out / "report.md").read_text()
    assert "Diversity of acgan" in md  # the collapse alarm's per-class table
    for arm in metrics["arms"].values():  # the same numbers in both files
        f1 = f"{arm['runs'][0]['metrics']['weighted_f1']:.4f}"
        assert f1 in md and f1 in page
    assert "augkit run" in md or "run_recipe(" in md  # the command that made it
    # the verdict opens the report; with one seed and a 1-epoch cap no arm can be called a gain
    assert md.index("## Verdict") < md.index("## Stages") < md.index("## Provenance")
    assert "One training seed: the intervals do not cover training noise" in md
    assert "do not cover the variation between generator runs" in md
    assert "Convergence flag" in md and " better** than the baseline" not in md
    assert "equal optimiser steps per epoch" in md


def test_a_second_recipe_reuses_the_cached_generator_and_says_so(tmp_path, cache_dir):
    path = recipe_file(tmp_path, evaluate=False)
    first, second = tmp_path / "first", tmp_path / "second"
    run(path, first)
    assert state(first)["train vanilla"]["cache"] == "miss"
    run(path, second, ["augment.classical.amount=0.25"])  # another recipe, same generators
    stages = state(second)
    assert stages["train vanilla"]["cache"] == "hit" and stages["train acgan"]["cache"] == "hit"
    assert "reusing the trained 'vanilla' from the cache" in (second / "run.log").read_text()
    assert not (second / "steps" / "vanilla" / "vanilla" / "checkpoints").exists()  # nothing was trained
    for step in ("vanilla", "acgan"):
        a, b = weights(first, step), weights(second, step)
        assert all(torch.equal(a[k], b[k]) for k in a)
    shard_a, shard_b = H5Dataset(first / "shards" / "acgan.h5"), H5Dataset(second / "shards" / "acgan.h5")
    assert np.array_equal(shard_a.read(np.arange(len(shard_a))), shard_b.read(np.arange(len(shard_b))))
    # a changed parameter is another generator: trained anew
    third = tmp_path / "third"
    run(path, third, ["augment.vanilla.params.steps=3"])
    assert state(third)["train vanilla"]["cache"] == "miss"
    assert state(third)["train acgan"]["cache"] == "miss"  # it builds on a different base
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 4


def test_an_interrupted_training_stage_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    path = recipe_file(tmp_path, evaluate=False)
    out = tmp_path / "run"
    real_save = loop_module.save_checkpoint
    calls = {"n": 0}

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # the first checkpoint of the vanilla step (step 2 of 4): as if Ctrl-C came now
            raise KeyboardInterrupt("stopped at step 2")

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt, match=r"stage 'train vanilla'.*--resume"):
        run(path, out)
    assert "train vanilla" not in state(out) and "split" in state(out)
    run(path, out, resume=True)
    log = (out / "run.log").read_text()
    assert "split: done before" in log and "resuming 'vanilla'" in log
    assert state(out)["generate acgan"]["rows"] > 0
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "other-cache"))  # train again, uninterrupted
    straight = tmp_path / "straight"
    run(path, straight)
    a, b = weights(out, "vanilla"), weights(straight, "vanilla")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training must end with the same weights"


def test_a_step_out_of_budget_pauses_and_resumes_with_the_key_of_a_run_made_at_once(tmp_path, monkeypatch):
    from augkit.errors import Paused

    path = recipe_file(tmp_path, text='[recipe]\nname = "tiny"\n' + DATA_AND_GAN)
    out = tmp_path / "run"
    with pytest.raises(Paused, match="step 1 of 4.*--resume"):
        run(path, out, ["augment.vanilla.params.minutes=1e-9"])  # spent after the first step
    assert "train vanilla" not in state(out)
    assert not (out / "steps" / "vanilla" / "augmenter").exists()  # nothing uses an unfinished run
    assert not any(p for p in (tmp_path / "cache").glob("*") if not p.name.startswith("."))
    run(path, out, ["augment.vanilla.params.minutes=30"], resume=True)  # another budget: the same run
    assert "resuming 'vanilla'" in (out / "run.log").read_text()
    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "other-cache"))
    straight = tmp_path / "straight"
    run(path, straight)
    assert state(out)["train vanilla"]["key"] == state(straight)["train vanilla"]["key"]
    a, b = weights(out, "vanilla"), weights(straight, "vanilla")
    assert all(torch.equal(a[k], b[k]) for k in a), "a run in budget pieces must end with the weights of one"


def test_paused_training_says_so_and_exits_3(tmp_path):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "d.h5", counts=(8, 8), size=16)
    result = run_cli("train", "vanilla", "--data", str(data), "--out", str(tmp_path / "t"),
                     "--param", "steps=4", "--param", "minutes=1e-9", "--param", "g_channels=16",
                     "--param", "d_channels=8", "--param", "batch_size=8")
    assert result.returncode == 3, result.stderr
    assert "paused" in result.stderr and "--resume" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "t" / "augmenter").exists()


def test_finished_stages_are_skipped_when_a_later_stage_was_interrupted(tmp_path, monkeypatch):
    path = recipe_file(tmp_path, evaluate=False)
    out = tmp_path / "run"
    import augkit.generate as generate_module

    real = generate_module.augment_to_file

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "augment_to_file", lambda *a, **k: stop() if "acgan" in str(a[2]) else real(*a, **k))
    with pytest.raises(KeyboardInterrupt, match="stage 'generate acgan'"):
        run(path, out)
    monkeypatch.setattr(generate_module, "augment_to_file", real)
    run(path, out, resume=True)
    log = (out / "run.log").read_text()
    assert "train acgan: done before" in log and "generate classical: done before" in log
    assert (out / "shards" / "acgan.h5").exists()


def test_a_run_folder_is_not_overwritten_and_resume_needs_the_same_recipe(tmp_path):
    path = recipe_file(tmp_path, evaluate=False)
    out = tmp_path / "run"
    run(path, out)
    with pytest.raises(UserError, match="holds a run already; continue it with --resume"):
        run(path, out)
    with pytest.raises(UserError, match=r"differs from the one this run started with \(changed: augment\)"):
        run(path, out, ["augment.classical.amount=0.3"], resume=True)
    with pytest.raises(UserError, match="no run to resume here"):
        run(path, tmp_path / "empty", resume=True)


RUNS = '[recipe]\nname = "runs"\n' + DATA_AND_GAN.replace('name = "vanilla"', 'name = "vanilla"\nruns = 2') + f"""
[[augment]]
name = "acgan"
amount = 0.5
runs = 2
params = {{ base = "vanilla", steps = 2, {TINY_GAN} }}

[evaluate]
model = "test_resnet"
arms = ["baseline", "acgan"]
seeds = 2
epochs = 1
batch_size = 16
bootstrap = 100
"""


def test_a_step_of_several_runs_gives_each_evaluation_seed_its_own_generator(tmp_path):
    path = recipe_file(tmp_path, RUNS)
    plan = load_recipe(path, out=tmp_path / "run").plan()
    assert any(line.startswith("  step acgan:") and "2 runs (seeds 0-1" in line for line in plan)
    out = tmp_path / "run"
    run(path, out)
    for k in (0, 1):
        assert (out / "steps" / f"vanilla-run{k}" / "augmenter").is_dir() and (out / "shards" / f"acgan-run{k}.h5").is_file()
    g0, g1 = weights(out, "vanilla-run0"), weights(out, "vanilla-run1")
    assert any(not torch.equal(g0[k], g1[k]) for k in g0)  # seed 1 trained another generator
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert metrics["arms"]["acgan"]["shards_per_seed"] == [[str(out / "shards" / "acgan-run0.h5")],
                                                           [str(out / "shards" / "acgan-run1.h5")]]
    assert "Arm `acgan`: each seed trains on its own synthetic images" in (out / "evaluate" / "report.md").read_text()
    assert "| acgan-run1 | acgan |" in (out / "report.md").read_text()
    # run 1 is the step made once with seed 1, built on vanilla's run 1: a one-run recipe so seeded reuses both
    single = RUNS.replace("runs = 2\n", "seed = 1\n").replace("seeds = 2", "seeds = 1")
    log = []
    run_recipe(load_recipe(recipe_file(tmp_path, single), out=tmp_path / "single"), device="cpu", say=log.append)
    assert sum("reusing the trained" in line for line in log) == 2, log
    np.testing.assert_array_equal(H5Dataset(tmp_path / "single" / "shards" / "acgan.h5").read(np.arange(8)),
                                  H5Dataset(out / "shards" / "acgan-run1.h5").read(np.arange(8)))


def test_runs_are_made_again_per_training_fraction_and_resume_by_run(tmp_path, monkeypatch):
    text = ('[recipe]\nname = "fr"\n[data]\nsource = "demo"\nimage_size = 16\ndemo_images = 160\n'
            '[[augment]]\nname = "classical"\namount = 0.5\nruns = 2\n'
            '[evaluate]\nmodel = "test_resnet"\nseeds = 2\nepochs = 1\nbatch_size = 16\nbootstrap = 100\n'
            'train_fractions = [0.5, 1.0]\n')
    path, out = recipe_file(tmp_path, text), tmp_path / "run"
    import augkit.generate as generate_module

    real = generate_module.augment_to_file
    monkeypatch.setattr(generate_module, "augment_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt) if "f0.5" in str(a[2]) else real(*a, **k))
    with pytest.raises(KeyboardInterrupt, match="generate classical-run0 @ 0.5"):
        run(path, out)
    monkeypatch.setattr(generate_module, "augment_to_file", real)
    run(path, out, resume=True)
    log = (out / "run.log").read_text()
    assert "generate classical-run1: done before" in log
    half = out / "fractions" / "f0.5"
    for folder in (out, half):
        shards = [H5Dataset(folder / "shards" / f"classical-run{k}.h5") for k in (0, 1)]
        assert [s.provenance["augment"]["seed"] for s in shards] == [0, 1]
        metrics = json.loads((folder / "evaluate" / "metrics.json").read_text())
        assert [Path(p[0]).name for p in metrics["arms"]["classical"]["shards_per_seed"]] == [
            "classical-run0.h5", "classical-run1.h5"]
    assert H5Dataset(half / "shards" / "classical-run1.h5").provenance["augment"]["train_rows"] < \
        H5Dataset(out / "shards" / "classical-run1.h5").provenance["augment"]["train_rows"]


def test_runs_of_a_base_and_of_the_step_built_on_it_must_match(tmp_path):
    from augkit.errors import ParamError

    text = RUNS.replace('name = "vanilla"\nruns = 2', 'name = "vanilla"\nruns = 3')
    with pytest.raises(ParamError, match="params.base = 'vanilla' has 3 runs and this step 2"):
        load_recipe(recipe_file(tmp_path, text))
    # a base of one run serves every run of the step built on it
    one_base = load_recipe(recipe_file(tmp_path, RUNS.replace('name = "vanilla"\nruns = 2', 'name = "vanilla"')))
    assert [(s.id, s.seed, s.refs) for s in one_base.run_order()] == [
        ("vanilla", 0, {}), ("acgan-run0", 0, {"base": "vanilla"}), ("acgan-run1", 1, {"base": "vanilla"})]


def test_cli_run_checks_prints_the_plan_and_reports_mistakes_in_one_line(tmp_path):
    path = recipe_file(tmp_path)
    result = run_cli("run", str(path), "--check", "--set", "evaluate.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "step acgan: acgan, +50% per class, after vanilla" in result.stdout
    # the collapse alarm generates images after a class-conditional generator trains: the plan says so
    plan = {line.split(":")[0].strip(): line for line in result.stdout.splitlines()}
    assert "when it trains, a collapse check (100 generated and real images per class" in plan["step acgan"]
    assert "collapse check" not in plan["step vanilla"] + plan["step classical"]
    assert "2 epochs" in result.stdout
    assert "protocol: equal optimiser steps per epoch" in result.stdout and "validation plateau" in result.stdout
    # under torchrun every rank checks the recipe, and only rank 0 prints the plan
    as_rank1 = run_cli("run", str(path), "--check", cwd=tmp_path, env={**os.environ, "RANK": "1", "WORLD_SIZE": "2"})
    assert as_rank1.returncode == 0 and as_rank1.stdout == "", as_rank1.stderr
    result = run_cli("run", str(path), "--set", "evaluate.epochz=2", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'epochz'; did you mean 'epochs'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_a_device_that_is_not_there_is_refused_before_any_work(tmp_path):
    from augkit.distributed import check_device

    assert check_device("cpu") == "cpu"
    with pytest.raises(UserError, match="not a device name"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is visible here; use --device cpu"):
            run_recipe(load_recipe(recipe_file(tmp_path), out=tmp_path / "run"), device="cuda")
        assert not (tmp_path / "run").exists()


def test_latent_steps_build_on_a_gan_step_and_a_filter_classifier_is_trained_once(tmp_path):
    text = DATA_AND_GAN + """
[[augment]]
name = "latent_interp"
amount = { per_class = 2 }
params = { encoder = "perturb" }  # reuses the perturbation step's encoder: one encoder training
filter = { model = "test_resnet", epochs = 1, batch_size = 16, threshold = 0.0 }

[[augment]]
id = "perturb"
name = "latent_perturb"
amount = { per_class = 2 }
params = { generator = "vanilla", encoder_steps = 3, encoder_batch_size = 8, encoder_channels = 8 }
filter = { model = "test_resnet", epochs = 1, batch_size = 16, threshold = 0.0 }
"""
    path = tmp_path / "latent.toml"
    path.write_text(text)
    recipe = load_recipe(path)
    assert [s.id for s in recipe.order()] == ["vanilla", "perturb", "latent_interp"]
    assert recipe.step("perturb").refs == {"generator": "vanilla"}
    assert recipe.step("latent_interp").refs == {"encoder": "perturb"}
    out = tmp_path / "run"
    run(path, out)
    stages = state(out)
    assert len([s for s in stages if s.startswith("filter ")]) == 1  # one classifier for both steps
    rates = stages["generate latent_interp"]["filter"]
    assert all(v["rate"] == 1.0 and v["accepted"] >= 2 for v in rates.values())  # threshold 0 keeps all
    shard = H5Dataset(out / "shards" / "latent_interp.h5")
    assert len(shard) == 16 and shard.has_parent2
    assert "Class-consistency filter of latent_interp" in (out / "report.md").read_text()
    assert not (out / "steps" / "latent_interp" / "latent_interp").exists()  # no second encoder trained


def test_a_baseline_trained_for_one_recipe_is_reused_by_another_on_the_same_data(tmp_path):
    text = DATA_AND_GAN.replace("[[augment]]\nname = \"vanilla\"", "[[augment]]\nname = \"classical\"\namount = 0.5") \
        .replace(f"params = {{ steps = 4, {TINY_GAN} }}", "")
    text += '\n[evaluate]\nmodel = "test_resnet"\nepochs = 1\nbatch_size = 16\nbootstrap = 100\n'
    path = tmp_path / "c.toml"
    path.write_text(text)
    first, second = tmp_path / "first", tmp_path / "second"
    run(path, first)
    assert state(first)["evaluate"]["reused_runs"] == []
    run(path, second, ["augment.classical.amount=0.25"])  # other synthetic images, the same baseline
    assert state(second)["evaluate"]["reused_runs"] == ["baseline seed 0"]
    a = json.loads((first / "evaluate" / "metrics.json").read_text())["arms"]
    b = json.loads((second / "evaluate" / "metrics.json").read_text())["arms"]
    assert a["baseline"]["runs"] == b["baseline"]["runs"]
    assert a["classical"]["synthetic_rows"] == 2 * b["classical"]["synthetic_rows"]
    assert "reused from the cache: baseline seed 0" in (second / "report.md").read_text()


def test_train_fractions_train_every_step_on_its_nested_subset_and_draw_the_curve(tmp_path):
    text = RECIPE.replace('arms = ["baseline", "classical", "acgan", "classical+acgan"]',
                          'arms = ["baseline", "classical", "acgan"]') + "train_fractions = [0.5, 1.0]\n"
    path = tmp_path / "curve.toml"
    path.write_text(text)
    out = tmp_path / "run"
    run(path, out)
    stages = state(out)
    assert {"train vanilla @ 0.5", "train acgan @ 0.5", "generate acgan @ 0.5", "evaluate @ 0.5",
            "data-efficiency curve"} <= set(stages)
    full_train = np.array(json.loads((out / "split.json").read_text())["train"])
    half = out / "fractions" / "f0.5"
    half_train = np.array(json.loads((half / "evaluate" / "split.json").read_text())["train"])
    assert set(half_train) < set(full_train)
    data = H5Dataset(out / "data" / "dataset.h5")
    np.testing.assert_array_equal(np.bincount(data.labels[half_train], minlength=8),
                                  np.round(0.5 * np.bincount(data.labels[full_train], minlength=8)))
    # every generator of the fraction learned from the fraction's rows only, and its images say so
    assert stages["train vanilla @ 0.5"]["key"] != stages["train vanilla"]["key"]
    from augkit.data.split import rows_fingerprint

    for step in ("classical", "acgan"):
        record = H5Dataset(half / "shards" / f"{step}.h5").provenance["augment"]
        assert record["train_rows"] == len(half_train)
        assert record["train_rows_sha256"] == rows_fingerprint(half_train)
    parents = H5Dataset(half / "shards" / "classical.h5").parent
    assert set(parents[parents >= 0]) <= set(half_train)
    # `augkit data split --train-fraction` writes the fraction's split, so the separate commands
    # (train, augment, evaluate --split) can repeat a recipe's low-data arm row for row
    from click.testing import CliRunner

    from augkit.cli import cli

    made = CliRunner().invoke(cli, ["--quiet", "data", "split", str(out / "data" / "dataset.h5"), "--out",
                                    str(tmp_path / "half.json"), "--train-fraction", "0.5", "--seed", "0"])
    assert made.exit_code == 0 and f"train {len(half_train)}" in made.output, made.output
    by_cli = json.loads((tmp_path / "half.json").read_text())
    by_recipe = json.loads((half / "evaluate" / "split.json").read_text())
    assert all(by_cli[part] == by_recipe[part] for part in ("train", "val", "test"))
    curve = json.loads((out / "evaluate" / "curve.json").read_text())
    assert curve["fractions"] == [0.5, 1.0]
    assert [p["real_images"] for p in curve["points"]["baseline"]] == [len(half_train), len(full_train)]
    assert set(curve["worth"]) == {"classical", "acgan"} and (out / "evaluate" / "curve.png").is_file()
    md = (out / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Data-efficiency curve") < md.index("## Stages")
    assert "worth" in md


def test_a_shard_made_from_more_real_images_than_the_fraction_is_refused(tmp_path):
    from augkit.augment import Context
    from augkit.evaluate import evaluate
    from augkit.data import import_source, stratified_split
    from augkit.data.split import nested_subsets
    from augkit.errors import DataError
    from augkit.generate import augment_to_file
    from augkit.registry import get_augmenter

    import_source("demo", tmp_path / "d.h5", size=16, n=160, seed=0)
    base = H5Dataset(tmp_path / "d.h5")
    split = stratified_split(base, seed=0)
    rows = nested_subsets(split.train, base.labels[split.train], [0.5], seed=0)[0.5]
    half = split.with_train(rows, 0.5, 0)
    # classical images of the whole training split: more real images than the half the arm trains on
    augment_to_file(get_augmenter("classical"), split.apply(base, "train"), tmp_path / "full.h5", 0.5,
                    Context(seed=0, device="cpu"))
    with pytest.raises(DataError, match=r"given \d+ real training images, more than the \d+ this arm trains on"):
        evaluate(tmp_path / "d.h5", [f"c={tmp_path / 'full.h5'}"], tmp_path / "o", split=half,
                 config={"model": "test_resnet", "epochs": 1, "batch_size": 16}, device="cpu")
    # as many rows, but other ones (another seed's half): refused by the rows' fingerprint
    other = nested_subsets(split.train, base.labels[split.train], [0.5], seed=1)[0.5]
    augment_to_file(get_augmenter("classical"), base.subset(other), tmp_path / "other.h5", 0.5,
                    Context(seed=0, device="cpu"))
    with pytest.raises(DataError, match="other real training images than the"):
        evaluate(tmp_path / "d.h5", [f"c={tmp_path / 'other.h5'}"], tmp_path / "o", split=half,
                 config={"model": "test_resnet", "epochs": 1, "batch_size": 16}, device="cpu")
