"""Latent-space augmenters (thesis section 4.6): new images near real ones, through a trained GAN.

An encoder E is trained so that G(E(x)) reconstructs real training images x, with G frozen. Then:

- ``latent_perturb`` makes G(E(x) + eps), eps ~ N(0, sigma2 I): a variation of one real image x;
- ``latent_interp`` makes G((1 - t) E(a) + t E(b)) for two real images a, b of the same class: the
  thesis's proposed remedy for images that drift out of their class; both parents are recorded.

Either works with any saved augmenter that follows the generator contract (augkit.generator), built-in
or a plugin's: unconditional (vanilla: the image stays near its parent) or class-conditional (acgan,
cgan: G also gets the parent's class).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from augkit.augment import Augmenter, Context, Samples
from augkit.data.reader import ImageDataset
from augkit.errors import DataError, UserError
from augkit.generator import GenerativeAugmenter, encodable_generator, load_generator
from augkit.params import AUGMENTER_REF, BUDGET
from augkit.train.checkpoint import load_checkpoint, save_checkpoint
from augkit.train.encoder import EncoderConfig, reconstruction_l1, train_encoder
from augkit.train.loop import pause_if_budget_spent
from augkit.images import to_input
from augkit_gan.networks import Encoder

LATENT_NAMES = ("latent_perturb", "latent_interp")


@dataclass(frozen=True)
class LatentParams:
    generator: str | None = field(default=None, metadata={
        "help": "folder of a saved generator (any augmenter that follows the generator contract: vanilla, "
                "acgan, cgan, a plugin's); in a recipe: that step's id",
        AUGMENTER_REF: encodable_generator})
    encoder: str | None = field(default=None, metadata={
        "help": "folder of a saved latent augmenter whose encoder (and generator) to reuse instead of "
                "training one; in a recipe: that step's id. Excludes 'generator'",
        AUGMENTER_REF: LATENT_NAMES})
    encoder_steps: int = field(default=1000, metadata={"min": 1, "help": "encoder training updates"})
    encoder_batch_size: int = field(default=64, metadata={"min": 2})
    encoder_lr: float = field(default=1e-3, metadata={"min": 0})
    encoder_channels: int = field(default=32, metadata={"min": 4, "help": "width of the encoder's first conv"})
    held_out: float = field(default=0.1, metadata={
        "min": 0, "max": 0.5, "help": "fraction of training images kept out of encoder training to measure it"})
    minutes: float = field(default=0.0, metadata={
        "min": 0, BUDGET: True, "help": "encoder wall-time budget of this session (0 = none); --resume continues"})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})


@dataclass(frozen=True)
class PerturbParams(LatentParams):
    sigma2: float = field(default=0.04, metadata={"min": 0, "help": "variance of the latent noise (thesis 0.04)"})


@dataclass(frozen=True)
class InterpParams(LatentParams):
    t_steps: int = field(default=0, metadata={
        "min": 0, "help": "0: t uniform in (0, 1); k: t drawn from k/(k+1) equal steps between the two images"})


def load_of_kind(path: str | Path, names: tuple[str, ...], needs: str) -> Augmenter:
    """The saved augmenter in ``path`` when its augmenter.json names one of ``names``; otherwise an error
    that names the folder, what it holds and what ``needs`` it."""
    from augkit.registry import load_augmenter

    name = Augmenter.saved_meta(path)["augmenter"]
    if name not in names:
        raise DataError(f"{path}: holds augmenter '{name}'; {needs} ({', '.join(names)})")
    return load_augmenter(path)


class _LatentAugmenter(Augmenter):
    trains = True

    def __init__(self, params=None):
        super().__init__(params)
        self.gan: GenerativeAugmenter | None = None
        self.E: torch.nn.Module | None = None
        self.train_set: ImageDataset | None = None
        self.report: dict = {}

    # -- fit: the encoder ------------------------------------------------------------------------
    def fit(self, train: ImageDataset, ctx: Context) -> None:
        if self.params.encoder is not None:
            self._share_encoder(train)
            return
        if self.params.generator is None:
            raise UserError(f"augmenter '{self.name}': set 'generator' to the folder of a saved GAN "
                            "(or, in a recipe, to the id of a GAN step), or 'encoder' to a saved latent augmenter")
        self.gan = load_generator(self.params.generator)
        if not self.gan.encodable:
            raise UserError(f"{self.name}: generator '{self.gan.name}' ({self.params.generator}) cannot take an "
                            "encoder: training one would back-propagate through every step of its sampler. Its "
                            "own interpolation between two random latents works (augkit interpolate --from)")
        G = self.gan.trained_G()
        if self.gan.image_size != train.image_size[0]:
            raise DataError(f"{self.name}: the generator makes {self.gan.image_size}px images, the data is "
                            f"{train.image_size[0]}px")
        images = torch.from_numpy(train.read(np.arange(len(train))))
        labels = torch.from_numpy(train.labels) if self.gan.conditional else None
        order = np.random.default_rng([ctx.seed, 77]).permutation(len(train))
        n_held = int(round(self.params.held_out * len(train))) if len(train) >= 4 else 0
        held, fit_rows = np.sort(order[:n_held]), np.sort(order[n_held:])
        torch.manual_seed(ctx.seed)
        self.E = Encoder(self.gan.image_size, self.gan.latent_dim, self.params.encoder_channels)
        p = self.params
        cfg = EncoderConfig(steps=p.encoder_steps, batch_size=p.encoder_batch_size, lr=p.encoder_lr,
                            checkpoint_every=p.checkpoint_every, sample_every=p.sample_every, max_minutes=p.minutes)
        run_dir = Path(ctx.workdir) / self.name if ctx.workdir is not None else None
        if run_dir is None:
            import tempfile

            run_dir = Path(tempfile.mkdtemp(prefix=f"augkit-{self.name}-"))
        pick = torch.from_numpy(fit_rows)
        result = train_encoder(self.E, G, images[pick], None if labels is None else labels[pick], cfg, run_dir,
                               kind=f"{self.name}-encoder", seed=ctx.seed, device=ctx.device, resume=ctx.resume)
        pause_if_budget_spent(result, f"training the encoder of '{self.name}'", p.encoder_steps, p.minutes)
        dev = torch.device(ctx.device)
        hold = torch.from_numpy(held)
        self.report = {
            "encoder_steps": result["steps"], "train_images": len(fit_rows), "held_out_images": len(held),
            "train_l1": reconstruction_l1(self.E, G, images[pick][:1000], None if labels is None else labels[pick][:1000],
                                          dev),
            "held_out_l1": (reconstruction_l1(self.E, G, images[hold], None if labels is None else labels[hold], dev)
                            if len(held) else None),
            "generator": str(self.params.generator), "generator_kind": self.gan.name,
        }
        (run_dir / "encoder.json").write_text(json.dumps(self.report, indent=1))
        self.train_set = train

    def _share_encoder(self, train: ImageDataset) -> None:
        """Take the encoder and generator of another saved latent augmenter: one encoder training
        serves perturbation and interpolation alike."""
        if self.params.generator is not None:
            raise UserError(f"augmenter '{self.name}': give 'generator' or 'encoder', not both (a shared "
                            "encoder brings the generator it was trained against)")
        donor = load_of_kind(self.params.encoder, LATENT_NAMES, "'encoder' needs a latent augmenter")
        if donor.gan.image_size != train.image_size[0]:
            raise DataError(f"{self.params.encoder}: its generator makes {donor.gan.image_size}px images, the data "
                            f"is {train.image_size[0]}px")
        self.gan, self.E = donor.gan, donor.E
        self.report = dict(donor.report, encoder_from=str(self.params.encoder))
        self.train_set = train

    def prepare(self, train: ImageDataset, ctx: Context) -> None:
        self.train_set = train

    # -- generate ---------------------------------------------------------------------------------
    def _latents(self, x: np.ndarray, dev: torch.device) -> torch.Tensor:
        self.E.to(dev).eval()
        with torch.no_grad():
            return self.E(to_input(torch.from_numpy(x), dev))

    def _decode(self, z: torch.Tensor, label: int, dev: torch.device) -> np.ndarray:
        return self.gan.decode(z, label if self.gan.conditional else None, str(dev))

    def _members(self, label: int) -> np.ndarray:
        if self.E is None or self.gan is None:
            raise UserError(f"augmenter '{self.name}': call fit() (or load a trained one) before generating")
        if self.train_set is None:
            raise UserError(f"augmenter '{self.name}': give it the training images first (prepare())")
        members = np.flatnonzero(self.train_set.labels == label)
        if len(members) == 0:
            raise UserError(f"augmenter '{self.name}': class '{self.train_set.class_names[label]}' has no "
                            "training images to start from")
        return members

    def interpolate(self, steps: int, ctx: Context, images: np.ndarray | None = None,
                    label: int | None = None) -> np.ndarray:
        """``steps`` images between the latents of two images (2, H, W, 3) (t = 0 ... 1), or between two
        random latents when ``images`` is None: the thesis's figure 17, for `augkit interpolate`."""
        if self.E is None or self.gan is None:
            raise UserError(f"augmenter '{self.name}': call fit() (or load a trained one) first")
        if images is None:
            return self.gan.interpolate(steps, ctx, None, label)
        dev = torch.device(ctx.device)
        z = self._latents(images, dev)
        return self.gan.interpolate_latents(z[0], z[1], steps, label, ctx.device)

    # -- save / load ------------------------------------------------------------------------------
    def save(self, path):
        path = super().save(path)
        if self.E is None:
            raise UserError(f"augmenter '{self.name}': nothing to save before fit()")
        gan_dir = path / "generator"
        shutil.rmtree(gan_dir, ignore_errors=True)
        self.gan.save(gan_dir)  # a copy: the saved augmenter works without the GAN's original folder
        save_checkpoint(path / "encoder.pt", {"E": self.E.state_dict(), "arch": json.dumps(
            {"size": self.E.size, "latent_dim": self.E.latent_dim, "channels": self.E.channels}),
            "report": json.dumps(self.report)}, kind=f"{self.name}-encoder")
        return path

    @classmethod
    def load(cls, path):
        aug = super().load(path)
        aug.gan = load_generator(Path(path) / "generator")
        state = load_checkpoint(Path(path) / "encoder.pt", kind=f"{cls.name}-encoder")
        arch = json.loads(state["arch"])
        aug.E = Encoder(arch["size"], arch["latent_dim"], arch["channels"])
        try:
            aug.E.load_state_dict(state["E"])
        except RuntimeError as exc:
            raise DataError(f"{path}: encoder weights do not fit the saved architecture ({exc})") from None
        aug.report = json.loads(state["report"])
        return aug


class LatentPerturb(_LatentAugmenter):
    """G(E(x) + eps), eps ~ N(0, sigma2 I): a variation of a real training image x (its parent)."""

    name = "latent_perturb"
    Params = PerturbParams
    summary = "variations of real images: G(E(x) + noise) through a trained GAN and encoder"

    def generate(self, label: int, n: int, ctx: Context) -> Samples:
        members = self._members(label)
        pick = np.sort(ctx.rng.choice(members, size=n, replace=True))
        dev = torch.device(ctx.device)
        z = self._latents(self.train_set.read(pick), dev)
        noise = torch.randn(z.shape, generator=ctx.torch_generator()).to(dev)
        images = self._decode(z + float(np.sqrt(self.params.sigma2)) * noise, label, dev)
        return Samples(images, parents=self.train_set.rows[pick])


class LatentInterp(_LatentAugmenter):
    """G((1 - t) E(a) + t E(b)) for two training images a, b of the class: both are its parents."""

    name = "latent_interp"
    Params = InterpParams
    summary = "images between two real images of a class, through a trained GAN and encoder"
    two_parents = True

    def generate(self, label: int, n: int, ctx: Context) -> Samples:
        members = self._members(label)
        a = ctx.rng.choice(members, size=n, replace=True)
        if len(members) > 1:  # b: another image of the class, never a itself
            offset = ctx.rng.integers(1, len(members), size=n)
            b = members[(np.searchsorted(members, a) + offset) % len(members)]
        else:
            b = a.copy()
        k = self.params.t_steps
        t = ctx.rng.uniform(0, 1, n) if k == 0 else ctx.rng.integers(1, k + 1, n) / (k + 1)
        dev = torch.device(ctx.device)
        za, zb = self._latents(self.train_set.read(a), dev), self._latents(self.train_set.read(b), dev)
        tt = torch.from_numpy(t).float().to(dev)[:, None]
        images = self._decode((1 - tt) * za + tt * zb, label, dev)
        return Samples(images, parents=np.stack([self.train_set.rows[a], self.train_set.rows[b]], 1))
