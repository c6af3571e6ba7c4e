"""The VAE architecture: paper preset shapes and size, exact output sizes, training signal."""

import pytest

torch = pytest.importorskip("torch")

from vae.config import PRESETS, ModelConfig, model_preset  # noqa: E402
from vae.model import VAE, num_parameters  # noqa: E402


def _expected_paper_params(latent=180):
    """Parameter count of the paper network written out from the paper's layer list."""
    n = 0
    c_in = 3
    for c in (64, 64, 128, 768):                     # 4x4 convs + BatchNorm (weight, bias)
        n += c_in * c * 16 + c + 2 * c
        c_in = c
    n += 2 * (768 * 20 * 20 * latent + latent)       # mu and sigma heads from 768 x 20 x 20
    n += latent * 768 * 11 * 11 + 768 * 11 * 11      # linear z -> 768 x 11 x 11
    n += 2 * 768                                     # its BatchNorm
    c_in = 768
    for c in (768, 768, 256, 64):                    # 3x3 transposed convs + BatchNorm
        n += c_in * c * 9 + c + 2 * c
        c_in = c
    n += 64 * 3 * 9 + 3                              # last layer to RGB
    return n


def test_paper_preset_shapes_and_parameter_count():
    cfg = PRESETS["paper"]
    assert cfg.enc_feature_size == (20, 20)          # 161 -> 160 -> 80 -> 40 -> 20
    assert [p[0] for p in cfg.dec_plan] == [(11, 11), (11, 11), (21, 21), (41, 41), (81, 81)]
    torch.manual_seed(0)
    model = VAE(cfg)                                 # built once (about 142 M parameters)
    assert num_parameters(model) == _expected_paper_params()
    x = torch.rand(2, 3, 161, 161)
    model.train()
    with torch.no_grad():
        recon, mu, sigma = model(x)
    assert recon.shape == (2, 3, 161, 161)
    assert mu.shape == sigma.shape == (2, 180)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    assert float(sigma.min()) > 0.0
    # Eval mode: the representation is mu and the reconstruction is deterministic.
    model.eval()
    with torch.no_grad():
        r1, mu1, _ = model(x)
        r2, mu2, _ = model(x)
        m3, _ = model.encode(x)
        d = model.decode(mu1)
    assert torch.equal(r1, r2) and torch.equal(mu1, m3) and torch.equal(d, r1)


def test_paper5_variant_shapes_on_meta_device():
    cfg = PRESETS["paper5"]
    assert cfg.enc_channels == (64, 64, 128, 256, 768) and cfg.enc_feature_size == (10, 10)
    with torch.device("meta"):
        model = VAE(cfg)
        recon, mu, _ = model(torch.empty(3, 3, 161, 161))
    assert recon.shape == (3, 3, 161, 161) and mu.shape == (3, 180)


@pytest.mark.parametrize("size", [(64, 64), (161, 161), (48, 80), (33, 47), (50, 50)])
def test_decoder_output_is_exactly_the_input_size(size):
    cfg = model_preset("tiny", image_size=size)
    with torch.device("meta"):
        recon, _, _ = VAE(cfg)(torch.empty(2, 3, *size))
    assert tuple(recon.shape) == (2, 3) + size


def test_sampling_in_train_mode_and_sigma_is_a_std():
    torch.manual_seed(1)
    model = VAE(PRESETS["tiny"])
    x = torch.rand(4, 3, 64, 64)
    model.train()
    mu, sigma = model.encode(x)
    torch.manual_seed(5)
    z = model.reparameterize(mu, sigma)
    torch.manual_seed(5)
    eps = torch.randn_like(sigma)
    assert torch.allclose(z, mu + sigma * eps)       # sigma scales eps directly: a standard deviation


def test_few_adam_steps_lower_the_loss():
    from vae.losses import VAELoss

    torch.manual_seed(0)
    model = VAE(model_preset("tiny", image_size=(32, 32), latent_dim=8))
    loss_fn = VAELoss("pixel", "bce", 1.0, 1.0)
    x = torch.rand(8, 3, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        torch.manual_seed(123)                       # same eps every step: a clean comparison
        parts = loss_fn(x, *model(x))
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(float(parts["loss"].detach()))
    assert losses[-1] < losses[0]


def test_bad_config_and_input_are_named():
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=4)
    with pytest.raises(ValueError, match="enc_strides"):
        ModelConfig(enc_strides=(1, 2))
    with pytest.raises(ValueError, match="preset"):
        model_preset("huge")
    model = VAE(model_preset("tiny", image_size=(32, 32)))
    with pytest.raises(ValueError, match=r"shape \(B, 3, 32, 32\)"):
        model(torch.rand(1, 3, 64, 64))


def test_model_config_round_trips_through_json():
    import json

    for cfg in PRESETS.values():
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
