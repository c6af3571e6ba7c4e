"""VGG-19 feature extractor for the feature-perceptual loss, from local weights only.

The loss of Hou et al. (DFC-VAE) compares VGG-19 activations at relu1_1, relu2_1
and relu3_1, i.e. torchvision ``vgg19().features`` indices 1, 6 and 11. Only the
first 12 modules of ``features`` are built (no classifier), with
``torchvision.models.vgg.make_layers`` - the very function ``vgg19()`` uses - so the
layers are torchvision's.

Weights never download. :func:`resolve_vgg_weights` looks for, in order: the path
given, then torchvision's standard cache file
(``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``); when neither exists it
raises :class:`VGGWeightsMissing` with instructions. ``"random"`` (an untrained VGG)
is used only when asked for explicitly. :func:`slim_vgg_state_dict` cuts a full
state_dict down to the ~2 MB these layers need (``synthcount vae vgg-slim``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from synthcount._io import atomic_write, sha256_file  # the project's one home for file helpers

__all__ = [
    "LAYER_INDICES",
    "LAYER_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGGWeights",
    "VGGWeightsMissing",
    "VGGFeatures",
    "default_cache_path",
    "resolve_vgg_weights",
    "load_vgg_state_dict",
    "slim_vgg_state_dict",
    "sha256_file",
]

LAYER_INDICES = (1, 6, 11)                       # torchvision vgg19().features
LAYER_NAMES = ("relu1_1", "relu2_1", "relu3_1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_FILE = "vgg19-dcbb9e9d.pth"                # torchvision's IMAGENET1K_V1 file name

HOW_TO = (
    "the perceptual loss needs ImageNet VGG-19 weights and none were found (nothing is downloaded). "
    "Provide them with --vgg-weights PATH (a torchvision vgg19 state_dict such as vgg19-dcbb9e9d.pth, "
    "or the few-MB file made by `synthcount vae vgg-slim FULL.pth OUT.pth`), or put vgg19-dcbb9e9d.pth at "
    "{cache}; or use --recon pixel; or --vgg-weights random for an untrained VGG (not the paper's loss)."
)


class VGGWeightsMissing(ValueError):
    """The perceptual loss was asked for and no VGG-19 weights were found."""


@dataclass(frozen=True)
class VGGWeights:
    """Where the VGG weights come from: ``source`` is "path", "cache" or "random"."""

    source: str
    path: Optional[str] = None
    sha256: Optional[str] = None

    def to_dict(self) -> dict:
        return {"source": self.source, "path": self.path, "sha256": self.sha256}


def default_cache_path() -> str:
    """torchvision's standard cache location of the ImageNet VGG-19 weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", CACHE_FILE)


def resolve_vgg_weights(spec: Optional[str]) -> VGGWeights:
    """Decide which VGG weights to use, before any training starts.

    Parameters
    ----------
    spec : str or None
        A file path, ``"random"``, or None (torchvision's cache file if present).

    Raises
    ------
    VGGWeightsMissing
        No file at ``spec`` / no cache file; the message says how to provide one.
    """
    if spec == "random":
        return VGGWeights("random")
    if spec is not None:
        if not os.path.isfile(spec):
            raise VGGWeightsMissing(f"--vgg-weights: no file at {spec!r}; " + HOW_TO.format(cache=default_cache_path()))
        return VGGWeights("path", os.path.abspath(spec), sha256_file(spec))
    cache = default_cache_path()
    if os.path.isfile(cache):
        return VGGWeights("cache", cache, sha256_file(cache))
    raise VGGWeightsMissing(HOW_TO.format(cache=cache))


def _build_layers() -> nn.Sequential:
    """torchvision vgg19().features[:12], ReLUs made out-of-place (outputs are kept)."""
    from torchvision.models.vgg import cfgs, make_layers

    feats = make_layers(cfgs["E"], batch_norm=False)[: max(LAYER_INDICES) + 1]
    for i, m in enumerate(feats):
        if isinstance(m, nn.ReLU):
            feats[i] = nn.ReLU(inplace=False)
    return feats


def _needed_keys() -> List[str]:
    return [f"features.{i}.{p}" for i, m in enumerate(_build_layers()) if isinstance(m, nn.Conv2d)
            for p in ("weight", "bias")]


def load_vgg_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a vgg19 state_dict (full or truncated) safely and keep the needed layers.

    Accepts keys ``features.N.weight`` (torchvision) or ``N.weight`` (a saved
    ``features`` module). Loads with ``weights_only=True``: a file cannot run code.
    """
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unreadable or unsafe file is bad input, named
        raise ValueError(f"VGG weights {path!r} could not be read as a state_dict: {e}".splitlines()[0]) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"VGG weights {path!r} must hold a state_dict (dict of tensors), got {type(sd).__name__}")
    if not any(k.startswith("features.") for k in sd):
        sd = {f"features.{k}": v for k, v in sd.items()}
    needed = _needed_keys()
    missing = [k for k in needed if k not in sd]
    if missing:
        more = "..." if len(missing) > 4 else ""
        raise ValueError(f"VGG weights {path!r} lack {missing[:4]}{more}: not a vgg19 state_dict")
    return {k: sd[k] for k in needed}


def slim_vgg_state_dict(src: str, dst: str) -> dict:
    """Write the layers the perceptual loss needs from a full vgg19 state_dict.

    Returns a dict with ``keys``, ``bytes`` and the ``sha256`` of both files.
    """
    sd = load_vgg_state_dict(src)
    # Fresh contiguous tensors so torch.save does not drag the full storage along.
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    # Check the result loads into the layers before writing it.
    VGGFeatures(sd)
    with atomic_write(dst, "wb") as f:
        torch.save(sd, f)
    return {"keys": len(sd), "bytes": os.path.getsize(dst), "sha256_in": sha256_file(src),
            "sha256_out": sha256_file(dst)}


class VGGFeatures(nn.Module):
    """Frozen VGG-19 activations at relu1_1, relu2_1, relu3_1.

    Parameters
    ----------
    state_dict : dict or None
        From :func:`load_vgg_state_dict`; None keeps torchvision's random init
        (only for ``--vgg-weights random``).

    ``forward(x)`` takes x float (B, 3, H, W) in [0, 1], normalises it with the
    ImageNet mean/std and returns the three feature maps as a list. The module stays
    in eval mode and its parameters never require grad (``train()`` is a no-op).
    """

    def __init__(self, state_dict: Optional[Dict[str, torch.Tensor]] = None,
                 layers: Sequence[int] = LAYER_INDICES):
        super().__init__()
        self.features = _build_layers()
        if state_dict is not None:
            self.load_state_dict(state_dict, strict=True)
        self.layers = tuple(int(i) for i in layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        # Always eval: the loss network is fixed (no dropout/BN here, but be explicit).
        return super().train(False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        last = max(self.layers)
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self.layers:
                out.append(h)
            if i == last:
                break
        return out


def build_vgg(weights: VGGWeights) -> VGGFeatures:
    """A VGGFeatures from resolved weights (see :func:`resolve_vgg_weights`)."""
    if weights.source == "random":
        vgg = VGGFeatures(None)
        # torchvision's VGG.__init__ initialisation (make_layers alone keeps the default).
        for m in vgg.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return vgg
    return VGGFeatures(load_vgg_state_dict(weights.path))
