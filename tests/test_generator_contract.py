"""The generator contract: a third party's generator, written against augkit.generator alone, gets
sampling, interpolation and the latent augmenters without any change to augkit or augkit_gan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from augkit import hookimpl, registry
from augkit.augment import Context
from augkit.data import H5Dataset, import_source
from augkit.data.split import stratified_split
from augkit.errors import DataError, UserError
from augkit.generator import GenerativeAugmenter, generator_names, load_generator


class _Net(torch.nn.Module):
    """z (n, latent_dim), optional labels -> images (n, 3, size, size) in [-1, 1]."""

    def __init__(self, size: int, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.size, self.latent_dim = size, latent_dim
        self.embed = torch.nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.out = torch.nn.Linear(latent_dim, 3 * size * size)

    def forward(self, z, y=None):
        if self.embed is not None:
            z = z + self.embed(y)
        return torch.tanh(self.out(z)).view(len(z), 3, self.size, self.size)


class TinyGenerator(GenerativeAugmenter):
    """An untrained linear generator: the contract, not the quality, is under test."""

    name = "tiny_generator"
    conditional = False

    def fit(self, train, ctx):
        torch.manual_seed(ctx.seed)
        self.G = _Net(train.image_size[0], 6, len(train.class_names) if self.conditional else 0)

    def save(self, path):
        path = super().save(path)
        torch.save(self.G.state_dict(), path / "g.pt")
        (path / "arch.json").write_text(json.dumps({"size": self.G.size, "classes": self.G.embed is not None and
                                                    self.G.embed.num_embeddings}))
        return path

    @classmethod
    def load(cls, path):
        aug = super().load(path)
        arch = json.loads((Path(path) / "arch.json").read_text())
        aug.G = _Net(arch["size"], 6, arch["classes"] or 0)
        aug.G.load_state_dict(torch.load(Path(path) / "g.pt", weights_only=True))
        return aug


class TinyConditional(TinyGenerator):
    name = "tiny_conditional"
    conditional = True


class _Plugin:
    @hookimpl
    def augkit_augmenters(self):
        return [TinyGenerator, TinyConditional]


@pytest.fixture
def with_plugin(monkeypatch):
    reg = registry.Registry().load_plugins()
    reg.register(_Plugin(), "tiny", distribution="tiny-generators")
    monkeypatch.setattr(registry, "_default", reg)
    return reg


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    import_source("demo", root / "demo16.h5", size=16, n=64, seed=0)
    data = H5Dataset(root / "demo16.h5")
    return stratified_split(data, seed=0).apply(data, "train")


def _saved(name, train, tmp_path):
    aug = registry.get_augmenter(name)
    aug.fit(train, Context(seed=0, device="cpu"))
    return aug, aug.save(tmp_path / name)


def test_the_contract_gives_sampling_decoding_and_interpolation(with_plugin, train, tmp_path):
    uncond, _ = _saved("tiny_generator", train, tmp_path)
    ctx = Context(seed=3, device="cpu")
    images = uncond.sample(5, ctx)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, uncond.sample(5, Context(seed=3, device="cpu")))  # seeded
    strip = uncond.interpolate(4, ctx)
    assert strip.shape == (4, 16, 16, 3)
    with pytest.raises(UserError, match="cannot choose a class.*class-conditional generator \\(.*tiny_conditional"):
        uncond.generate(0, 2, ctx)
    with pytest.raises(UserError, match="has no encoder"):
        uncond.interpolate(4, ctx, images=images[:2])

    cond, _ = _saved("tiny_conditional", train, tmp_path)
    a, b = cond.generate(0, 3, ctx).images, cond.generate(1, 3, ctx).images
    assert a.shape == (3, 16, 16, 3) and not np.array_equal(a, b)  # the class reaches G
    with pytest.raises(UserError, match="needs a class"):
        cond.decode(cond.latents(2, ctx), None, "cpu")
    assert {"tiny_generator", "tiny_conditional", "vanilla", "acgan", "cgan"} <= set(generator_names())
    assert "classical" not in generator_names()


def test_a_third_party_generator_drives_the_latent_augmenters(with_plugin, train, tmp_path):
    for name in ("tiny_generator", "tiny_conditional"):
        _, folder = _saved(name, train, tmp_path)
        assert isinstance(load_generator(folder), GenerativeAugmenter)
        perturb = registry.get_augmenter("latent_perturb", {"generator": str(folder), "encoder_steps": 3,
                                                            "encoder_batch_size": 8, "encoder_channels": 8})
        perturb.fit(train, Context(seed=0, device="cpu", workdir=tmp_path / f"enc-{name}"))
        samples = perturb.generate(1, 4, Context(seed=1, device="cpu"))
        assert samples.images.shape == (4, 16, 16, 3)
        assert (train.labels[np.searchsorted(train.rows, samples.parents)] == 1).all()  # parents of the class
        assert perturb.interpolate(3, Context(seed=0, device="cpu"), images=train.read(np.array([0, 1])),
                                   label=int(train.labels[0])).shape == (3, 16, 16, 3)


def test_a_folder_that_is_no_generator_is_named(with_plugin, train, tmp_path):
    classical = registry.get_augmenter("classical").save(tmp_path / "classical")
    with pytest.raises(DataError, match="holds augmenter 'classical', which is not a generator"):
        load_generator(classical)
    with pytest.raises(UserError, match="cannot interpolate: it has no latent space"):
        registry.get_augmenter("classical").interpolate(3, Context(seed=0, device="cpu"))


def test_augkit_train_checks_collapse_only_at_sizes_ms_ssim_can_measure(with_plugin, tmp_path):
    from click.testing import CliRunner

    from augkit.cli import cli
    from conftest import write_dataset

    for size in (8, 16):
        write_dataset(tmp_path / f"d{size}.h5", counts=(8, 8), size=size)
        run = tmp_path / f"run{size}"
        result = CliRunner().invoke(cli, ["--quiet", "train", "tiny_conditional", "--data", str(tmp_path / f"d{size}.h5"),
                                          "--out", str(run), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert (run / "augmenter").is_dir()
        skipped = "no collapse check: MS-SSIM needs images of at least 16 px, these are 8 px" in result.stderr
        assert skipped == (size == 8) and (run / "diversity.json").is_file() == (size == 16)
