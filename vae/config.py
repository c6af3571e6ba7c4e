"""Model and training configuration of the VAE as dataclasses, plus named presets.

``ModelConfig`` fixes the architecture (image size, channel lists, kernels, strides,
latent size); ``TrainConfig`` fixes one training run (loss, optimiser, data,
curriculum). Both round-trip through plain dicts (``to_dict`` / ``from_dict``), which
is how they are stored in ``RUN_DIR/config.json`` and inside every checkpoint.

Presets (``PRESETS``):

``paper``
    The paper's network (Wever & Runia, *Subitizing with Variational
    Autoencoders*, section 4.2): 161x161 RGB,
    encoder 64@4x4-1 -> 64@4x4-2 -> 128@4x4-2 -> 768@4x4-2 with padding 1
    (161 -> 160 -> 80 -> 40 -> 20), latent 180, decoder linear z -> 768x11x11 then
    transposed 3x3 convs 768-1 -> 768-2 -> 256-2 -> 64-2 and a last 3-channel
    stride-2 layer (11 -> 11 -> 21 -> 41 -> 81 -> 161).
``paper5``
    The authors' code: one more encoder stage (... 128 -> 256 -> 768; 20 -> 10),
    same decoder.
``tiny``
    64x64, narrow channels, latent 32: trains in minutes on a CPU (demos, tests).
``sz``
    48x48 (Stoianov & Zorzi-style binary images at their native size), the tiny
    widths, latent 32, and ``enc_pool="mean"``: the encoder averages its last feature
    map over positions, so the code cannot say where the objects are, only what and
    how much. A departure from the paper, made for the binary demo (see the demo's
    ``sz`` recipe and benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from synthcount.config import _check  # the project's one 'name must be rule, got value' check

__all__ = ["ModelConfig", "TrainConfig", "PRESETS", "model_preset", "RECONS", "PIXEL_LOSSES", "REDUCTIONS"]

RECONS = ("perceptual", "pixel", "both")
PIXEL_LOSSES = ("bce", "mse")
# How loss terms are reduced (see vae.losses): "batch-mean" sums over the elements
# of one image and averages over the batch; "sum" sums over both (the authors');
# "mean" averages over every element (Hou et al.'s per-layer MSE; changes the
# KL : rec balance, so beta must be retuned).
REDUCTIONS = ("batch-mean", "sum", "mean")
SCHEDULES = ("linear", "step")
DEVICES = ("auto", "cpu", "cuda")


def _per_layer(name: str, value: Any, n: int) -> Tuple[int, ...]:
    """An int (same for every layer) or one int per layer -> tuple of n ints."""
    if isinstance(value, (list, tuple)):
        out = tuple(int(v) for v in value)
        _check(len(out) == n, name, f"an integer or a list of {n} (one per layer)", value)
    else:
        out = (int(value),) * n
    _check(all(v >= 0 for v in out), name, "non-negative", value)
    return out


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a Conv2d along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def tconv_in(target: int, kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    """Input length and output_padding of a ConvTranspose2d that yields exactly ``target``.

    A transposed conv maps ``n -> (n - 1) * stride - 2 * padding + kernel + op`` with
    ``0 <= op < stride``; the unique ``n`` and ``op`` reaching ``target`` are
    ``n = floor((target + 2p - k) / s) + 1`` and ``op = (target + 2p - k) mod s``.
    This is how the decoder hits the input size exactly without any crop or resize.
    """
    span = target + 2 * padding - kernel
    if span < 0:
        return 0, 0
    return span // stride + 1, span % stride


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the convolutional VAE (see ``vae.model.VAE``).

    Attributes
    ----------
    image_size : (int, int)
        Input (height, width); the output has exactly this size.
    enc_channels : tuple of int
        Output channels of each encoder conv.
    enc_kernel, enc_strides, enc_padding : int or tuple of int
        Kernel, stride, padding per encoder conv (an int applies to every layer).
    dec_in_channels : int
        Channels of the feature map the linear layer makes from z.
    dec_channels : tuple of int
        Output channels of each transposed conv before the last (3-channel) layer.
    dec_kernel, dec_strides, dec_padding : int or tuple of int
        Kernel, stride, padding per transposed conv (before the last layer).
    out_kernel, out_stride, out_padding : int
        The last transposed conv to 3 channels (followed by a sigmoid).
    latent_dim : int
        Size of z.
    leaky_slope : float
        Negative slope of every LeakyReLU.
    sigma_eps : float
        Added to softplus(.) so that sigma > 0; sigma is the standard deviation.
    enc_pool : {"flatten", "mean"}
        How the last encoder feature map reaches the mu/sigma heads: ``flatten`` (the
        paper: every position its own weights, so the code can say *where* things
        are) or ``mean`` (global average over positions: a translation-invariant
        code of *what* and *how much*; the ``sz`` preset, see its note).
    """

    image_size: Tuple[int, int] = (161, 161)
    enc_channels: Tuple[int, ...] = (64, 64, 128, 768)       # paper: 64@4x4-1 -> 64@4x4-2 -> 128@4x4-2 -> 768@4x4-2
    enc_kernel: Any = 4
    enc_strides: Any = (1, 2, 2, 2)
    enc_padding: Any = 1                                      # authors' code: 161 -> 160 -> 80 -> 40 -> 20
    dec_in_channels: int = 768                                # linear z -> 768 x s x s (s = 11 for 161)
    dec_channels: Tuple[int, ...] = (768, 768, 256, 64)       # paper: 768@3x3-1 -> 768@3x3-2 -> 256@3x3-2 -> 64@3x3-2
    dec_kernel: Any = 3
    dec_strides: Any = (1, 2, 2, 2)
    dec_padding: Any = 1
    out_kernel: int = 3                                       # last layer to RGB, stride 2: 81 -> 161
    out_stride: int = 2
    out_padding: int = 1
    latent_dim: int = 180                                     # paper: 180 (thesis: 182)
    leaky_slope: float = 0.01                                 # authors' LeakyReLU slope
    sigma_eps: float = 1e-6
    enc_pool: str = "flatten"                                 # paper: flatten (the `sz` preset: mean)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        _check(isinstance(size, (tuple, list)) and len(size) == 2, "image_size", "(height, width)", self.image_size)
        size = tuple(int(v) for v in size)
        _check(all(8 <= v <= 4096 for v in size), "image_size", "between 8 and 4096 pixels per side", self.image_size)
        set_("image_size", size)
        enc = tuple(int(c) for c in self.enc_channels)
        _check(len(enc) >= 1 and all(c >= 1 for c in enc), "enc_channels", "a non-empty list of positive ints",
               self.enc_channels)
        set_("enc_channels", enc)
        n = len(enc)
        set_("enc_kernel", _per_layer("enc_kernel", self.enc_kernel, n))
        set_("enc_strides", _per_layer("enc_strides", self.enc_strides, n))
        set_("enc_padding", _per_layer("enc_padding", self.enc_padding, n))
        dec = tuple(int(c) for c in self.dec_channels)
        _check(all(c >= 1 for c in dec), "dec_channels", "a list of positive ints", self.dec_channels)
        set_("dec_channels", dec)
        m = len(dec)
        set_("dec_kernel", _per_layer("dec_kernel", self.dec_kernel, m))
        set_("dec_strides", _per_layer("dec_strides", self.dec_strides, m))
        set_("dec_padding", _per_layer("dec_padding", self.dec_padding, m))
        for name in ("enc_kernel", "enc_strides", "dec_kernel", "dec_strides"):
            _check(all(v >= 1 for v in getattr(self, name)), name, "positive", getattr(self, name))
        _check(int(self.dec_in_channels) >= 1, "dec_in_channels", "a positive int", self.dec_in_channels)
        _check(int(self.out_kernel) >= 1 and int(self.out_stride) >= 1 and int(self.out_padding) >= 0,
               "out_kernel/out_stride/out_padding", "positive/positive/non-negative",
               (self.out_kernel, self.out_stride, self.out_padding))
        _check(isinstance(self.latent_dim, int) and self.latent_dim >= 1, "latent_dim", "a positive int",
               self.latent_dim)
        _check(0.0 <= float(self.leaky_slope) < 1.0, "leaky_slope", "in [0, 1)", self.leaky_slope)
        _check(0.0 < float(self.sigma_eps) < 1.0, "sigma_eps", "in (0, 1)", self.sigma_eps)
        _check(self.enc_pool in ("flatten", "mean"), "enc_pool", "'flatten' or 'mean'", self.enc_pool)
        # Fail here, not at the first forward, when the sizes do not work out.
        fh, fw = self.enc_feature_size
        _check(fh >= 1 and fw >= 1, "image_size", f"large enough for the encoder (features {fh}x{fw})", self.image_size)
        plan = self.dec_plan
        _check(all(s[0] >= 1 and s[1] >= 1 for s, _ in plan), "image_size",
               f"reachable by the decoder (start sizes {[p[0] for p in plan]})", self.image_size)

    @property
    def enc_feature_size(self) -> Tuple[int, int]:
        """(h, w) of the last encoder feature map."""
        h, w = self.image_size
        for k, s, p in zip(self.enc_kernel, self.enc_strides, self.enc_padding):
            h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
        return h, w

    @property
    def dec_plan(self) -> Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...]:
        """Per decoder layer (including the last): ((in_h, in_w), (op_h, op_w)).

        Worked backwards from ``image_size`` with :func:`tconv_in`; the first entry's
        input size is the (h, w) of the map the linear layer makes from z.
        """
        layers = list(zip(self.dec_kernel, self.dec_strides, self.dec_padding))
        layers.append((int(self.out_kernel), int(self.out_stride), int(self.out_padding)))
        h, w = self.image_size
        plan = []
        for k, s, p in reversed(layers):
            ih, oph = tconv_in(h, k, s, p)
            iw, opw = tconv_in(w, k, s, p)
            plan.append(((ih, iw), (oph, opw)))
            h, w = ih, iw
        return tuple(reversed(plan))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS = {
    "paper": ModelConfig(),
    "paper5": ModelConfig(enc_channels=(64, 64, 128, 256, 768), enc_strides=(1, 2, 2, 2, 2)),  # 161 -> ... -> 10
    "tiny": ModelConfig(image_size=(64, 64), enc_channels=(32, 64, 64), enc_strides=(2, 2, 2),  # 64 -> 32 -> 16 -> 8
                        dec_in_channels=64, dec_channels=(64, 32), dec_strides=(2, 2),            # 8 -> 16 -> 32 -> 64
                        latent_dim=32),
    # Stoianov & Zorzi-style binary images at their native 48x48 (48 -> 24 -> 12 -> 6), the tiny widths, and a
    # translation-invariant encoder (mean over positions); chosen by the demo's one-factor-at-a-time search
    # (benchmarks/README.md, "Emergence: one factor at a time")
    "sz": ModelConfig(image_size=(48, 48), enc_channels=(32, 64, 64), enc_strides=(2, 2, 2),
                      dec_in_channels=64, dec_channels=(64, 32), dec_strides=(2, 2), latent_dim=32, enc_pool="mean"),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A ``ModelConfig`` from ``PRESETS`` with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


@dataclass(frozen=True)
class TrainConfig:
    """One training run (see ``vae.train.train``).

    Attributes
    ----------
    preset : str
        Model preset name (``PRESETS``).
    model_overrides : dict
        ModelConfig fields replacing the preset's (e.g. ``{"latent_dim": 16}``).
    epochs : int
        Total epochs (with resume: train up to this many).
    batch_size : int
        Images per step per process (DDP: the global batch is batch_size x world size).
    lr : float
        Adam learning rate (paper: 0.0015).
    lr_factor, lr_patience : float, int
        ReduceLROnPlateau on the test loss: lr x 0.2 after more than 4 epochs
        without improvement (paper: divided by 5, patience 4).
    recon : {"perceptual", "pixel", "both"}
        Reconstruction loss: VGG-19 feature-perceptual, pixel, or their sum.
    pixel_loss : {"bce", "mse"}
        Pixel loss used by ``pixel`` and ``both``.
    alpha, beta : float
        Total = alpha * KL + beta * rec (paper: 1.0, 0.03).
    reduction : {"batch-mean", "sum", "mean"}
        See ``REDUCTIONS``; beta = 0.03 was tuned for sums over elements.
    vgg_weights : str or None
        Path to a torchvision vgg19 state_dict (full or truncated by ``vgg-slim``),
        ``"random"`` (explicit untrained VGG), or None = torchvision's cache file.
    test_fraction : float
        Held-out share of the shard images (``vae.data.split_indices``).
    seed : int
        Seeds torch, the split, shuffling and augmentation.
    workers : int or None
        DataLoader worker processes; None = min(8, CPUs - 1).
    device : {"auto", "cpu", "cuda"}
    augment : bool
        Train-time augmentation (resize x ``aug_scale`` + random crop, hflip,
        colour shift of up to ``color_shift`` per channel).
    natural : str or None
        Natural images: SOS folder (``imgIdx.mat``) or an image folder / CSV with labels.
    warmup_epochs : int
        Synthetic-only epochs before natural images enter (paper: 20).
    natural_ramp : int
        Epochs over which the share of natural images rises to all of them.
    natural_schedule : {"linear", "step"}
    drop_fraction : float
        Share of the most frequent natural class dropped each epoch (paper: 10%).
    recon_every, checkpoint_every : int
        Reconstruction grid every k epochs; an extra ``epoch-XXX.pt`` every k epochs
        (0 = only ``last.pt``, written every epoch).
    """

    preset: str = "paper"
    model_overrides: dict = field(default_factory=dict)
    epochs: int = 140                 # paper: 140
    batch_size: int = 32              # authors' synthetic batch size
    lr: float = 0.0015                # paper
    lr_factor: float = 0.2            # paper: divided by 5 ...
    lr_patience: int = 4              # ... after more than 4 epochs of plateau
    recon: str = "perceptual"         # paper: feature-perceptual loss
    pixel_loss: str = "bce"
    alpha: float = 1.0                # paper
    beta: float = 0.03                # paper
    reduction: str = "batch-mean"
    vgg_weights: Optional[str] = None
    test_fraction: float = 0.1
    seed: int = 0
    workers: Optional[int] = None
    device: str = "auto"
    augment: bool = True
    aug_scale: float = 1.14           # resize to ~1.14x then random crop back (paper)
    color_shift: float = 0.05         # per-channel additive shift, uniform in +-this
    natural: Optional[str] = None
    warmup_epochs: int = 20           # paper: natural images after 20 epochs
    natural_ramp: int = 20
    natural_schedule: str = "linear"
    drop_fraction: float = 0.1        # paper: drop 10% of the most frequent class
    recon_every: int = 5
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        _check(self.preset in PRESETS, "preset", f"one of {sorted(PRESETS)}", self.preset)
        _check(isinstance(self.model_overrides, dict), "model_overrides", "a dict", self.model_overrides)
        self.model_config()  # validates the overrides
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "a positive integer", self.epochs)
        _check(isinstance(self.batch_size, int) and self.batch_size >= 2, "batch_size", "an integer >= 2 (BatchNorm)",
               self.batch_size)
        _check(math.isfinite(self.lr) and self.lr > 0, "lr", "a positive number", self.lr)
        _check(0 < self.lr_factor < 1, "lr_factor", "in (0, 1)", self.lr_factor)
        _check(isinstance(self.lr_patience, int) and self.lr_patience >= 0, "lr_patience", "a non-negative integer",
               self.lr_patience)
        _check(self.recon in RECONS, "recon", f"one of {RECONS}", self.recon)
        _check(self.pixel_loss in PIXEL_LOSSES, "pixel_loss", f"one of {PIXEL_LOSSES}", self.pixel_loss)
        _check(math.isfinite(self.alpha) and self.alpha >= 0, "alpha", "a non-negative number", self.alpha)
        _check(math.isfinite(self.beta) and self.beta >= 0, "beta", "a non-negative number", self.beta)
        _check(self.reduction in REDUCTIONS, "reduction", f"one of {REDUCTIONS}", self.reduction)
        _check(0.0 < self.test_fraction < 1.0, "test_fraction", "in (0, 1)", self.test_fraction)
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**63, "seed", "an integer in [0, 2**63)", self.seed)
        _check(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0), "workers",
               "None or a non-negative integer", self.workers)
        _check(self.device in DEVICES, "device", f"one of {DEVICES}", self.device)
        _check(1.0 <= self.aug_scale <= 2.0, "aug_scale", "in [1, 2]", self.aug_scale)
        _check(0.0 <= self.color_shift <= 0.5, "color_shift", "in [0, 0.5]", self.color_shift)
        _check(isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0, "warmup_epochs",
               "a non-negative integer", self.warmup_epochs)
        _check(isinstance(self.natural_ramp, int) and self.natural_ramp >= 1, "natural_ramp", "a positive integer",
               self.natural_ramp)
        _check(self.natural_schedule in SCHEDULES, "natural_schedule", f"one of {SCHEDULES}", self.natural_schedule)
        _check(0.0 <= self.drop_fraction < 1.0, "drop_fraction", "in [0, 1)", self.drop_fraction)
        _check(isinstance(self.recon_every, int) and self.recon_every >= 0, "recon_every", "a non-negative integer",
               self.recon_every)
        _check(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0, "checkpoint_every",
               "a non-negative integer", self.checkpoint_every)

    def model_config(self) -> ModelConfig:
        """The ModelConfig this run trains (preset + overrides)."""
        return model_preset(self.preset, **self.model_overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
