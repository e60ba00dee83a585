"""Latent augmenters at tiny sizes: the encoder trains against a frozen G, perturbation and
interpolation keep their parents (both of them), are deterministic under a seed, and survive save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augkit.augment import Context
from augkit.data import H5Dataset, import_source
from augkit.data.split import stratified_split
from augkit.data.writer import DatasetWriter
from augkit.errors import DataError, UserError
from augkit.evaluate.arms import Arm, synthetic_rows
from augkit.generate import augment_to_file
from augkit.registry import get_augmenter

GAN = {"g_channels": 32, "d_channels": 8, "batch_size": 8, "steps": 2, "sample_every": 2, "checkpoint_every": 2}
ENC = {"encoder_steps": 6, "encoder_batch_size": 8, "encoder_channels": 8, "sample_every": 3, "checkpoint_every": 3}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """demo at 16 px, its training split, and a tiny vanilla GAN and cgan saved to folders."""
    root = tmp_path_factory.mktemp("latent")
    import_source("demo", root / "demo16.h5", size=16, n=96, seed=0)
    data = H5Dataset(root / "demo16.h5")
    split = stratified_split(data, seed=0)
    train = split.apply(data, "train")
    gans = {}
    for name in ("vanilla", "cgan"):
        gan = get_augmenter(name, GAN)
        gan.fit(train, Context(seed=0, device="cpu", workdir=root / f"run-{name}"))
        gans[name] = gan.save(root / name)
    return {"root": root, "data": data, "split": split, "train": train, "gans": gans}


def fitted(setup, name, gan="vanilla", tmp_path=None, **params):
    aug = get_augmenter(name, {"generator": str(setup["gans"][gan]), **ENC, **params})
    aug.fit(setup["train"], Context(seed=0, device="cpu", workdir=tmp_path))
    return aug


def test_the_encoder_trains_against_a_frozen_generator_and_reports_reconstruction(setup, tmp_path):
    from augkit.generator import load_generator

    from augkit.train.encoder import reconstruction_l1
    from augkit_gan.networks import Encoder

    gan = load_generator(setup["gans"]["vanilla"])
    before = {k: v.clone() for k, v in gan.G.state_dict().items()}
    aug = fitted(setup, "latent_perturb", tmp_path=tmp_path, encoder_steps=40, sample_every=20, encoder_lr=3e-3)
    after = aug.gan.G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "G must stay frozen"
    report = aug.report
    assert report["held_out_images"] == round(0.1 * len(setup["train"]))
    assert 0 < report["held_out_l1"] < 1 and 0 < report["train_l1"] < 1
    # training lowered the reconstruction error of an untrained encoder of the same seed
    torch.manual_seed(0)
    untrained = Encoder(16, gan.G.latent_dim, ENC["encoder_channels"])
    images = torch.from_numpy(setup["train"].read(np.arange(len(setup["train"]))))
    assert report["train_l1"] < reconstruction_l1(untrained, gan.G, images, None, torch.device("cpu"))
    run = tmp_path / "latent_perturb"
    assert (run / "encoder.json").is_file() and (run / "losses.png").is_file()
    assert (run / "samples" / "step_0000040.png").is_file()
    assert (run / "losses.csv").read_text().splitlines()[-1].startswith("40,")


@pytest.mark.parametrize("gan", ["vanilla", "cgan"])
def test_perturbation_keeps_its_parent_and_is_deterministic(setup, tmp_path, gan):
    aug = fitted(setup, "latent_perturb", gan=gan, tmp_path=tmp_path)
    train = setup["train"]
    out = aug.generate(3, 7, Context(seed=5, device="cpu"))
    assert out.images.shape == (7, 16, 16, 3) and out.images.dtype == np.uint8
    rows_of_class = set(train.rows[train.labels == 3].tolist())
    assert set(out.parents.tolist()) <= rows_of_class
    again = aug.generate(3, 7, Context(seed=5, device="cpu"))
    np.testing.assert_array_equal(out.images, again.images)
    np.testing.assert_array_equal(out.parents, again.parents)
    assert not np.array_equal(out.images, aug.generate(3, 7, Context(seed=6, device="cpu")).images)


def test_more_latent_noise_moves_images_further_from_the_reconstruction(setup, tmp_path):
    distances = []
    for sigma2 in (0.0, 0.04, 1.0):
        aug = fitted(setup, "latent_perturb", tmp_path=tmp_path / str(sigma2), sigma2=sigma2)
        out = aug.generate(0, 16, Context(seed=1, device="cpu"))
        position = {int(r): p for p, r in enumerate(setup["train"].rows)}
        x = setup["train"].read(np.array([position[int(r)] for r in out.parents]))
        z = aug._latents(x, torch.device("cpu"))
        reconstruction = aug._decode(z, 0, torch.device("cpu"))
        distances.append(np.abs(out.images.astype(float) - reconstruction.astype(float)).mean())
    assert distances[0] == 0  # sigma2 = 0 is exactly G(E(x))
    assert distances[0] < distances[1] < distances[2]


def test_interpolation_records_two_parents_of_the_same_class(setup, tmp_path):
    aug = fitted(setup, "latent_interp", tmp_path=tmp_path, t_steps=4)
    train = setup["train"]
    out = aug.generate(1, 9, Context(seed=2, device="cpu"))
    assert out.parents.shape == (9, 2)
    rows_of_class = set(train.rows[train.labels == 1].tolist())
    assert set(out.parents.ravel().tolist()) <= rows_of_class
    assert (out.parents[:, 0] != out.parents[:, 1]).all()  # two different images of the class


def test_a_saved_latent_augmenter_generates_the_same_images_without_the_gan_folder(setup, tmp_path):
    import shutil

    gan_copy = tmp_path / "gan"
    shutil.copytree(setup["gans"]["vanilla"], gan_copy)
    aug = get_augmenter("latent_interp", {"generator": str(gan_copy), **ENC})
    aug.fit(setup["train"], Context(seed=0, device="cpu", workdir=tmp_path))
    expected = aug.generate(2, 5, Context(seed=3, device="cpu"))
    aug.save(tmp_path / "saved")
    shutil.rmtree(gan_copy)  # the saved augmenter carries its own copy of the generator
    loaded = type(aug).load(tmp_path / "saved")
    with pytest.raises(UserError, match="give it the training images first"):
        loaded.generate(2, 5, Context(seed=3, device="cpu"))
    loaded.prepare(setup["train"], Context(seed=0, device="cpu"))
    again = loaded.generate(2, 5, Context(seed=3, device="cpu"))
    np.testing.assert_array_equal(expected.images, again.images)
    np.testing.assert_array_equal(expected.parents, again.parents)
    assert loaded.report == aug.report


def test_shards_keep_both_parents_and_the_leakage_guard_checks_both(setup, tmp_path):
    aug = fitted(setup, "latent_interp", tmp_path=tmp_path)
    data, split = setup["data"], setup["split"]
    shard = tmp_path / "interp.h5"
    augment_to_file(aug, setup["train"], shard, {"per_class": 3}, Context(seed=0, device="cpu"), fit=False)
    written = H5Dataset(shard)
    assert written.has_parent2 and (written.parent2 >= 0).all() and (written.parent >= 0).all()
    held_out = np.concatenate([split.val, split.test])
    assert len(synthetic_rows(Arm("interp", (shard,)), data, split.train, held_out).views[0]) == 24
    # the same shard with one second parent moved to a test image is refused
    leaky = tmp_path / "leaky.h5"
    parent2 = written.parent2.copy()
    parent2[0] = split.test[0]
    with DatasetWriter(leaky, class_names=written.class_names, image_size=16, origins=written.origins,
                       provenance=written.provenance, with_parent2=True) as w:
        w.append(written.read(np.arange(len(written))), written.labels, origin=written.origin,
                 parent=written.parent, parent2=parent2)
    with pytest.raises(DataError, match="derive from validation/test images"):
        synthetic_rows(Arm("leaky", (leaky,)), data, split.train, held_out)


def test_a_missing_or_foreign_generator_is_a_clear_error(setup, tmp_path):
    with pytest.raises(UserError, match="set 'generator'"):
        get_augmenter("latent_perturb", ENC).fit(setup["train"], Context(seed=0, device="cpu"))
    classical = get_augmenter("classical").save(tmp_path / "classical")
    with pytest.raises(DataError, match="holds augmenter 'classical', which is not a generator; latent augmenters need a generator"):
        get_augmenter("latent_perturb", {"generator": str(classical)}).fit(setup["train"], Context(seed=0))
    with pytest.raises(DataError, match="no saved augmenter here"):
        get_augmenter("latent_perturb", {"generator": str(tmp_path / "nothing")}).fit(setup["train"], Context(seed=0))


def test_interpolate_renders_a_strip_between_two_images_or_two_random_latents(setup, tmp_path):
    from PIL import Image

    from conftest import run_cli

    aug = fitted(setup, "latent_interp", tmp_path=tmp_path)
    saved = aug.save(tmp_path / "interp")
    data_path = str(setup["root"] / "demo16.h5")
    a, b = [int(r) for r in setup["train"].rows[setup["train"].labels == 0][:2]]
    result = run_cli("interpolate", "--from", str(saved), "--data", data_path, "--rows", f"{a},{b}",
                     "--steps", "6", "--out", str(tmp_path / "strip.png"))
    assert result.returncode == 0, result.stderr
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape == (16 + 2, 8 * 17 + 1, 3)  # the two real images at the ends, 6 generated between
    real = setup["data"].read(np.array([a, b]))
    np.testing.assert_array_equal(strip[1:17, 1:17], real[0])
    np.testing.assert_array_equal(strip[1:17, 7 * 17 + 1:8 * 17], real[1])
    # a conditional GAN between two random latents needs a class
    result = run_cli("interpolate", "--from", str(setup["gans"]["cgan"]), "--steps", "4", "--label", "2",
                     "--out", str(tmp_path / "random.png"))
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(tmp_path / "random.png")).shape == (18, 4 * 17 + 1, 3)
    result = run_cli("interpolate", "--from", str(setup["gans"]["vanilla"]), "--data", data_path, "--rows", "1,2",
                     "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "has no encoder" in result.stderr
    result = run_cli("interpolate", "--from", str(saved), "--rows", "1,2", "--out", str(tmp_path / "y.png"))
    assert result.returncode == 2 and "--rows needs --data" in result.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_an_interpolator_can_reuse_the_encoder_of_a_perturbation_step(setup, tmp_path):
    donor = fitted(setup, "latent_perturb", gan="cgan", tmp_path=tmp_path)
    saved = donor.save(tmp_path / "perturb")
    interp = get_augmenter("latent_interp", {"encoder": str(saved)})
    interp.fit(setup["train"], Context(seed=0, device="cpu", workdir=tmp_path / "interp-run"))
    assert not (tmp_path / "interp-run" / "latent_interp").exists(), "no second encoder was trained"
    assert all(torch.equal(a, b) for a, b in zip(donor.E.state_dict().values(), interp.E.state_dict().values()))
    assert interp.gan.conditional and interp.report["encoder_from"] == str(saved)
    out = interp.generate(3, 4, Context(seed=1, device="cpu"))
    assert out.images.shape == (4, 16, 16, 3) and out.parents.shape == (4, 2)
    # it saves and loads like one that trained its own encoder
    again = type(interp).load(interp.save(tmp_path / "interp"))
    again.prepare(setup["train"], Context(seed=0, device="cpu"))
    np.testing.assert_array_equal(again.generate(3, 4, Context(seed=1, device="cpu")).images, out.images)


def test_a_shared_encoder_must_come_from_a_latent_augmenter_and_excludes_a_generator(setup, tmp_path):
    with pytest.raises(DataError, match="holds augmenter 'vanilla'; 'encoder' needs a latent augmenter"):
        get_augmenter("latent_interp", {"encoder": str(setup["gans"]["vanilla"])}).fit(setup["train"], Context(seed=0))
    saved = fitted(setup, "latent_perturb", tmp_path=tmp_path).save(tmp_path / "perturb")
    both = {"encoder": str(saved), "generator": str(setup["gans"]["vanilla"])}
    with pytest.raises(UserError, match="give 'generator' or 'encoder', not both"):
        get_augmenter("latent_interp", both).fit(setup["train"], Context(seed=0))
