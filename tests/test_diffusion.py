"""The diffusion plugin (plugins/augkit-diffusion), at tiny sizes: a plugin registered like a third
party's, that trains on the shared loop, generates seeded uint8 images of a class, resumes exactly,
pauses at its budget, and saves weights that load without unpickling code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augkit.augment import Context
from augkit.data.reader import ArrayDataset
from augkit.errors import Paused, UserError
from augkit.registry import get_registry

TINY = {"steps": 4, "batch_size": 8, "channels": [8, 16], "attention": [False, True], "layers_per_block": 1,
        "sample_steps": 3, "sample_every": 100, "checkpoint_every": 100, "log_every": 2}


def _data() -> ArrayDataset:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    return ArrayDataset(images, labels, ["a", "b", "c"])


def _fit(folder, resume=False, **params):
    from augkit_diffusion import Diffusion

    aug = Diffusion({**TINY, **params})
    aug.fit(_data(), Context(seed=0, device="cpu", workdir=folder, resume=resume))
    return aug


def test_it_is_registered_as_a_third_party_plugin_is():
    from augkit_diffusion import Diffusion

    registry = get_registry()
    assert "diffusion" in registry.names()
    plugin = registry.plugin_of(Diffusion)
    assert plugin.distribution == "augkit-diffusion"
    assert registry.get("diffusion").cls is Diffusion


def test_it_generates_seeded_uint8_images_of_the_class_asked_for(tmp_path):
    aug = _fit(tmp_path)
    a = aug.generate(1, 5, Context(seed=3, device="cpu")).images
    b = aug.generate(1, 5, Context(seed=3, device="cpu")).images
    assert a.shape == (5, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # deterministic sampler, seeded noise
    other_class = aug.generate(2, 5, Context(seed=3, device="cpu")).images
    assert not np.array_equal(a, other_class)  # the class embedding steers the same noise elsewhere
    assert not np.array_equal(a, aug.generate(1, 5, Context(seed=4, device="cpu")).images)
    assert (tmp_path / "diffusion" / "samples" / "step_0000004.png").exists()
    assert (tmp_path / "diffusion" / "losses.csv").exists()


def test_guidance_zero_ignores_the_class_and_guidance_above_zero_does_not(tmp_path):
    aug = _fit(tmp_path)
    z = aug.latents(4, Context(seed=1, device="cpu"))
    aug.G.guidance = 0.0
    unconditional = [aug.decode(z, label, "cpu") for label in (0, 1)]
    assert np.array_equal(*unconditional)
    aug.G.guidance = 2.0
    guided = [aug.decode(z, label, "cpu") for label in (0, 1)]
    assert not np.array_equal(*guided) and not np.array_equal(guided[0], unconditional[0])


def test_a_run_in_budget_pieces_ends_with_the_weights_of_a_run_made_at_once(tmp_path):
    whole = _fit(tmp_path / "whole")
    with pytest.raises(Paused, match="step 1 of 4"):
        _fit(tmp_path / "pieces", minutes=1e-9)
    pieces = _fit(tmp_path / "pieces", resume=True)
    for (name, a), b in zip(whole.G.state_dict().items(), pieces.G.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoints_and_saved_weights_load_without_running_code(tmp_path):
    from augkit_diffusion import Diffusion

    aug = _fit(tmp_path / "run")
    state = torch.load(tmp_path / "run" / "diffusion" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 4 and "ema" in state
    aug.save(tmp_path / "saved")
    torch.load(tmp_path / "saved" / "weights.pt", weights_only=True)
    again = Diffusion.load(tmp_path / "saved")
    ctx = Context(seed=2, device="cpu")
    assert np.array_equal(aug.generate(0, 3, ctx).images, again.generate(0, 3, Context(seed=2, device="cpu")).images)


def test_latent_augmenters_refuse_it_with_a_reason(tmp_path):
    from augkit_gan.latent import LatentPerturb

    _fit(tmp_path / "run").save(tmp_path / "saved")
    with pytest.raises(UserError, match="cannot take an encoder: training one would back-propagate through every step"):
        LatentPerturb({"generator": str(tmp_path / "saved")}).fit(_data(), Context(seed=0, device="cpu"))


def test_epsilon_prediction_and_dpm_solver_run_too(tmp_path):
    aug = _fit(tmp_path, prediction="epsilon", sampler="dpm")
    images = aug.generate(0, 2, Context(seed=0, device="cpu")).images
    assert images.shape == (2, 16, 16, 3) and images.std() > 0


def test_bad_architecture_settings_are_one_clear_line(tmp_path):
    from augkit.errors import DataError, ParamError

    with pytest.raises(ParamError, match="'attention' needs one value per resolution"):
        _fit(tmp_path / "a", attention=[True])
    with pytest.raises(DataError, match="the size must be a multiple of 32; the data is 16 px"):
        _fit(tmp_path / "b", channels=[8] * 6, attention=[False] * 6)


def test_a_recipe_that_puts_a_latent_augmenter_on_it_is_refused_before_any_work(tmp_path):
    from augkit.errors import ParamError
    from augkit.recipe import load_recipe

    path = tmp_path / "r.toml"
    path.write_text('[[augment]]\nname = "diffusion"\n\n[[augment]]\nname = "latent_perturb"\namount = 0.5\n'
                    'params = { generator = "diffusion" }\n')
    with pytest.raises(ParamError, match=r"params.generator = 'diffusion' is a 'diffusion' step; expected a generator "
                                         r"an encoder can be trained through \(acgan, cgan, vanilla\)"):
        load_recipe(path)


def test_it_works_through_a_recipe_and_the_augment_command(tmp_path, monkeypatch):
    from augkit.data.reader import H5Dataset
    from augkit.recipe import load_recipe
    from augkit.runner import run_recipe
    from conftest import run_cli

    monkeypatch.setenv("AUGKIT_CACHE_DIR", str(tmp_path / "cache"))
    params = ", ".join(f"{k} = {json_value(v)}" for k, v in TINY.items())
    path = tmp_path / "d.toml"
    path.write_text('[recipe]\nname = "d"\n[data]\nsource = "demo"\nimage_size = 16\ndemo_images = 96\n\n'
                    f'[[augment]]\nname = "diffusion"\namount = {{ per_class = 3 }}\nparams = {{ {params} }}\n')
    out = tmp_path / "run"
    run_recipe(load_recipe(path, out=out), device="cpu")
    shard = H5Dataset(out / "shards" / "diffusion.h5")
    assert len(shard) == 3 * 8 and shard.provenance["augment"]["augmenter"] == "diffusion"
    assert (out / "steps" / "diffusion" / "augmenter" / "weights.pt").exists()
    # the trained one, from the command line: the same images for the same seed
    result = run_cli("augment", "diffusion", "--data", str(out / "data" / "dataset.h5"), "--split",
                     str(out / "split.json"), "--from", str(out / "steps" / "diffusion" / "augmenter"),
                     "--per-class", "3", "--shard", "--out", str(tmp_path / "again.h5"))
    assert result.returncode == 0, result.stderr
    again = H5Dataset(tmp_path / "again.h5")
    assert np.array_equal(again.read(np.arange(len(again))), shard.read(np.arange(len(shard))))


def json_value(v) -> str:
    """A TOML value for a parameter of TINY."""
    import json

    return json.dumps(v)


@pytest.mark.parametrize("kind", ["ddim", "dpm"])
def test_the_first_step_from_pure_noise_does_not_amplify_the_networks_error(kind):
    # at t = T - 1 the clean-image estimate divides by sqrt(alpha-bar) ~ 5e-5: an eps off by 1% would
    # throw the sample far outside the data's range unless the sampler clips that estimate
    from augkit_diffusion.sampler import sampling_scheduler

    scheduler = sampling_scheduler(kind, "epsilon")
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    eps = x + 0.01 * torch.randn(x.shape, generator=g)  # a nearly right network
    first = scheduler.timesteps[0]
    assert first == 999
    after = scheduler.step(eps, first, x).prev_sample
    assert after.abs().max() < 5.0  # unclipped, this is ~ 0.06 * 200 per pixel on top of the noise
    assert (after - x).abs().mean() < 0.2
