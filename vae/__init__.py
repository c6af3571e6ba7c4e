"""vae: the paper's convolutional VAE trained on synthcount shards (needs the [vae] extra).

Modules: ``config`` (ModelConfig, TrainConfig, PRESETS; no torch), ``model`` (VAE),
``losses`` (KL, feature-perceptual, pixel), ``vgg`` (VGG-19 features from local
weights), ``data`` (datasets over shards, augmentation, curriculum), ``sos``
(natural images: SOS ``imgIdx.mat`` or folder + CSV), ``checkpoint`` (safe
checkpoints, ``load_model``), ``device`` (``resolve_device``), ``seeds`` (named random
streams), ``train`` (the training program); analysis: ``encode`` (latents files),
``probe`` (Table 1 count probe: MLP and logistic), ``regress`` (Eq. 3), ``figures``,
number sense: ``dewind`` (units on log N, log size, log spacing), ``tuning``
(number-selective units, tuning curves), ``compare`` (comparison read-out, Weber
fraction), ``numbersense`` (these on latents files, beside the controls),
``baselines`` (PCA of the pixels), ``counting`` (torchvision-style datasets for counting and
detection models); the demo: ``demo`` (the pipeline, ``DemoConfig``)
and ``report`` (its per-seed records and ``report.md``).

Attributes below are imported lazily, so ``import vae`` (and ``vae.config``) works
without importing torch.
"""

import importlib

__all__ = ["ModelConfig", "TrainConfig", "PRESETS", "VAE", "load_model", "ShardImages", "split_indices"]

_LAZY = {
    "ModelConfig": "config", "TrainConfig": "config", "PRESETS": "config",
    "VAE": "model", "load_model": "checkpoint",
    "ShardImages": "data", "split_indices": "data",
}


def __getattr__(name):
    if name in _LAZY:
        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module 'vae' has no attribute {name!r}")
