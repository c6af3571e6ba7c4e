"""Representations that learn nothing, to compare a trained encoder against.

A trained VAE's latents are only interesting where they beat what the images
already show plainly. The demo compares with two controls: the same network with its
initial (untrained) weights (``vae.checkpoint.load_model(run_dir, "init")``), and the
top principal components of the pixels (:func:`pca_features`), with as many
components as the VAE has latent units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pca_features"]


def pca_features(images: np.ndarray, k: int, side: int = 16) -> np.ndarray:
    """Top-``k`` principal components of the images' pixels (a no-learning baseline).

    Parameters
    ----------
    images : numpy.ndarray of uint8, shape (n, H, W, 3)
    k : int >= 1
        Components kept (at most side * side * 3).
    side : int >= 1
        Images are area-averaged to side x side first (keeps the eigenproblem small).

    Returns
    -------
    numpy.ndarray of float32, shape (n, k)
        Projections of the centred, [0, 1]-scaled pixels on the components, largest
        variance first.
    """
    import cv2

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (n, H, W, C), got {images.dtype} {images.shape}")
    if not 1 <= k <= side * side * images.shape[3]:
        raise ValueError(f"k must be in [1, {side * side * images.shape[3]}], got {k}")
    x = np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])
    x = x.reshape(len(images), -1).astype(np.float64) / 255.0
    x -= x.mean(axis=0)
    cov = x.T @ x / max(len(x) - 1, 1)
    w, v = np.linalg.eigh(cov)
    comp = v[:, np.argsort(w)[::-1][:k]]
    return (x @ comp).astype(np.float32)
