"""The shared training loop: any Task resumes to the same state, the encoder runs on it, and a GAN's
objective is made of replaceable terms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from augkit.train.loop import Cadence, Streams, Task, run_training


class _Regression(Task):
    """Least squares on random batches: small, but draws from every kind of stream the loop saves."""

    kind = "toy"

    def __init__(self, streams: Streams):
        self.streams = streams
        self.w = torch.zeros(4, requires_grad=True)
        self.opt = torch.optim.SGD([self.w], lr=0.1, momentum=0.9)
        self.x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.sampled: list[int] = []

    def step(self):
        idx = torch.from_numpy(self.streams.np.choice(64, 8, replace=False))
        noise = torch.randn(8, generator=self.streams.torch["noise"])
        loss = ((self.x[idx] @ self.w - self.y[idx] - 0.1 * noise) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss_mse": loss.detach()}, 8

    def state_dict(self):
        return {"w": self.w.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])

    def sample(self, step, path):
        self.sampled.append(step)


def _run(folder, steps=7, resume=False, callback=None, minutes=0.0):
    streams = Streams(5, {"noise": 1})
    task = _Regression(streams)
    cadence = Cadence(steps, log_every=2, sample_every=3, checkpoint_every=3, max_minutes=minutes)
    out = run_training(task, streams, cadence, folder, config={"toy": True, "steps": steps}, resume=resume,
                       callback=callback)
    return task, out


def test_any_task_resumes_to_the_state_of_an_uninterrupted_run(tmp_path):
    straight, ref = _run(tmp_path / "straight")

    def killed(step):
        if step == 5:  # after the step-3 checkpoint: steps 4 and 5 are lost, as with a kill
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", callback=killed)
    resumed, out = _run(tmp_path / "resumed", resume=True)
    assert torch.equal(resumed.w, straight.w)
    assert [(h["step"], h["loss_mse"]) for h in out["history"]] == [(h["step"], h["loss_mse"]) for h in ref["history"]]
    assert [h["step"] for h in ref["history"]] == [2, 4, 6, 7]  # every log_every steps, and the last
    assert straight.sampled == [3, 6, 7] and resumed.sampled == [6, 7]
    for name in ("config.json", "checkpoints/latest.pt", "losses.csv", "losses.png"):
        assert (tmp_path / "resumed" / name).is_file(), name


def test_a_spent_budget_ends_the_run_where_it_can_continue(tmp_path):
    _, out = _run(tmp_path, minutes=1e-9)
    assert out["stopped_early"] and out["steps"] == 1
    task, out = _run(tmp_path, resume=True)
    straight, _ = _run(tmp_path / "straight")
    assert out["steps"] == 7 and torch.equal(task.w, straight.w)


def test_a_resumed_piece_with_a_larger_budget_records_the_budget_it_runs(tmp_path):
    _run(tmp_path, minutes=1e-9)
    _, out = _run(tmp_path, steps=9, resume=True)
    assert out["steps"] == 9
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 9


def test_a_run_refuses_another_kind_of_checkpoint(tmp_path):
    from augkit.errors import DataError

    _run(tmp_path)

    class Other(_Regression):
        kind = "other"

    streams = Streams(5, {"noise": 1})
    with pytest.raises(DataError, match="toy"):
        run_training(Other(streams), streams, Cadence(9), tmp_path, config={}, resume=True)


def test_the_encoder_trains_on_the_loop_and_resumes_exactly(tmp_path):
    from augkit.train.encoder import EncoderConfig, train_encoder
    from augkit_gan.networks import Encoder, Generator

    torch.manual_seed(0)
    G = Generator(16, 8, 16, "resize")
    images = torch.randint(0, 256, (24, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def fit(folder, resume=False, steps=6, callback=None):
        torch.manual_seed(2)
        E = Encoder(16, 8, 8)
        cfg = EncoderConfig(steps=steps, batch_size=8, checkpoint_every=2, sample_every=3, log_every=2)
        return E, train_encoder(E, G, images, None, cfg, folder, kind="enc", seed=0, resume=resume)

    E_ref, ref = fit(tmp_path / "straight")
    fit(tmp_path / "pieces", steps=4)  # a first session, then a longer budget in the same folder
    E, out = fit(tmp_path / "pieces", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(E.state_dict().values(), E_ref.state_dict().values()))
    assert [h["loss_l1"] for h in out["history"]] == [h["loss_l1"] for h in ref["history"]]
    assert (tmp_path / "pieces" / "samples" / "step_0000003.png").is_file()


def test_a_gan_objective_is_made_of_replaceable_terms(tmp_path):
    from augkit.train.gan import GANConfig, train_gan
    from augkit.train.losses import Adversarial, Objective
    from augkit_gan.networks import Discriminator, Generator

    class Recording(Objective):
        """A term that adds nothing but counts its calls in each phase."""

        def __init__(self):
            self.calls = {"d": 0, "g": 0}

        def d_phase(self, p):
            self.calls["d"] += 1
            return 0.0 * p.logit_real.mean(), {}

        def g_phase(self, p):
            self.calls["g"] += 1
            return 0.0 * p.logit_fake.mean(), {}

    images = torch.randint(0, 256, (16, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cfg = GANConfig(steps=3, batch_size=8, loss="hinge", n_critic=2, sample_every=3, checkpoint_every=3)

    def train(folder, terms):
        torch.manual_seed(0)
        G, D = Generator(16, 8, 16, "resize"), Discriminator(16, 8, 0.0, True)
        train_gan(G, D, images, None, cfg, folder, kind="vanilla", terms=terms)
        return G

    recording = Recording()
    with_term = train(tmp_path / "a", [Adversarial("hinge"), recording])
    assert recording.calls == {"d": 6, "g": 3}  # n_critic D phases and one G phase per step
    plain = train(tmp_path / "b", None)  # the default terms for cfg.loss: the same objective here
    assert all(torch.equal(a, b) for a, b in zip(with_term.state_dict().values(), plain.state_dict().values()))
    bce = train(tmp_path / "c", [Adversarial("bce")])
    assert not all(torch.equal(a, b) for a, b in zip(bce.state_dict().values(), plain.state_dict().values()))
    with pytest.raises(ValueError, match="unknown adversarial loss 'lsgan'"):
        Adversarial("lsgan")
    assert np.isfinite(float(recording.calls["d"]))
