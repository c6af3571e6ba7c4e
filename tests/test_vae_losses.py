"""Losses and the VGG-19 feature extractor (weights made here: nothing downloads)."""

import os

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from vae import vgg as vggmod  # noqa: E402
from vae.losses import VAELoss, kl_divergence, perceptual_loss, pixel_loss, reduce  # noqa: E402


@pytest.fixture(scope="module")
def tv_vgg():
    """torchvision's own vgg19 (random weights), built once."""
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).eval()


@pytest.fixture(scope="module")
def full_vgg_file(tv_vgg, tmp_path_factory):
    """A 'full' vgg19 state_dict file: every features.* tensor plus a classifier key
    (the real classifier is 480 MB; one small tensor under its name stands in)."""
    sd = {k: v for k, v in tv_vgg.state_dict().items() if k.startswith("features.")}
    sd["classifier.6.bias"] = tv_vgg.state_dict()["classifier.6.bias"]
    path = str(tmp_path_factory.mktemp("vgg") / "vgg19-full.pth")
    torch.save(sd, path)
    return path


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, sigma = torch.randn(5, 7), torch.rand(5, 7) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                            torch.distributions.Normal(torch.zeros(5, 7), torch.ones(5, 7)))
    assert torch.allclose(kl_divergence(mu, sigma, "sum"), ref.sum(), rtol=1e-5)
    assert torch.allclose(kl_divergence(mu, sigma, "batch-mean"), ref.sum(1).mean(), rtol=1e-5)
    assert torch.allclose(kl_divergence(mu, sigma, "mean"), ref.mean(), rtol=1e-5)
    assert float(kl_divergence(torch.zeros(2, 3), torch.ones(2, 3))) == 0.0


def test_reductions_and_pixel_losses():
    t = torch.arange(24, dtype=torch.float32).view(2, 3, 2, 2)
    assert float(reduce(t, "sum")) == float(t.sum())
    assert float(reduce(t, "batch-mean")) == float(t.sum()) / 2
    assert float(reduce(t, "mean")) == float(t.mean())
    with pytest.raises(ValueError, match="reduction"):
        reduce(t, "avg")
    x = torch.rand(2, 3, 4, 4)
    r = torch.rand(2, 3, 4, 4).clamp(0.01, 0.99)
    bce = torch.nn.functional.binary_cross_entropy(r, x, reduction="sum") / 2
    assert torch.allclose(pixel_loss(r, x, "bce", "batch-mean"), bce)
    assert torch.allclose(pixel_loss(r, x, "mse", "mean"), ((r - x) ** 2).mean())
    with pytest.raises(ValueError, match="pixel_loss"):
        pixel_loss(r, x, "l1")


def test_vgg_slim_and_layers_are_torchvision_relu1_1_2_1_3_1(tv_vgg, full_vgg_file, tmp_path):
    slim = str(tmp_path / "slim.pth")
    info = vggmod.slim_vgg_state_dict(full_vgg_file, slim)
    assert info["bytes"] < 3_000_000 and info["keys"] == 10           # 5 convs x (weight, bias)
    assert sorted(torch.load(slim, weights_only=True)) == sorted(
        f"features.{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias"))
    feats = vggmod.VGGFeatures(vggmod.load_vgg_state_dict(slim))
    # The chosen modules are torchvision's ReLUs after conv1_1, conv2_1, conv3_1.
    tv = tv_vgg.features
    assert all(isinstance(tv[i], torch.nn.ReLU) for i in vggmod.LAYER_INDICES)
    assert [tv[i - 1].out_channels for i in vggmod.LAYER_INDICES] == [64, 128, 256]
    assert [type(m) for m in feats.features] == [type(m) for m in tv[:12]]
    x = torch.rand(2, 3, 40, 40)
    xn = (x - torch.tensor(vggmod.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(vggmod.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = feats(x)
        ref = [tv[: i + 1](xn.clone()) for i in vggmod.LAYER_INDICES]
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    # Full and slim files give the same extractor.
    full = vggmod.VGGFeatures(vggmod.load_vgg_state_dict(full_vgg_file))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(full(x), ours))


def test_vgg_is_frozen_and_passes_gradients_to_the_reconstruction(full_vgg_file):
    feats = vggmod.VGGFeatures(vggmod.load_vgg_state_dict(full_vgg_file))
    feats.train()
    assert not feats.training and all(not p.requires_grad for p in feats.parameters())
    x = torch.rand(2, 3, 24, 24)
    r = torch.rand(2, 3, 24, 24, requires_grad=True)
    loss = perceptual_loss(feats, r, x, "batch-mean")
    loss.backward()
    assert float(loss.detach()) > 0 and r.grad is not None and float(r.grad.abs().sum()) > 0
    assert all(p.grad is None for p in feats.parameters())
    assert float(perceptual_loss(feats, x, x)) == 0.0


def test_total_is_alpha_kl_plus_beta_rec_with_named_parts(full_vgg_file):
    feats = vggmod.VGGFeatures(vggmod.load_vgg_state_dict(full_vgg_file))
    x, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16).clamp(0.05, 0.95)
    mu, sigma = torch.randn(2, 4), torch.rand(2, 4) + 0.5
    both = VAELoss("both", "mse", alpha=0.5, beta=2.0, vgg=feats)(x, r, mu, sigma)
    assert set(both) == {"loss", "kl", "rec", "perceptual", "pixel"}
    assert torch.allclose(both["rec"], both["perceptual"] + both["pixel"])
    assert torch.allclose(both["loss"], 0.5 * both["kl"] + 2.0 * both["rec"])
    pix = VAELoss("pixel", "bce")(x, r, mu, sigma)
    assert set(pix) == {"loss", "kl", "rec", "pixel"}
    with pytest.raises(ValueError, match="needs a VGG"):
        VAELoss("perceptual")
    with pytest.raises(ValueError, match="recon"):
        VAELoss("l2")


def test_missing_weights_give_the_promised_error(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))                    # an empty cache
    try:
        with pytest.raises(vggmod.VGGWeightsMissing) as e:
            vggmod.resolve_vgg_weights(None)
        msg = str(e.value)
        assert "--vgg-weights PATH" in msg and "vgg-slim" in msg and "vgg19-dcbb9e9d.pth" in msg
        assert "random" in msg and "--recon pixel" in msg
        with pytest.raises(vggmod.VGGWeightsMissing, match="no file at"):
            vggmod.resolve_vgg_weights(str(tmp_path / "nope.pth"))
        # torchvision's cache file is used when it is there.
        cache = vggmod.default_cache_path()
        os.makedirs(os.path.dirname(cache))
        torch.save({f"features.{i}.{p}": t for i, m in enumerate(vggmod.VGGFeatures().features)
                    if isinstance(m, torch.nn.Conv2d) for p, t in (("weight", m.weight), ("bias", m.bias))}, cache)
        w = vggmod.resolve_vgg_weights(None)
        assert w.source == "cache" and w.path == cache and len(w.sha256) == 64
        assert vggmod.resolve_vgg_weights("random").source == "random"
    finally:
        torch.hub.set_dir(old)


def test_bad_vgg_file_is_named(tmp_path):
    p = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="bad.pth"):
        vggmod.load_vgg_state_dict(str(p))
    p.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read"):
        vggmod.load_vgg_state_dict(str(p))
