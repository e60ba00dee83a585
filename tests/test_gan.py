"""GAN augmenters at tiny sizes: every GAN and loss trains and generates; resume is exact; acgan's
frozen layers stay frozen; checkpoints are safe."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from augkit.augment import Context
from augkit.data import H5Dataset, import_source
from augkit.errors import DataError, UserError
from augkit.generate import augment_to_file
from augkit.registry import get_augmenter
from augkit.train.gan import GANConfig, train_gan
from augkit_gan.networks import Discriminator, Dropout, Generator

TINY = {"g_channels": 32, "d_channels": 8, "batch_size": 8, "steps": 3, "sample_every": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def demo16(tmp_path_factory):
    path = tmp_path_factory.mktemp("gan") / "demo16.h5"
    import_source("demo", path, size=16, n=96, seed=0)
    return H5Dataset(path)


def _ctx(tmp_path, seed=0, **kw):
    return Context(seed=seed, device="cpu", workdir=tmp_path, **kw)


@pytest.mark.parametrize("name, params", [
    ("vanilla", {"loss": "bce", "preset": "thesis", "steps": 2}),
    ("vanilla", {"loss": "hinge", "upsample": "resize", "diffaugment": "color,translation,cutout"}),
    ("vanilla", {"loss": "wgan-gp", "ema_decay": 0.9}),
    ("acgan", {"mode": "thesis", "base_steps": 2}),
    ("acgan", {"mode": "full", "loss": "wgan-gp"}),
    ("cgan", {}),
    ("cgan", {"head": "projection+d2d"}),
    ("cgan", {"head": "d2d", "aux_on_fakes": True}),
])
def test_every_gan_and_loss_trains_and_generates(demo16, tmp_path, name, params):
    aug = get_augmenter(name, {**TINY, **params})
    aug.fit(demo16, _ctx(tmp_path))
    run = tmp_path / name
    assert (run / "config.json").is_file() and (run / "checkpoints" / "latest.pt").is_file()
    assert (run / "losses.csv").read_text().startswith("step,") and (run / "losses.png").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir())[-1] == f"step_{aug.params.steps:07d}.png"
    if name == "vanilla":
        images = aug.sample(5, Context(seed=1, device="cpu"))
    else:
        images = aug.generate(2, 5, Context(seed=1, device="cpu")).images
        again = aug.generate(2, 5, Context(seed=1, device="cpu")).images
        np.testing.assert_array_equal(images, again)
        assert not np.array_equal(images, aug.generate(2, 5, Context(seed=2, device="cpu")).images)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8


def _weights(*modules):
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def _train(run_dir, steps, callback=None, resume=False, minutes=0.0, **options):
    torch.manual_seed(0)
    G, D = Generator(16, 8, 32, "resize"), Discriminator(16, 8, dropout=0.2)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    cfg = GANConfig(steps=steps, batch_size=8, checkpoint_every=2, sample_every=100, log_every=1, ema_decay=0.9,
                    diffaugment="color,translation", max_minutes=minutes, **options)
    out = train_gan(G, D, images, None, cfg, run_dir, kind="vanilla", seed=3, resume=resume, callback=callback)
    return G, D, out


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    G_ref, D_ref, ref = _train(tmp_path / "straight", 6)

    def killed(step):
        if step == 5:  # after the step-4 checkpoint: work of step 5 is lost, as with a kill
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "interrupted", 6, callback=killed)
    G, D, out = _train(tmp_path / "interrupted", 6, resume=True)
    for a, b in zip(_weights(G, D, out["ema"].module), _weights(G_ref, D_ref, ref["ema"].module)):
        assert torch.equal(a, b)
    losses = [[(h["step"], h["loss_d"], h["loss_g"]) for h in run["history"]] for run in (out, ref)]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_a_run_started_before_an_option_existed_resumes_while_the_option_is_at_its_default(tmp_path):
    import json

    from augkit.errors import UserError

    def killed(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, 6, callback=killed)
    config = tmp_path / "config.json"
    record = json.loads(config.read_text())
    del record["identity"]["optimisation"]["ada_target"]  # as an older augkit wrote it
    config.write_text(json.dumps(record))
    with pytest.raises(UserError, match="started with optimisation.ada_target = None, now 0.6"):
        _train(tmp_path, 6, resume=True, ada_target=0.6)  # the option set: not the run that was started
    G, D, out = _train(tmp_path, 6, resume=True)
    assert out["steps"] == 6


def test_ada_moves_its_probability_with_d_s_confidence_and_resumes_it_exactly(tmp_path):
    # a low target (0.01): a D that scores most reals above 0 pushes p up. The controller's rule: every
    # ada_interval (2) steps p moves by the images seen since (2 x batch 8) / ada_images (64) = 0.25,
    # up when E[sign D(real)] is above the target, down otherwise, within [0, 1]; between, it holds
    ada = {"ada_target": 0.01, "ada_interval": 2, "ada_images": 64}
    G_ref, D_ref, ref = _train(tmp_path / "straight", 8, **ada)
    p = [h["ada_p"] for h in ref["history"]]  # one row per step (log_every 1): p after that step
    assert max(p) > 0 and all(0 <= v <= 1 and (4 * v).is_integer() for v in p)
    for step, (before, after) in enumerate(zip([0.0, *p], p), start=1):
        assert after == before if step % 2 else abs(after - before) in (0.0, 0.25)

    def killed(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "killed", 8, callback=killed, **ada)
    G, D, out = _train(tmp_path / "killed", 8, resume=True, **ada)
    assert [h["ada_p"] for h in out["history"]] == p
    for a, b in zip(_weights(G, D), _weights(G_ref, D_ref)):
        assert torch.equal(a, b)


def test_ctrl_c_saves_a_checkpoint_at_the_current_step(tmp_path):
    def press_ctrl_c(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="stopped at step 3"):
        _train(tmp_path, 6, callback=press_ctrl_c)
    from augkit.train.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt", kind="vanilla")["step"] == 3
    G, D, out = _train(tmp_path, 6, resume=True)
    assert out["steps"] == 6


def test_a_time_budget_ends_training_with_samples_and_a_checkpoint_to_continue_from(tmp_path):
    G_ref, D_ref, ref = _train(tmp_path / "straight", 6)
    _, _, out = _train(tmp_path / "budget", 6, minutes=1e-9)  # spent after the first step
    assert out["stopped_early"] and out["steps"] == 1
    assert (tmp_path / "budget" / "samples" / "step_0000001.png").exists()
    assert (tmp_path / "budget" / "losses.png").exists()
    G, D, out = _train(tmp_path / "budget", 6, resume=True)
    assert out["steps"] == 6 and not out["stopped_early"]
    for a, b in zip(_weights(G, D), _weights(G_ref, D_ref)):
        assert torch.equal(a, b)


def test_the_g_step_computes_no_weight_gradients_for_d(tmp_path):
    """D's weight gradients come from its own steps only (the G step needs D's input gradient alone):
    one gradient per D parameter per critic step, and D stays trainable after training."""
    torch.manual_seed(0)
    G, D = Generator(16, 8, 32, "resize"), Discriminator(16, 8, dropout=0.2)
    calls = {"D": 0, "G": 0}
    for name, net in (("D", D), ("G", G)):
        for p in net.parameters():
            p.register_hook(lambda grad, name=name: calls.__setitem__(name, calls[name] + 1))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    cfg = GANConfig(steps=3, batch_size=8, n_critic=2, sample_every=100, checkpoint_every=100, ema_decay=0)
    train_gan(G, D, images, None, cfg, tmp_path, kind="vanilla", seed=3)
    assert calls["D"] == 3 * 2 * len(list(D.parameters()))
    assert calls["G"] == 3 * len(list(G.parameters()))
    assert all(p.requires_grad for p in D.parameters())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dropout_drops_at_its_rate_keeps_the_mean_and_repeats_under_a_seed(layout):
    """augkit's Dropout is nn.Dropout's function: elements dropped with probability p, the rest scaled so
    the expectation is kept, gradient through the same mask; the output keeps the input's memory layout."""
    layer = Dropout(0.3)
    x = torch.rand(64, 16, 32, 32).contiguous(memory_format=layout).requires_grad_()
    torch.manual_seed(1)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003  # 1M decisions: sd 0.0005
    assert torch.allclose(y[kept], x[kept] / 0.7, rtol=1e-4)
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.005
    assert y.is_contiguous(memory_format=layout)
    y.backward(torch.ones_like(y))
    assert torch.allclose(x.grad, kept / 0.7, rtol=1e-4)  # d(x * m)/dx = m: the same mask, not a new one
    torch.manual_seed(1)
    assert torch.equal(layer(x), y)
    assert not torch.equal(layer(x), y)  # a new draw for the next call
    # the decisions in each channel are independent of the layout's neighbours: no channel is all kept
    assert (kept.float().mean(dim=(0, 2, 3)) < 0.75).all()
    layer.eval()
    assert layer(x) is x
    assert Dropout(0.0)(x) is x
    for p in (1.0, 1 - 1e-6, -0.1):  # 1 - 1e-6 rounds to "drop all 65,536 values"
        with pytest.raises(ValueError, match="dropout probability"):
            Dropout(p)


def test_a_finished_run_folder_is_not_overwritten(tmp_path):
    _train(tmp_path, 2)
    with pytest.raises(UserError, match="holds a run already"):
        _train(tmp_path, 2)


def test_thesis_acgan_trains_only_its_heads_and_the_realness_layer(demo16, tmp_path):
    vanilla = get_augmenter("vanilla", TINY)
    vanilla.fit(demo16, _ctx(tmp_path / "v"))
    vanilla.save(tmp_path / "vanilla")
    acgan = get_augmenter("acgan", {**TINY, "base": str(tmp_path / "vanilla"), "steps": 4})
    acgan.fit(demo16, _ctx(tmp_path / "a"))
    frozen_g = vanilla.G.state_dict()
    for key, value in acgan.G.base.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, frozen_g[key]), key
    base_d = type(vanilla).load(tmp_path / "vanilla").D
    for key, value in acgan.D.base.convs.state_dict().items():
        assert torch.equal(value, base_d.convs.state_dict()[key]), key
    assert not torch.equal(acgan.D.base.realness.weight, base_d.realness.weight)
    trainable = {n for n, p in list(acgan.G.named_parameters()) + list(acgan.D.named_parameters()) if p.requires_grad}
    assert trainable and all(n.startswith(("head.", "classifier.", "base.realness.")) for n in trainable)


def test_vanilla_cannot_make_images_of_a_class(demo16, tmp_path):
    with pytest.raises(UserError, match=r"cannot choose a class.*class-conditional generator \(acgan, cgan"):
        augment_to_file(get_augmenter("vanilla", TINY), demo16, tmp_path / "o.h5", 0.5, _ctx(tmp_path))
    with pytest.raises(UserError, match=r"use a class-conditional generator \(acgan, cgan, diffusion\)"):
        get_augmenter("vanilla").generate(0, 1, _ctx(tmp_path))


def test_corrupt_and_foreign_checkpoints_are_clear_errors(demo16, tmp_path):
    cgan = get_augmenter("cgan", TINY)
    cgan.fit(demo16, _ctx(tmp_path / "c"))
    cgan.save(tmp_path / "saved")
    from augkit_gan.augmenters import ACGAN, CGAN

    (tmp_path / "saved" / "augmenter.json").write_text('{"augmenter": "acgan", "params": {}}')
    with pytest.raises(DataError, match="foreign checkpoint"):
        ACGAN.load(tmp_path / "saved")
    cgan.save(tmp_path / "broken")
    weights = tmp_path / "broken" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(DataError, match="weights.pt"):
        CGAN.load(tmp_path / "broken")


def test_a_trained_gan_writes_a_shard_through_the_driver(demo16, tmp_path):
    cgan = get_augmenter("cgan", TINY)
    augment_to_file(cgan, demo16, tmp_path / "shard.h5", {"per_class": 3}, _ctx(tmp_path))
    shard = H5Dataset(tmp_path / "shard.h5")
    assert len(shard) == 3 * len(demo16.class_names) and (shard.parent == -1).all()
    assert shard.provenance["augment"]["augmenter"] == "cgan"


@pytest.mark.parametrize("size, gate", [(32, "2"), (64, "2"), (64, "3")])
def test_skip_excitation_gates_the_fine_map_with_the_coarse_one(size, gate):
    torch.manual_seed(0)
    G = Generator(size, 8, 32, "resize", num_classes=3, skip_excitation=True).eval()
    assert sorted(G.excite) == (["2"] if size == 32 else ["2", "3"])  # 4 -> 16 px, and 8 -> 32 px
    z, y = torch.randn(2, 8), torch.tensor([0, 1])
    with torch.no_grad():
        assert not torch.equal(*G(z, y))
        last = G.excite[gate].gate[3]  # close one gate: the map it gates is zero
        last.weight.zero_()
        last.bias.fill_(-100.0)
        closed = G(z, y)
        other_z = G(torch.randn(2, 8), y)
    # the gated map is zero, and what it feeds is the labels' conditional-BatchNorm shift, zero at
    # initialisation: nothing of z reaches the image past a closed gate
    torch.testing.assert_close(closed, other_z)


def test_skip_excitation_needs_32_px():
    with pytest.raises(ValueError, match="32 px"):
        Generator(16, 8, 32, "resize", skip_excitation=True)


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_a_self_supervised_d_reconstructs_from_its_8x8_map_in_the_same_pass(size):
    torch.manual_seed(0)
    D = Discriminator(size, 8, 0.2, True, num_classes=3, head="projection", decoder=True).eval()
    x, y = torch.rand(4, 3, size, size) * 2 - 1, torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert D.convs[: D.to_8x8](x).shape[-2:] == (8, 8)
        logit, aux = D(x, y)
        logit2, aux2, recon = D(x, y, reconstruct=3)
    torch.testing.assert_close(logit, logit2)
    assert aux is None and aux2 is None and recon.shape == (3, 3, size, size)
    with pytest.raises(ValueError, match="no decoder"):
        Discriminator(size, 8, 0.0, True, num_classes=3, head="projection")(x, y, reconstruct=3)


def _fastgan(run_dir, steps, callback=None, resume=False):
    """cgan's networks with both FastGAN parts at 32 px, on images of one flat colour each (what a
    decoder can learn to rebuild in a few steps)."""
    torch.manual_seed(0)
    G = Generator(32, 8, 32, "resize", num_classes=2, skip_excitation=True)
    D = Discriminator(32, 8, 0.0, True, num_classes=2, head="projection", decoder=True)
    colours = np.random.default_rng(0).integers(0, 256, (40, 1, 1, 3), dtype=np.uint8)
    images = torch.from_numpy(np.broadcast_to(colours, (40, 32, 32, 3)).copy())
    labels = torch.from_numpy(np.arange(40) % 2)
    cfg = GANConfig(steps=steps, batch_size=8, loss="hinge", lr_d=2e-3, checkpoint_every=4, sample_every=100,
                    log_every=1, recon_weight=1.0)
    out = train_gan(G, D, images, labels, cfg, run_dir, kind="cgan", seed=3, conditional=True, num_classes=2,
                    resume=resume, callback=callback)
    return G, D, out


def test_a_self_supervised_d_learns_to_reconstruct_and_resumes_exactly(tmp_path):
    G_ref, D_ref, ref = _fastgan(tmp_path / "straight", 40)
    recon = [h["loss_recon"] for h in ref["history"]]
    assert len(recon) == 40 and np.mean(recon[-4:]) < 0.5 * recon[0], recon
    assert "loss_recon" in (tmp_path / "straight" / "losses.csv").read_text().splitlines()[0]

    def killed(step):
        if step == 7:  # after the step-4 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fastgan(tmp_path / "killed", 40, callback=killed)
    G, D, out = _fastgan(tmp_path / "killed", 40, resume=True)
    assert [h["loss_recon"] for h in out["history"]] == recon
    for a, b in zip(_weights(G, D), _weights(G_ref, D_ref)):
        assert torch.equal(a, b)
    for decoder, weight in ((False, 1.0), (True, 0.0)):  # a loss without a decoder, a decoder without its loss
        with pytest.raises(ValueError, match="decoder go together"):
            train_gan(Generator(16, 8, 32, "resize"), Discriminator(16, 8, decoder=decoder),
                      torch.zeros(4, 16, 16, 3, dtype=torch.uint8), None,
                      GANConfig(steps=1, batch_size=2, recon_weight=weight), tmp_path / f"d{decoder}", kind="vanilla")


def test_cgan_records_its_fastgan_parts_and_loads_them_back(demo16, tmp_path):
    with pytest.raises(DataError, match="32 px"):
        get_augmenter("cgan", {**TINY, "skip_excitation": True}).fit(demo16, _ctx(tmp_path / "sle"))
    aug = get_augmenter("cgan", {**TINY, "recon_weight": 1.0})
    aug.fit(demo16, _ctx(tmp_path / "recon"))
    assert aug.arch["decoder"] is True and "skip_excitation" not in aug.arch
    aug.save(tmp_path / "saved")
    again = type(aug).load(tmp_path / "saved")
    assert again.D.decoder is not None
    np.testing.assert_array_equal(again.generate(1, 4, Context(seed=5, device="cpu")).images,
                                  aug.generate(1, 4, Context(seed=5, device="cpu")).images)
    plain = get_augmenter("cgan", TINY)
    plain.fit(demo16, _ctx(tmp_path / "plain"))
    assert "decoder" not in plain.arch and plain.D.decoder is None  # the record of a plain cgan is unchanged


def test_a_d2d_head_learns_to_place_each_class_by_its_own_proxy():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = torch.tensor([0, 1] * 12)
    x = torch.from_numpy(rng.normal(0, 0.3, (24, 3, 16, 16))).float()
    x[:, 0] += (1 - 2 * y.float())[:, None, None]  # class 0 red, class 1 not: a difference D can learn
    D = Discriminator(16, 8, 0.0, True, num_classes=2, head="d2d")
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    from augkit.train.losses import d2d_ce

    def gap():  # mean cosine to the own class's proxy minus that to the other's
        with torch.no_grad():
            return (D(x, y)[1][:, 0] - D(x, 1 - y)[1][:, 0]).mean().item()

    before = gap()
    for _ in range(30):
        opt.zero_grad()
        d2d_ce(D(x, y)[1], y).backward()
        opt.step()
    assert gap() > before + 0.5
    with pytest.raises(ValueError, match="labels"):
        D(x)


@pytest.mark.parametrize("head, class_loss", [("projection", "d2d"), ("projection+d2d", "ce"), ("aux", "d2d")])
def test_a_d2d_head_and_its_loss_go_together(tmp_path, head, class_loss):
    G = Generator(16, 8, 16, "resize", num_classes=3)
    D = Discriminator(16, 8, 0.0, True, num_classes=3, head=head)
    images, labels = torch.zeros(6, 16, 16, 3, dtype=torch.uint8), torch.arange(6) % 3
    with pytest.raises(ValueError, match="d2d head go together"):
        train_gan(G, D, images, labels, GANConfig(steps=1, batch_size=6, class_loss=class_loss), tmp_path,
                  kind="cgan", conditional=True, num_classes=3)


def test_cgan_records_a_d2d_head_and_loads_it_back(demo16, tmp_path):
    aug = get_augmenter("cgan", {**TINY, "head": "projection+d2d"})
    aug.fit(demo16, _ctx(tmp_path / "d2d"))
    assert aug.arch["head"] == "projection+d2d" and aug.D.d2d is not None and aug.D.embed is not None
    assert aug.arch["embed_dim"] == aug.D.d2d["proxy"].embedding_dim
    history = (tmp_path / "d2d" / "cgan" / "losses.csv").read_text().splitlines()
    assert float(history[-1].split(",")[history[0].split(",").index("loss_aux")]) > 0  # the term was in D's loss
    aug.save(tmp_path / "saved")
    again = type(aug).load(tmp_path / "saved")
    np.testing.assert_array_equal(again.generate(1, 4, Context(seed=5, device="cpu")).images,
                                  aug.generate(1, 4, Context(seed=5, device="cpu")).images)
