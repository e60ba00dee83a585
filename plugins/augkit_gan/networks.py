"""GAN networks: the thesis's DCGAN generator and discriminator, and the heads that condition them.

Depth follows the image size (4x4 -> size by stride-2 steps), so one definition serves 32-256 px.
Discriminators return raw logits (the sigmoid lives in the loss), plus class logits when they carry an
auxiliary classifier, and can add a projection term for class-conditional training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

SIZES = (16, 32, 64, 128, 256)


def steps_for(size: int) -> int:
    """Stride-2 steps between 4x4 and ``size``."""
    if size not in SIZES:
        raise ValueError(f"image size must be one of {SIZES}, got {size}")
    return int(math.log2(size)) - 2


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, whose masks are cheap to draw on a CPU.

    On this project's CPUs ``nn.Dropout`` spends about 10 ns per element in ``bernoulli_``: in the thesis's
    discriminator (dropout after every convolution) that was a third of a training step. Here one 64-bit
    random word gives the keep/drop decisions of four elements (16 random bits each), drawn from torch's
    global generator, so runs stay reproducible under a seed and resumable. The drop probability is
    rounded to a multiple of 2^-16 (0.3 becomes 0.300003) and kept elements are scaled by the inverse of
    the rounded keep probability, so the expected output still equals the input. On CUDA, where
    ``F.dropout`` is one fused kernel, that is used instead.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self._drop_count = round(p * 65536)  # of the 65,536 values of 16 random bits, this many drop
        if not 0.0 <= p < 1.0 or self._drop_count == 65536:
            raise ValueError(f"dropout probability must be in [0, 1 - 2^-16], got {p}")
        self.p = p
        self._scale = 65536 / (65536 - self._drop_count)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
        bits = words.view(torch.int16)[:n]
        # decisions in x's physical order, so the elementwise product runs over contiguous memory
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            b, c, h, w = x.shape
            bits = bits.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            bits = bits.view(x.shape)
        keep = (bits >= self._drop_count - 32768).to(x.dtype).mul_(self._scale)
        return x * keep  # autograd keeps only the mask (it needs no gradient) and multiplies by it again


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are chosen by the class label (de Vries et al. 2017)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class UpBlock(nn.Module):
    """x2 upsampling by a 5x5 transposed convolution (the thesis) or by resize + 5x5 convolution, which
    has no uneven kernel overlap and so no checkerboard texture."""

    def __init__(self, cin: int, cout: int, upsample: str, num_classes: int = 0, last: bool = False):
        super().__init__()
        if upsample == "transpose":
            self.conv = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1, bias=last)
        elif upsample == "resize":
            self.conv = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                      nn.Conv2d(cin, cout, 5, padding=2, bias=last))
        else:
            raise ValueError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")
        self.last = last
        if not last:
            self.norm = ConditionalBatchNorm(cout, num_classes) if num_classes else nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(x)
        if self.last:
            return torch.tanh(x)
        x = self.norm(x, y) if isinstance(self.norm, ConditionalBatchNorm) else self.norm(x)
        return F.leaky_relu(x, 0.2)


class SkipExcitation(nn.Module):
    """Skip-layer excitation (FastGAN, Liu et al. 2021): a coarse map, pooled to 4x4, sets a gate in
    (0, 1) per channel of a map four times finer. Gradients reach the coarse layers by a short path,
    and the coarse content (the cell's layout) modulates the fine texture channels, which is what lets
    FastGAN train on a few hundred images."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(cin, cout, 4), nn.SiLU(),
                                  nn.Conv2d(cout, cout, 1), nn.Sigmoid())

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return fine * self.gate(coarse)


class Generator(nn.Module):
    """DCGAN generator: dense -> (C, 4, 4) -> stride-2 5x5 blocks with BN + leaky ReLU -> tanh RGB.

    ``channels`` is the width at 4x4 (the thesis: 1024), halved at every step. ``num_classes`` > 0 makes
    it class-conditional through conditional BatchNorm (cgan); 0 keeps the thesis's unconditional G.
    ``skip_excitation``: the map at resolution r gates the channels of the map at 4r (FastGAN's skip-layer
    excitation; FastGAN gates maps 16x finer, 8 -> 128 px, which these small images do not have, so
    here 4 -> 16, 8 -> 32, ...), for every block input of 16 px and more; at 16 px there is none, so it
    needs 32 px or more. The gates' sources are the maps before their own gating, as in FastGAN.
    """

    def __init__(self, size: int = 64, latent_dim: int = 100, channels: int = 1024, upsample: str = "transpose",
                 num_classes: int = 0, min_channels: int = 16, skip_excitation: bool = False):
        super().__init__()
        n = steps_for(size)
        widths = [max(channels >> i, min_channels) for i in range(n)] + [3]
        self.size, self.latent_dim, self.num_classes = size, latent_dim, num_classes
        self.dense = nn.Linear(latent_dim, widths[0] * 16, bias=False)
        self.norm0 = ConditionalBatchNorm(widths[0], num_classes) if num_classes else nn.BatchNorm2d(widths[0])
        self.blocks = nn.ModuleList(UpBlock(widths[i], widths[i + 1], upsample, num_classes, last=(i == n - 1))
                                    for i in range(n))
        # block i's input is the map at 4 * 2**i px; the one two blocks earlier is 4x coarser
        if skip_excitation and n < 3:
            raise ValueError(f"skip-layer excitation needs images of 32 px or more, got {size}")
        self.excite = nn.ModuleDict({str(i): SkipExcitation(widths[i - 2], widths[i]) for i in range(2, n)}
                                    if skip_excitation else {})

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            raise ValueError("this generator is class-conditional: pass labels")
        x = self.dense(z).view(z.shape[0], -1, 4, 4)
        x = self.norm0(x, y) if isinstance(self.norm0, ConditionalBatchNorm) else self.norm0(x)
        x = F.leaky_relu(x, 0.2)
        inputs = []  # each block's input before its gating: the excitations' sources
        for i, block in enumerate(self.blocks):
            inputs.append(x)
            if str(i) in self.excite:
                x = self.excite[str(i)](x, inputs[i - 2])
            x = block(x, y)
        return x


HEADS = ("none", "aux", "projection", "projection+aux", "d2d", "projection+d2d")
#: the d2d head's embedding width (a saved cgan records the width it was built with)
D2D_EMBED_DIM = 256


class Discriminator(nn.Module):
    """DCGAN discriminator: stride-2 5x5 convolutions with leaky ReLU and dropout down to 4x4.

    ``head``: "none" (realness only), "aux" (plus a linear class classifier: AC-GAN, full mode),
    "projection" (class-conditional realness, Miyato & Koyama 2018: cgan) or "projection+aux" (both:
    the projection judges realness per class, the classifier tells G whether its image shows the class
    asked for). "d2d" (ReACGAN, Kang et al. 2021): instead of class logits, a unit-length embedding
    and the similarity to the proxy of the image's class, for the data-to-data cross-entropy
    (:class:`augkit.train.losses.DataToDataCE`); "projection+d2d": that beside the projection.
    """

    def __init__(self, size: int = 64, channels: int = 64, dropout: float = 0.3, spectral_norm: bool = False,
                 num_classes: int = 0, head: str = "none", max_channels: int = 1024, decoder: bool = False,
                 embed_dim: int = D2D_EMBED_DIM):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if head != "none" and num_classes < 2:
            raise ValueError(f"a '{head}' head needs num_classes >= 2")
        n = steps_for(size)
        sn = _sn if spectral_norm else (lambda m: m)
        widths = [3] + [min(channels << i, max_channels) for i in range(n)]
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [sn(nn.Conv2d(widths[i], widths[i + 1], 5, stride=2, padding=2)), nn.LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(Dropout(dropout))
        self.convs = nn.Sequential(*layers)
        self.feature_dim = widths[-1] * 16
        self.realness = sn(nn.Linear(self.feature_dim, 1))
        self.head = head
        self.aux = nn.Linear(self.feature_dim, num_classes) if "aux" in head else None
        self.embed = sn(nn.Embedding(num_classes, self.feature_dim)) if "projection" in head else None
        self.d2d = None
        if "d2d" in head:
            self.d2d = nn.ModuleDict({"embed": sn(nn.Linear(self.feature_dim, embed_dim)),
                                      "proxy": sn(nn.Embedding(num_classes, embed_dim))})
        # the convolutions up to the 8x8 map (each conv halves the size), where the decoder reads
        self.to_8x8 = (len(layers) // n) * (n - 1)
        self.decoder = Decoder(widths[n - 1], size) if decoder else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features of the last convolution: input of every head (and of the acgan MLP)."""
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, reconstruct: int = 0):
        """(realness logits, class logits or None); with ``reconstruct`` = k > 0 (a D with a decoder),
        also the decoder's images of the first k inputs, from the same pass."""
        if reconstruct:
            if self.decoder is None:
                raise ValueError("this discriminator has no decoder to reconstruct with")
            m = self.convs[: self.to_8x8](x)
            h = self.convs[self.to_8x8:](m).flatten(1)
        else:
            h = self.features(x)
        logit = self.realness(h).squeeze(1)
        if (self.embed is not None or self.d2d is not None) and y is None:
            raise ValueError(f"a '{self.head}' discriminator needs labels")
        if self.embed is not None:
            logit = logit + (self.embed(y) * h).sum(1)
        aux = self.aux(h) if self.aux is not None else None
        if self.d2d is not None:
            aux = self._d2d(h, y)
        if reconstruct:
            return logit, aux, self.decoder(m[:reconstruct])
        return logit, aux

    def _d2d(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(batch, 1 + embed_dim): column 0 the cosine between each image's embedding and its class's
        proxy, the rest the unit embedding. One tensor, computed in the forward pass, so the term that
        uses it sees the proxies' gradients through DDP and is sliced into real and fake like logits."""
        e = F.normalize(self.d2d["embed"](h).float(), dim=1)
        proxy = F.normalize(self.d2d["proxy"](y).float(), dim=1)
        return torch.cat([(e * proxy).sum(1, keepdim=True), e], 1)


class Decoder(nn.Module):
    """The self-supervised discriminator's decoder (FastGAN): D's 8x8 map back to the whole image.
    Training D to reconstruct real images makes its features describe the cell, not only what tells
    the few real images from fakes, which is how a D overfits a small dataset."""

    def __init__(self, cin: int, size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for _ in range(steps_for(size) - 1):  # 8 -> size
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, width, 3, padding=1),
                       nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            c = width
        layers += [nn.Conv2d(c, 3, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.net(m)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Fully connected layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class LabelledGenerator(nn.Module):
    """The thesis's AC-GAN generator (section 4.5): three trainable 100-unit FC layers map (z, one-hot
    label) to the input of a frozen, pretrained unconditional generator."""

    def __init__(self, base: Generator, num_classes: int, hidden: int = 100):
        super().__init__()
        self.base, self.num_classes, self.latent_dim = base, num_classes, base.latent_dim
        self.size = base.size
        self.head = mlp([base.latent_dim + num_classes, hidden, hidden, base.latent_dim])
        self.frozen = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # frozen BatchNorm keeps its pretrained statistics
            self.base.eval()
        return self

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        return self.base(self.head(torch.cat([z, onehot], 1)))


class LabelledDiscriminator(nn.Module):
    """The thesis's AC-GAN discriminator: a frozen pretrained D whose realness layer keeps training, and
    three trainable 100-unit FC layers from its last convolutional features to a softmax classifier."""

    def __init__(self, base: Discriminator, num_classes: int, hidden: int = 100):
        super().__init__()
        self.base = base
        self.classifier = mlp([base.feature_dim, hidden, hidden, num_classes])
        self.frozen = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # frozen features are deterministic: no dropout in the pretrained convolutions
            self.base.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = self.base.features(x)
        return self.base.realness(h).squeeze(1), self.classifier(h)


def freeze_for_thesis_acgan(g: LabelledGenerator, d: LabelledDiscriminator) -> None:
    """Freeze everything pretrained except D's realness layer (thesis 4.5)."""
    g.frozen = d.frozen = True
    for p in g.base.parameters():
        p.requires_grad_(False)
    for p in d.base.parameters():
        p.requires_grad_(False)
    for p in d.base.realness.parameters():
        p.requires_grad_(True)
    g.train(g.training)
    d.train(d.training)


class Encoder(nn.Module):
    """Image -> latent (thesis section 4.6): shaped like the discriminator (stride-2 5x5 convolutions with
    leaky ReLU down to 4x4), with BatchNorm for faster regression and a linear latent-sized output."""

    def __init__(self, size: int = 64, latent_dim: int = 100, channels: int = 32, max_channels: int = 512):
        super().__init__()
        n = steps_for(size)
        widths = [3] + [min(channels << i, max_channels) for i in range(n)]
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 5, stride=2, padding=2, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(widths[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
        self.convs = nn.Sequential(*layers)
        self.size, self.latent_dim, self.channels = size, latent_dim, channels
        self.out = nn.Linear(widths[-1] * 16, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(x).flatten(1))
