"""augkit.train: adversarial losses, DiffAugment, EMA weights and resumable checkpoints."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from augkit.errors import DataError
from augkit.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from augkit.train.diffaugment import POLICIES, diff_augment, diff_augment_some, parse_policy
from augkit.train.ema import EMA
from augkit.train.losses import (LOSSES, AuxiliaryClass, DataToDataCE, d2d_ce, d_loss, g_loss, gradient_penalty,
                                 objectives)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- losses ---------------------------------------------------------------------------------------

def test_hand_made_loss_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    assert d_loss("hinge", real, fake).item() == pytest.approx(0.5 + 0.5)
    assert g_loss("hinge", fake).item() == pytest.approx(1.0)
    assert d_loss("wgan-gp", real, fake).item() == pytest.approx(-1.0 - 1.0)
    assert g_loss("wgan-gp", fake).item() == pytest.approx(1.0)
    zero = torch.zeros(3)
    assert d_loss("bce", zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_loss("bce", torch.tensor([0.0, 3.0])).item() == pytest.approx(
        (math.log(2) + math.log1p(math.exp(-3))) / 2)


@pytest.mark.parametrize("kind", LOSSES)
def test_g_and_d_losses_move_in_opposite_directions(kind):
    real = torch.tensor([0.5, -0.3, 0.1])
    low, high = torch.tensor([-0.8, -0.2, 0.3]), torch.tensor([0.2, 0.6, 0.9])  # D fooled more by `high`
    assert d_loss(kind, real, high) > d_loss(kind, real, low)
    assert g_loss(kind, high) < g_loss(kind, low)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="hinge"):
        d_loss("lsgan", torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="wgan-gp"):
        g_loss("lsgan", torch.zeros(1))


def test_gradient_penalty_zero_for_1_lipschitz_critic_positive_when_scaled():
    real, fake = torch.randn(4, 3, 2, 2, generator=gen(0)), torch.randn(4, 3, 2, 2, generator=gen(1))
    w = torch.randn(12, generator=gen(2))
    w = w / w.norm()
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake, generator=gen(3))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)
    gp3 = gradient_penalty(lambda x: 3 * (x.flatten(1) @ w), real, fake, generator=gen(3))
    assert gp3.item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_reaches_critic_weights_and_is_reproducible():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 1))
    real, fake = torch.randn(4, 3, 2, 2, generator=gen(0)), torch.randn(4, 3, 2, 2, generator=gen(1))
    gp = gradient_penalty(critic, real, fake, generator=gen(5))
    assert gp.item() == gradient_penalty(critic, real, fake, generator=gen(5)).item()
    gp.backward()  # create_graph: the penalty trains the critic
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic[1].parameters())


def _packed(e: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
    """What a d2d head returns for unit embeddings ``e`` and the unit proxies of their classes."""
    return torch.cat([(e * proxy).sum(1, keepdim=True), e], 1)


def _unit(*rows) -> torch.Tensor:
    return nn.functional.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def test_d2d_ce_is_at_its_floor_without_gradient_when_every_case_is_easy():
    # each image on its own class's proxy, the classes orthogonal: nothing left to pull or push, and the
    # loss is log(1 + number of negatives), each easy negative counting exp(0)
    y = torch.tensor([0, 0, 1, 2])
    e = _unit([1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]).requires_grad_(True)
    loss = d2d_ce(_packed(e, e.detach()), y)
    assert loss.item() == pytest.approx(np.mean([math.log(3), math.log(3), math.log(4), math.log(4)]))
    loss.backward()
    assert e.grad.abs().max().item() == 0.0


def test_d2d_ce_pulls_to_the_proxy_and_pushes_from_other_classes_but_not_from_its_own():
    y = torch.tensor([0, 1, 0])
    proxy = _unit([1, 0, 0], [0, 1, 0], [1, 0, 0])
    far = _unit([0.2, 0.1, 1], [0, 1, 0], [1, 0, 0])    # image 0 far from its proxy
    near = _unit([0.9, 0.1, 0.4], [0, 1, 0], [1, 0, 0])
    assert d2d_ce(_packed(far, proxy), y) > d2d_ce(_packed(near, proxy), y)
    # image 0 turned towards the other class's image, at the same cosine to its own proxy, costs more
    apart = _unit([0.9, 0.0, 0.19 ** 0.5], [0, 1, 0], [1, 0, 0])
    mixed = _unit([0.9, 0.3, 0.1 ** 0.5], [0, 1, 0], [1, 0, 0])
    assert _packed(mixed, proxy)[0, 0].item() == pytest.approx(_packed(apart, proxy)[0, 0].item())
    assert d2d_ce(_packed(mixed, proxy), y) > d2d_ce(_packed(apart, proxy), y)
    # image 2 (class 0) onto image 0 or mirrored away from it: the same similarities to its proxy and to
    # image 1, so only a same-class pair changes, and that pair is no negative
    onto = _unit([0.9, 0.0, 0.19 ** 0.5], [0, 1, 0], [0.9, 0.0, 0.19 ** 0.5])
    away = _unit([0.9, 0.0, 0.19 ** 0.5], [0, 1, 0], [0.9, 0.0, -0.19 ** 0.5])
    assert d2d_ce(_packed(onto, proxy), y).item() == pytest.approx(d2d_ce(_packed(away, proxy), y).item())
    assert d2d_ce(_packed(onto, proxy), torch.tensor([0, 1, 2])).item() != pytest.approx(
        d2d_ce(_packed(away, proxy), torch.tensor([0, 1, 2])).item())  # as another class's image, it counts


def test_the_class_term_is_chosen_by_name():
    assert any(isinstance(t, DataToDataCE) for t in objectives("hinge", class_loss="d2d"))
    assert not any(type(t) is AuxiliaryClass for t in objectives("hinge", class_loss="d2d"))
    assert any(type(t) is AuxiliaryClass for t in objectives("hinge"))
    with pytest.raises(ValueError, match="ce, d2d"):
        objectives("hinge", class_loss="contra")


def test_a_row_without_negatives_adds_nothing_rather_than_nan():
    e = _unit([1, 0], [0, 1]).requires_grad_(True)
    loss = d2d_ce(_packed(e, _unit([0, 1], [0, 1])), torch.tensor([0, 0]))
    assert loss.item() == 0.0


# ---- DiffAugment ----------------------------------------------------------------------------------

def images(n: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen(seed)) * 2 - 1


def test_empty_policy_is_identity():
    x = images()
    assert diff_augment(x, "") is x
    assert diff_augment(x, []) is x
    assert parse_policy(" color , cutout,") == ("color", "cutout")


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match="translation"):
        diff_augment(images(), "color,zoom")


@pytest.mark.parametrize("policy", [*POLICIES, "color,translation,cutout"])
def test_shape_dtype_determinism_and_gradients(policy):
    x = images().requires_grad_(True)
    a = diff_augment(x, policy, generator=gen(7))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    assert torch.equal(a, diff_augment(x, policy, generator=gen(7)))
    assert not torch.equal(a, diff_augment(x, policy, generator=gen(8)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_channels_last_is_kept():
    x = images().contiguous(memory_format=torch.channels_last)
    a = diff_augment(x, "color,translation,cutout", generator=gen(0))
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert diff_augment(images(), "translation", generator=gen(0)).is_contiguous()


def test_translation_moves_a_bright_pixel_within_an_eighth():
    size, n = 16, 16
    x = torch.full((n, 1, size, size), -1.0)
    x[:, :, 8, 8] = 1.0
    a = diff_augment(x, "translation", generator=gen(0))
    moved = 0
    for img in a[:, 0]:
        ys, xs = torch.nonzero(img == 1.0, as_tuple=True)
        assert len(ys) == 1  # the pixel stays in frame: shifts are at most 16 / 8 = 2
        dy, dx = ys.item() - 8, xs.item() - 8
        assert abs(dy) <= 2 and abs(dx) <= 2
        moved += (dy, dx) != (0, 0)
    assert moved > 0
    # the uncovered band is zero padding
    far = diff_augment(torch.ones(n, 1, size, size), "translation", generator=gen(0))
    assert (far == 0).any()


def test_cutout_zeroes_a_square_of_at_most_half_the_size():
    size = 8
    x = torch.ones(6, 3, size, size, requires_grad=True)
    a = diff_augment(x, "cutout", generator=gen(0))
    for img in a:
        zero = img == 0
        assert zero.any() and zero.all(dim=0).eq(zero.any(dim=0)).all()  # same pixels in every channel
        assert zero[0].sum() <= (size // 2) ** 2
    a.sum().backward()
    assert torch.equal(x.grad, (a != 0).float())  # cut pixels get no gradient


def test_ada_augments_each_image_with_probability_p_and_passes_the_others_through():
    x = (torch.rand(64, 3, 8, 8) * 2 - 1).requires_grad_(True)
    assert diff_augment_some(x, "color,cutout", 0.0, generator=gen(0)) is x
    always = diff_augment_some(x, "color,cutout", 1.0, generator=gen(0))
    g = gen(0)
    torch.rand(64, generator=g)  # the choice comes first from the same stream
    assert torch.equal(always, diff_augment(x, "color,cutout", generator=g))
    half = diff_augment_some(x, "color,cutout", 0.5, generator=gen(1))
    changed = (half != x).flatten(1).any(1)
    assert 16 < int(changed.sum()) < 48  # about half of 64 (binomial: outside this range p < 1e-4)
    assert torch.equal(half, diff_augment_some(x, "color,cutout", 0.5, generator=gen(1)))  # reproducible
    half.sum().backward()
    assert torch.equal(x.grad[~changed], torch.ones_like(x.grad[~changed]))  # untouched rows: identity
    assert x.grad[changed].abs().sum() > 0  # and augmented ones still carry G's gradient


def test_non_cpu_generator_refused():
    class CudaGenerator:  # stands in for torch.Generator("cuda") on machines without a GPU
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="CPU"):
        diff_augment(images(), "color", generator=CudaGenerator())


# ---- EMA ------------------------------------------------------------------------------------------

def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_lies_between_old_and_new_and_copies_buffers():
    net = small_net()
    ema = EMA(net, decay=0.9)
    old = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(5, 3))  # moves the BatchNorm running stats
    ema.update(net)
    avg = ema.module[0].weight
    assert torch.allclose(avg, old + 0.1)
    assert ((avg > old) & (avg < net[0].weight)).all()
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    assert ema.module[1].num_batches_tracked.item() == 1
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    assert net[0].weight.requires_grad  # the live model is untouched


def test_ema_decay_zero_copies_and_warmup_starts_low():
    net = small_net()
    ema = EMA(net, decay=0.0)
    with torch.no_grad():
        net[0].weight.mul_(3)
    ema.update(net)
    assert torch.equal(ema.module[0].weight, net[0].weight)
    warm = EMA(net, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.update(net)
    assert warm.current_decay() == pytest.approx(2 / 11)
    with pytest.raises(ValueError):
        EMA(net, decay=1.5)


def test_ema_state_round_trip():
    net = small_net()
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.add_(2.0)
    ema.update(net)
    other = EMA(small_net(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.step == 1
    assert torch.equal(other.module[0].weight, ema.module[0].weight)


def test_ema_of_old_style_spectral_norm_after_forward():
    net = nn.utils.spectral_norm(nn.Linear(3, 2))
    net(torch.randn(2, 3)).sum().backward()  # leaves a non-leaf `weight` that deepcopy refuses
    ema = EMA(net, decay=0.5)
    ema.update(net)
    assert ema.module(torch.randn(2, 3)).shape == (2, 2)


# ---- checkpoints ----------------------------------------------------------------------------------

def draws(np_rng: np.random.Generator, g: torch.Generator):
    return (random.random(), np.random.random(), np_rng.random(), torch.randn(3),
            torch.randint(0, 1000, (3,), generator=g))


def test_round_trip_model_optimizer_and_rng(tmp_path):
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.99))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    np_rng, g = np.random.default_rng(123), torch.Generator().manual_seed(5)
    draws(np_rng, g)  # move every generator away from its seed
    path = save_checkpoint(tmp_path / "ck.pt", {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                                "step": 7, "rng": rng_state(np_rng, {"g": g})}, kind="acgan")
    expected = draws(np_rng, g)
    draws(np_rng, g)

    state = load_checkpoint(path, "acgan")
    assert state["augkit_checkpoint"] == 1 and state["kind"] == "acgan" and state["step"] == 7
    net2 = nn.Linear(3, 2)
    net2.load_state_dict(state["model"])
    opt2 = torch.optim.Adam(net2.parameters())
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(net2.weight, net.weight)
    assert opt2.param_groups[0]["betas"] == (0.5, 0.99)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])

    np_rng2, g2 = np.random.default_rng(0), torch.Generator()
    restore_rng_state(state["rng"], np_rng2, {"g": g2})
    got = draws(np_rng2, g2)
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3]) and torch.equal(got[4], expected[4])


def test_kind_from_state_and_unstorable_values_refused_at_save(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"kind": "vanilla", "x": 1})
    assert load_checkpoint(tmp_path / "a.pt", "vanilla")["x"] == 1
    with pytest.raises(ValueError, match="kind"):
        save_checkpoint(tmp_path / "b.pt", {"x": 1})
    with pytest.raises(TypeError, match=r"\['loss'\]"):
        save_checkpoint(tmp_path / "b.pt", {"loss": np.float64(1.0)}, kind="vanilla")
    assert not (tmp_path / "b.pt").exists()


def test_restore_rng_refuses_missing_generator(tmp_path):
    state = rng_state()
    with pytest.raises(DataError, match="'g'"):
        restore_rng_state(state, generators={"g": torch.Generator()})
    with pytest.raises(DataError, match="numpy Generator"):
        restore_rng_state(state, np_rng=np.random.default_rng(0))


def test_atomic_save_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1}, kind="vanilla")

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if killed while writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2}, kind="vanilla")
    monkeypatch.undo()
    assert load_checkpoint(path, "vanilla")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", "vanilla")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match="garbage.pt: not a readable torch checkpoint"):
        load_checkpoint(garbage, "vanilla")
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.zeros(100)}, kind="vanilla")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated.pt: not a readable torch checkpoint"):
        load_checkpoint(truncated, "vanilla")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.pt: not a readable"):
        load_checkpoint(empty, "vanilla")


class _Reduces:
    """Unpickles by calling print: harmless, but exactly what weights_only must refuse."""

    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_pickle_needing_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"augkit_checkpoint": 1, "kind": "vanilla", "x": _Reduces()}, path)
    with pytest.raises(DataError, match="evil.pt: refusing to load.*not a weights-only checkpoint"):
        load_checkpoint(path, "vanilla")
    assert "ran code" not in capsys.readouterr().out


def test_foreign_checkpoints(tmp_path):
    path = save_checkpoint(tmp_path / "v.pt", {"step": 1}, kind="vanilla")
    with pytest.raises(DataError, match="v.pt: foreign checkpoint.*'vanilla'.*'acgan'"):
        load_checkpoint(path, "acgan")
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, plain)
    with pytest.raises(DataError, match="plain.pt: foreign checkpoint"):
        load_checkpoint(plain, "vanilla")
    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(2), bare)
    with pytest.raises(DataError, match="bare.pt: foreign checkpoint"):
        load_checkpoint(bare, "vanilla")
