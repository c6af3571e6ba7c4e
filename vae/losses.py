"""VAE objective: alpha * KL + beta * reconstruction (paper section 3.2).

Reconstruction is the feature-perceptual loss of Hou et al. (MSE between VGG-19
relu1_1 / relu2_1 / relu3_1 activations of input and reconstruction, summed over
the layers), a pixel loss (BCE or MSE), or both summed.

Reduction (``reduction``), which fixes what beta means:

``"batch-mean"`` (default)
    sum over the elements of each image (latent units; pixels; feature-map
    entries of each layer), mean over the batch: a loss per image. Same KL : rec
    balance as the authors, so beta = 0.03 keeps its meaning.
``"sum"``
    sum over elements and batch: the authors' code. Equals batch-mean x B; Adam is
    invariant to that scale, so training differs only through Adam's epsilon and a
    smaller last batch.
``"mean"``
    mean over every element (per-layer MSE as in Hou et al.; per-unit KL). This
    reweights KL against rec by (elements of rec / latent units): retune beta.

All arithmetic on the loss is float32, also under bf16 autocast.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import PIXEL_LOSSES, RECONS, REDUCTIONS

__all__ = ["reduce", "kl_divergence", "pixel_loss", "perceptual_loss", "VAELoss"]


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(t: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce an elementwise loss (B, ...) to a scalar (see module docstring)."""
    _check_reduction(reduction)
    if reduction == "batch-mean":
        return t.flatten(1).sum(1).mean()
    if reduction == "sum":
        return t.sum()
    return t.mean()


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor, reduction: str = "batch-mean") -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) in closed form.

    Parameters
    ----------
    mu, sigma : Tensor (B, Z)
        Posterior mean and standard deviation (sigma > 0).
    """
    mu, sigma = mu.float(), sigma.float()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0) - torch.log(sigma)   # (B, Z), >= 0
    return reduce(kl, reduction)


def pixel_loss(recon: torch.Tensor, x: torch.Tensor, kind: str = "bce", reduction: str = "batch-mean") -> torch.Tensor:
    """Pixel reconstruction loss; recon and x float (B, 3, H, W) in [0, 1]."""
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {kind!r}")
    recon, x = recon.float(), x.float()
    if kind == "bce":
        t = F.binary_cross_entropy(recon, x, reduction="none")
    else:
        t = (recon - x).pow(2)
    return reduce(t, reduction)


def perceptual_loss(vgg: nn.Module, recon: torch.Tensor, x: torch.Tensor,
                    reduction: str = "batch-mean") -> torch.Tensor:
    """Sum over VGG layers of the squared error between features of recon and x.

    ``vgg(x)`` must return a list of feature maps (``vae.vgg.VGGFeatures``). The
    features of x carry no gradient; those of recon pass it back to the decoder.
    """
    with torch.no_grad():
        target = vgg(x)
    feats = vgg(recon)
    total = recon.new_zeros((), dtype=torch.float32)
    for fr, fx in zip(feats, target):
        total = total + reduce((fr.float() - fx.float()).pow(2), reduction)
    return total


class VAELoss(nn.Module):
    """Total = alpha * KL + beta * rec, returned with its named parts.

    Parameters
    ----------
    recon : {"perceptual", "pixel", "both"}
    pixel : {"bce", "mse"}
    alpha, beta : float
    reduction : {"batch-mean", "sum", "mean"}
    vgg : nn.Module or None
        Needed for ``perceptual`` and ``both``.

    ``forward(x, recon_x, mu, sigma)`` returns a dict of float32 scalars: ``loss``,
    ``kl``, ``rec`` and, where used, ``perceptual`` and ``pixel``.
    """

    def __init__(self, recon: str = "perceptual", pixel: str = "bce", alpha: float = 1.0, beta: float = 0.03,
                 reduction: str = "batch-mean", vgg: Optional[nn.Module] = None):
        super().__init__()
        if recon not in RECONS:
            raise ValueError(f"recon must be one of {RECONS}, got {recon!r}")
        if pixel not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {pixel!r}")
        _check_reduction(reduction)
        if recon in ("perceptual", "both") and vgg is None:
            raise ValueError(f"recon={recon!r} needs a VGG feature extractor, got vgg=None")
        self.recon, self.pixel, self.reduction = recon, pixel, reduction
        self.alpha, self.beta = float(alpha), float(beta)
        self.vgg = vgg if recon in ("perceptual", "both") else None

    def forward(self, x: torch.Tensor, recon_x: torch.Tensor, mu: torch.Tensor,
                sigma: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        if self.vgg is not None:
            # VGG may run under the caller's autocast; the differences are float32.
            out["perceptual"] = perceptual_loss(self.vgg, recon_x, x, self.reduction)
        device_type = x.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            out["kl"] = kl_divergence(mu, sigma, self.reduction)
            if self.recon in ("pixel", "both"):
                out["pixel"] = pixel_loss(recon_x, x, self.pixel, self.reduction)
            rec = out.get("perceptual", 0.0) + out.get("pixel", 0.0)
            out["rec"] = rec
            out["loss"] = self.alpha * out["kl"] + self.beta * rec
        return out
