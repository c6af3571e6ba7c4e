"""The paper's convolutional VAE (Wever & Runia, section 3 and 4.2).

Encoder: convs, each followed by LeakyReLU then BatchNorm (the authors' order),
flattened (or, with ``enc_pool="mean"``, averaged over positions) into two linear
heads, ``mu`` and ``sigma = softplus(.) + eps`` (the
standard deviation; the authors' code read it as a log-variance, which forces
sigma >= 1 - a quirk not taken over). Decoder: linear z -> C x s x s, transposed
convs with LeakyReLU + BatchNorm after each, and a last transposed conv to 3
channels with a sigmoid. ``s`` and every ``output_padding`` are worked out from the
config (``ModelConfig.dec_plan``) so the output has exactly the input size without
any crop or resize (161 -> s = 11: 11 -> 11 -> 21 -> 41 -> 81 -> 161).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["Encoder", "Decoder", "VAE"]


class Encoder(nn.Module):
    """x (B, 3, H, W) in [0, 1] -> (mu, sigma), each (B, latent_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers = []
        c_in = 3
        for c, k, s, p in zip(cfg.enc_channels, cfg.enc_kernel, cfg.enc_strides, cfg.enc_padding):
            layers += [nn.Conv2d(c_in, c, k, s, p), nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm2d(c)]
            c_in = c
        self.features = nn.Sequential(*layers)
        fh, fw = cfg.enc_feature_size
        self.pool = cfg.enc_pool
        n_flat = c_in if self.pool == "mean" else c_in * fh * fw
        self.mu = nn.Linear(n_flat, cfg.latent_dim)
        self.sigma = nn.Linear(n_flat, cfg.latent_dim)
        self.sigma_eps = float(cfg.sigma_eps)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        h = h.mean(dim=(2, 3)) if self.pool == "mean" else h.flatten(1)  # (B, C) or (B, C * fh * fw)
        mu = self.mu(h)                                              # (B, Z)
        sigma = F.softplus(self.sigma(h)) + self.sigma_eps           # (B, Z), > 0, a std
        return mu, sigma


class Decoder(nn.Module):
    """z (B, latent_dim) -> logits (B, 3, H, W); ``VAE.decode`` applies the sigmoid."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        plan = cfg.dec_plan
        (self.h0, self.w0), _ = plan[0]
        self.c0 = int(cfg.dec_in_channels)
        self.fc = nn.Linear(cfg.latent_dim, self.c0 * self.h0 * self.w0)
        self.fc_act = nn.Sequential(nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm2d(self.c0))
        layers = []
        c_in = self.c0
        specs = zip(cfg.dec_channels, cfg.dec_kernel, cfg.dec_strides, cfg.dec_padding, plan[:-1])
        for c, k, s, p, (_, op) in specs:
            layers += [nn.ConvTranspose2d(c_in, c, k, s, p, output_padding=op),
                       nn.LeakyReLU(cfg.leaky_slope), nn.BatchNorm2d(c)]
            c_in = c
        _, op = plan[-1]
        layers.append(nn.ConvTranspose2d(c_in, 3, cfg.out_kernel, cfg.out_stride, cfg.out_padding, output_padding=op))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, self.h0, self.w0)   # (B, C0, s_h, s_w)
        return self.net(self.fc_act(h))                              # (B, 3, H, W) logits


class VAE(nn.Module):
    """Convolutional VAE.

    Parameters
    ----------
    cfg : ModelConfig

    Notes
    -----
    ``forward(x)`` returns ``(recon, mu, sigma)``: recon float (B, 3, H, W) in
    [0, 1], mu and sigma (B, latent_dim). In training mode z = mu + sigma * eps
    (eps from torch's global generator); in eval mode z = mu, so the representation
    and the reconstruction are deterministic.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _check_input(self, x: torch.Tensor) -> None:
        h, w = self.cfg.image_size
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise ValueError(f"x must have shape (B, 3, {h}, {w}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x float (B, 3, H, W) in [0, 1] -> (mu, sigma), each float (B, latent_dim)."""
        self._check_input(x)
        return self.encoder(x)

    def reparameterize(self, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps in training mode, mu in eval mode."""
        if not self.training:
            return mu
        return mu + sigma * torch.randn_like(sigma)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> pre-sigmoid output (B, 3, H, W)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> x_hat float (B, 3, H, W) in [0, 1]."""
        # The sigmoid runs in float32 even under bf16 autocast: bf16 has too few
        # mantissa bits near 0 and 1 for a pixel BCE.
        return torch.sigmoid(self.decoder(z).float())

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sigma = self.encode(x)
        z = self.reparameterize(mu, sigma)
        return self.decode(z), mu, sigma


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
