"""The GAN augmenters: vanilla (the thesis's DCGAN), acgan (the thesis's AC-GAN) and cgan (the fix).

Each builds its networks, hands them to augkit's one GAN training loop, and keeps the trained
generator (its EMA copy where there is one) to make images. ``save``/``load`` keep the weights, so a
trained generator is reused rather than retrained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from augkit.augment import Context
from augkit.data.reader import ImageDataset
from augkit.errors import DataError, UserError
from augkit.generator import GenerativeAugmenter
from augkit.params import AUGMENTER_REF, BUDGET
from augkit.train.checkpoint import load_checkpoint, save_checkpoint
from augkit.train.gan import GANConfig, train_gan
from augkit.train.loop import pause_if_budget_spent
from augkit.train.snapshots import SnapshotMetric
from augkit_gan.networks import (
    D2D_EMBED_DIM,
    SIZES,
    Discriminator,
    Generator,
    LabelledDiscriminator,
    LabelledGenerator,
    freeze_for_thesis_acgan,
)

#: Named settings. "thesis" reproduces sections 4.3-4.5; "cpu" trains something useful at 32-64 px in
#: minutes on a laptop-class CPU: narrower networks, resize-convolution (no checkerboard), hinge loss
#: with spectral norm, DiffAugment and an EMA generator.
PRESETS: dict[str, dict] = {
    "thesis": {"g_channels": 1024, "d_channels": 64, "upsample": "transpose", "loss": "bce", "dropout": 0.3,
               "spectral_norm": False, "diffaugment": "", "ema_decay": 0.0, "batch_size": 20, "lr_g": 1e-5,
               "lr_d": 1e-5, "betas": (0.5, 0.999), "epochs": 75.0, "snapshot_every": 0},
    "cpu": {"g_channels": 128, "d_channels": 32, "upsample": "resize", "loss": "hinge", "dropout": 0.0,
            "spectral_norm": True, "diffaugment": "color,translation", "ema_decay": 0.999, "batch_size": 64,
            "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.0, 0.99), "epochs": 30.0, "snapshot_every": 0},
}


_ADA_TARGET = {"min": 0, "max": 1, "help": "adaptive augmentation: DiffAugment on each image with a probability "
                                           "tuned so that E[sign D(real)] stays at this target (0.6 in the ADA "
                                           "paper); 0 = on every image"}


@dataclass(frozen=True)
class GANParams:
    """Every field left unset (None) comes from the preset."""

    preset: Literal["cpu", "thesis"] = field(default="cpu", metadata={"help": "named settings, see PRESETS"})
    epochs: float | None = field(default=None, metadata={"min": 0, "help": "passes over the training images"})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "generator updates (overrides epochs)"})
    minutes: float = field(default=0.0, metadata={
        "min": 0, BUDGET: True,
        "help": "wall-time budget of this session: stop after this long with a checkpoint (0 = none); the same "
                "command with --resume continues, and a run made in pieces equals one made at once"})
    batch_size: int | None = field(default=None, metadata={"min": 2})
    lr_g: float | None = field(default=None, metadata={"min": 0})
    lr_d: float | None = field(default=None, metadata={"min": 0})
    betas: tuple[float, float] | None = None
    loss: Literal["bce", "hinge", "wgan-gp"] | None = None
    g_channels: int | None = field(default=None, metadata={"min": 8, "help": "G width at 4x4 (thesis 1024)"})
    d_channels: int | None = field(default=None, metadata={"min": 8, "help": "D width of the first conv (thesis 64)"})
    upsample: Literal["transpose", "resize"] | None = None
    dropout: float | None = field(default=None, metadata={"min": 0, "max": 0.9})
    spectral_norm: bool | None = None
    diffaugment: str | None = None
    ada_target: float = field(default=0.0, metadata=_ADA_TARGET)
    ema_decay: float | None = field(default=None, metadata={"min": 0, "max": 1})
    latent_dim: int = field(default=100, metadata={"min": 2})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})
    snapshot_every: int | None = field(default=None, metadata={
        "min": 0, "help": "score the generator (per-class FD, KID, feature-space CAS on a fixed sample) every this "
                          "many steps into metrics.jsonl and keep the best snapshot; 0 = off"})
    snapshot_metric: SnapshotMetric = field(default="fd", metadata={
        "help": "what chooses the best snapshot (fd, kid: lower is better; cas: mean recall, cas_worst: the worst "
                "class's recall over its reference, higher is better)"})
    snapshot_per_class: int = field(default=100, metadata={"min": 4, "help": "images per class per score"})
    snapshot_features: str = field(default="resnet10_small", metadata={
        "help": "the scores' feature extractor: a timm model trained on the training images, or a saved extractor's "
                "folder"})
    use_snapshot: Literal["best", "last"] = field(default="best", metadata={
        "help": "with snapshots on: generate with the best-scored snapshot, or with the last weights"})

    def resolved(self) -> dict:
        """The preset with every explicitly set field laid over it."""
        out = dict(PRESETS[self.preset])
        out.update({k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        return out


#: the architecture fields every GAN takes from its resolved parameters
_SHARED_ARCH = ("g_channels", "d_channels", "upsample", "dropout", "spectral_norm", "latent_dim")


def _train_tensors(train: ImageDataset) -> tuple[torch.Tensor | ImageDataset, torch.Tensor]:
    """The training images in memory when they fit the memory budget (augkit.loading), else the lazy
    view itself, which train_gan streams."""
    from augkit.loading import fits_in_memory, image_bytes

    if len(train) < 2:
        raise UserError(f"GAN training needs at least 2 training images, got {len(train)}")
    h, w = train.image_size
    if h != w:
        raise DataError(f"GANs need square images, got {h}x{w}")
    if h not in SIZES:  # the user's data, not the plugin, is what does not fit
        where = getattr(getattr(train, "path", None), "name", None) or "the training images"
        raise DataError(f"{where}: the GANs make {', '.join(map(str, SIZES))} px images, the data is {h} px; "
                        f"import it at one of those sizes (augkit data import --size)")
    if not fits_in_memory(image_bytes(train)):
        return train, torch.from_numpy(train.labels)
    return torch.from_numpy(train.read(np.arange(len(train)))), torch.from_numpy(train.labels)


def _gan_config(p: dict, n_images: int, **extra) -> GANConfig:
    from augkit import distributed

    batch = min(int(p["batch_size"]), n_images)
    # under torchrun a step takes a batch on every rank: an epoch is fewer steps
    steps = p.get("steps") or max(1, math.ceil(float(p["epochs"]) * n_images / (batch * distributed.world_size())))
    return GANConfig(steps=int(steps), batch_size=batch, loss=p["loss"], lr_g=p["lr_g"], lr_d=p["lr_d"],
                     betas_g=tuple(p["betas"]), betas_d=tuple(p["betas"]), diffaugment=p["diffaugment"],
                     ada_target=float(p["ada_target"]),
                     ema_decay=p["ema_decay"], checkpoint_every=p["checkpoint_every"],
                     sample_every=p["sample_every"], max_minutes=float(p["minutes"]), **extra)


def _run_dir(ctx: Context, name: str) -> Path:
    if ctx.workdir is not None:
        return Path(ctx.workdir) / name
    return Path(tempfile.mkdtemp(prefix=f"augkit-{name}-"))


class _GANAugmenter(GenerativeAugmenter):
    """Shared save/load for augmenters whose state is a generator and its discriminator; generating,
    sampling and interpolating come with the generator contract."""

    def __init__(self, params=None):
        super().__init__(params)
        self.D: torch.nn.Module | None = None
        self.arch: dict = {}
        self.snapshot: dict | None = None  # the kept snapshot (step, key, value) when snapshots were on

    @staticmethod
    def build(arch: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The networks an architecture record describes, so that load() can rebuild them."""
        raise NotImplementedError

    def networks(self, train: ImageDataset, ctx: Context, p: dict) -> tuple[dict, torch.nn.Module, torch.nn.Module]:
        """The architecture record and fresh networks for ``train`` (resolved parameters ``p``)."""
        raise NotImplementedError

    def train_options(self, p: dict) -> dict:
        """GANConfig fields this GAN sets beyond the shared ones."""
        return {}

    def fit(self, train: ImageDataset, ctx: Context) -> None:
        """One path for every GAN: networks, then augkit's GAN loop; the EMA generator when there is one,
        and with snapshots on, the best-scored snapshot's weights (``use_snapshot``)."""
        images, labels = _train_tensors(train)
        p = self.params.resolved()
        torch.manual_seed(ctx.seed)
        self.arch, self.G, self.D = self.networks(train, ctx, p)
        k = train.num_classes if self.conditional else 0
        run_dir = _run_dir(ctx, self.name)
        judge = self._judge(train, ctx, p)
        cfg = _gan_config(p, len(images), **self.train_options(p))
        result = train_gan(self.G, self.D, images, labels if self.conditional else None, cfg, run_dir,
                           kind=self.name, seed=ctx.seed, device=ctx.device, conditional=self.conditional,
                           resume=ctx.resume, num_classes=k, identity={"arch": self.arch}, judge=judge)
        pause_if_budget_spent(result, f"training '{self.name}'", cfg.steps, p["minutes"])
        if result["ema"] is not None:
            self.G = result["ema"].module
        from augkit.train.snapshots import adopt_snapshot

        self.snapshot = adopt_snapshot(self.G, result, run_dir, self.name, p["use_snapshot"])

    def _judge(self, train: ImageDataset, ctx: Context, p: dict):
        """The snapshot scorer, when ``snapshot_every`` > 0."""
        if not p.get("snapshot_every"):
            return None
        from augkit.train.snapshots import SnapshotJudge, SnapshotSpec

        return SnapshotJudge.build(SnapshotSpec.from_params(p), train, self.G.latent_dim, self.conditional, ctx.seed,
                                   ctx.device)

    def save(self, path):
        path = super().save(path)
        if self.G is None:
            raise UserError(f"augmenter '{self.name}': nothing to save before fit()")
        save_checkpoint(path / "weights.pt", {"G": self.G.state_dict(), "D": self.D.state_dict(),
                                              "arch": json.dumps(self.arch),
                                              "snapshot": json.dumps(getattr(self, "snapshot", None))}, kind=self.name)
        return path

    @classmethod
    def load(cls, path):
        aug = super().load(path)
        state = load_checkpoint(Path(path) / "weights.pt", kind=cls.name)
        aug.arch = json.loads(state["arch"])
        aug.snapshot = json.loads(state.get("snapshot", "null"))
        aug.G, aug.D = aug.build(aug.arch)
        try:
            aug.G.load_state_dict(state["G"])
            aug.D.load_state_dict(state["D"])
        except RuntimeError as exc:
            raise DataError(f"{path}: weights do not fit the saved architecture ({exc})") from None
        return aug


class VanillaGAN(_GANAugmenter):
    """The thesis's unconditional DCGAN (sections 4.3-4.4): the pretrained base of acgan and of the
    latent augmenters. It cannot choose a class."""

    name = "vanilla"
    Params = GANParams
    conditional = False
    summary = "unconditional DCGAN of the thesis (base of acgan); cannot make images of a chosen class"

    @staticmethod
    def build(arch):
        G = Generator(arch["size"], arch["latent_dim"], arch["g_channels"], arch["upsample"])
        D = Discriminator(arch["size"], arch["d_channels"], arch["dropout"], arch["spectral_norm"])
        return G, D

    def networks(self, train, ctx, p):
        arch = {k: p[k] for k in _SHARED_ARCH} | {"size": train.image_size[0]}
        return arch, *self.build(arch)


@dataclass(frozen=True)
class ACGANParams(GANParams):
    base: str | None = field(default=None, metadata={
        "help": "folder of a saved vanilla GAN (in a recipe: a vanilla step's id); unset: train one first",
        AUGMENTER_REF: ("vanilla",)})
    mode: Literal["thesis", "full"] = field(
        default="thesis", metadata={"help": "thesis: frozen pretrained G/D + trainable FC heads; full: end to end"})
    base_steps: int | None = field(default=None, metadata={
        "min": 1, "help": "updates of the vanilla base when it is trained first (unset: the preset's epochs)"})
    hidden: int = field(default=100, metadata={"min": 1, "help": "units of each FC layer of the heads (thesis 100)"})
    aux_weight: float = field(default=1.0, metadata={"min": 0})

    def resolved(self) -> dict:
        """Thesis section 4.5 trains the heads with lr 2e-4, batch 32, for one epoch."""
        out = dict(PRESETS[self.preset])
        out.update({"lr_g": 2e-4, "lr_d": 2e-4, "batch_size": 32, "epochs": 1.0} if self.preset == "thesis"
                   else {"epochs": 5.0})
        out.update({k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        return out


class ACGAN(_GANAugmenter):
    """The thesis's AC-GAN (section 4.5): class-conditional images from a pretrained vanilla GAN."""

    name = "acgan"
    Params = ACGANParams
    summary = "AC-GAN of the thesis: frozen pretrained DCGAN plus trainable FC heads (or mode = full)"

    @staticmethod
    def build(arch):
        k = arch["num_classes"]
        if arch["mode"] == "full":
            G = Generator(arch["size"], arch["latent_dim"], arch["g_channels"], arch["upsample"], num_classes=k)
            D = Discriminator(arch["size"], arch["d_channels"], arch["dropout"], arch["spectral_norm"],
                              num_classes=k, head="aux")
            return G, D
        base_g, base_d = VanillaGAN.build(arch["base"])
        G = LabelledGenerator(base_g, k, arch["hidden"])
        D = LabelledDiscriminator(base_d, k, arch["hidden"])
        freeze_for_thesis_acgan(G, D)
        return G, D

    def networks(self, train, ctx, p):
        k = train.num_classes
        if self.params.mode == "full":
            arch = {key: p[key] for key in (*_SHARED_ARCH, "hidden")}
            arch |= {"size": train.image_size[0], "num_classes": k, "mode": "full"}
            return arch, *self.build(arch)
        base = self._base(train, ctx)
        if base.arch["size"] != train.image_size[0]:
            raise DataError(f"acgan: the vanilla base makes {base.arch['size']}px images, the data is "
                            f"{train.image_size[0]}px")
        arch = {"base": base.arch, "num_classes": k, "mode": "thesis", "hidden": p["hidden"],
                "size": base.arch["size"], "latent_dim": base.arch["latent_dim"]}
        G, D = LabelledGenerator(base.G, k, p["hidden"]), LabelledDiscriminator(base.D, k, p["hidden"])
        freeze_for_thesis_acgan(G, D)
        return arch, G, D

    def train_options(self, p):
        return {"aux_weight": p["aux_weight"]}

    def _base(self, train: ImageDataset, ctx: Context) -> VanillaGAN:
        if self.params.base is not None:
            return VanillaGAN.load(self.params.base)
        # the base shares acgan's architecture and loss settings; its schedule is the preset's own
        shared = ("g_channels", "d_channels", "upsample", "dropout", "spectral_norm", "latent_dim", "loss",
                  "diffaugment", "ema_decay", "betas", "checkpoint_every", "sample_every")
        params = {k: getattr(self.params, k) for k in shared if getattr(self.params, k) is not None}
        if self.params.base_steps is not None:
            params["steps"] = self.params.base_steps
        vanilla = VanillaGAN({"preset": self.params.preset, **params})
        vanilla.fit(train, ctx.child(0))
        return vanilla



@dataclass(frozen=True)
class CGANParams(GANParams):
    """cgan's own defaults lie over the preset's (unlike GANParams, whose unset fields come from it)."""

    loss: Literal["bce", "hinge", "wgan-gp"] | None = "hinge"
    spectral_norm: bool | None = True
    upsample: Literal["transpose", "resize"] | None = "resize"
    ema_decay: float | None = field(default=0.999, metadata={"min": 0, "max": 1})
    diffaugment: str | None = "color,translation,cutout"
    # measured on PBC at 32 px: at 10% and at full data, ADA's images cost the classifier less than those of
    # DiffAugment on every image, and reached a lower FD sooner (docs/results.md)
    ada_target: float = field(default=0.6, metadata=_ADA_TARGET)
    dropout: float | None = field(default=0.0, metadata={"min": 0, "max": 0.9})
    balanced_classes: bool = field(default=True, metadata={"help": "class-balanced real batches (rare classes)"})
    head: Literal["projection", "projection+aux", "projection+d2d", "d2d"] = field(default="projection", metadata={
        "help": "D's class conditioning: projection; projection+aux, a classifier head too, whose loss rewards G "
                "for images of the class asked for; projection+d2d, ReACGAN's data-to-data cross-entropy instead "
                "of the classifier's; d2d, that alone (ReACGAN's D)"})
    aux_weight: float = field(default=1.0, metadata={"min": 0, "help": "weight of the class head's loss"})
    aux_on_fakes: bool = field(default=False, metadata={
        "help": "the class head also learns from the fakes (AC-GAN); false: real images only (ReACGAN)"})
    skip_excitation: bool = field(default=False, metadata={
        "help": "FastGAN's skip-layer excitation in G: each map gates the channels of the map 4x finer (32 px and up)"})
    recon_weight: float = field(default=0.0, metadata={
        "min": 0, "help": "FastGAN's self-supervised D: a decoder rebuilds each real image from D's 8x8 map, L1 loss "
                          "of this weight; 0 = off"})


class CGAN(_GANAugmenter):
    """Beyond the thesis: a class-conditional GAN built not to collapse on small, imbalanced classes.

    Conditional BatchNorm in G, a projection discriminator with spectral norm, hinge loss, EMA
    generator, adaptive DiffAugment (ADA), and class-balanced real batches.
    """

    name = "cgan"
    Params = CGANParams
    summary = "class-conditional GAN (projection D, spectral norm, hinge, EMA, ADA, balanced batches)"

    @staticmethod
    def build(arch):
        k = arch["num_classes"]
        # (records saved before a choice existed lack its key: the behaviour that came before)
        G = Generator(arch["size"], arch["latent_dim"], arch["g_channels"], arch["upsample"], num_classes=k,
                      skip_excitation=arch.get("skip_excitation", False))
        D = Discriminator(arch["size"], arch["d_channels"], arch["dropout"], arch["spectral_norm"], num_classes=k,
                          head=arch.get("head", "projection"), decoder=arch.get("decoder", False),
                          **({"embed_dim": arch["embed_dim"]} if "embed_dim" in arch else {}))
        return G, D

    def networks(self, train, ctx, p):
        size = train.image_size[0]
        if p["skip_excitation"] and size < 32:
            raise DataError(f"cgan: skip_excitation needs images of 32 px or more, the data is {size} px")
        arch = {key: p[key] for key in _SHARED_ARCH} | {"size": size, "num_classes": train.num_classes}
        # a choice at its default leaves the record as it was, so earlier runs' cache keys hold
        if p["head"] != "projection":
            arch["head"] = p["head"]
        if "d2d" in p["head"]:
            arch["embed_dim"] = D2D_EMBED_DIM  # recorded, so that load() rebuilds the width it was built with
        if p["skip_excitation"]:
            arch["skip_excitation"] = True
        if p["recon_weight"] > 0:
            arch["decoder"] = True
        return arch, *self.build(arch)

    def train_options(self, p):
        return {"balanced_classes": p["balanced_classes"], "aux_weight": p["aux_weight"],
                "aux_on_fakes": p["aux_on_fakes"], "recon_weight": p["recon_weight"],
                "class_loss": "d2d" if "d2d" in p["head"] else "ce"}

