"""models.vae: config, shapes, training, determinism, scoring and persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assay.models.vae import MLPVAE, VAE, ConvVAE, VAEConfig, build_vae


@pytest.fixture(scope="module")
def digits_u8() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images[:600]
    return np.round(images * 255.0 / 16.0).astype(np.uint8)  # (600, 8, 8)


def _blobs(n: int, size: int, channels: int = 0, seed: int = 0) -> np.ndarray:
    """``n`` images with one bright square each, uint8 ``(n, size, size[, channels])``."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size) + ((channels,) if channels else ())
    images = np.zeros(shape, dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 5, size=2)
        images[i, y : y + 5, x : x + 5] = 220
    return images


# ----------------------------------------------------------------------------- config
def test_for_images_picks_architecture_by_size():
    small = VAEConfig.for_images((1797, 8, 8))
    assert (small.kind, small.height, small.width, small.channels) == ("mlp", 8, 8, 1)
    big = VAEConfig.for_images((10000, 28, 28))
    assert (big.kind, big.height, big.width) == ("conv", 28, 28)
    assert big.epochs == 12  # 120k sample passes / 10k images
    rgb = VAEConfig.for_images((50, 32, 32, 3), epochs=2, latent_dim=4)
    assert (rgb.channels, rgb.epochs, rgb.latent_dim) == (3, 2, 4)
    assert VAEConfig.for_images((10, 8, 8)).epochs == 60  # capped


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "rnn"}, "`kind` must be 'conv' or 'mlp'"),
        ({"latent_dim": 0}, "`latent_dim` must be a positive integer"),
        ({"epochs": 1.5}, "`epochs` must be a positive integer"),
        ({"beta": -1.0}, "`beta` must be >= 0"),
        ({"lr": 0.0}, "`lr` must be > 0"),
        ({"widths": ()}, "`widths` must be positive integers"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_field():
    cfg = VAEConfig.for_images((100, 20, 18, 3))
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown VAE config field"):
        VAEConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("h", "w", "c", "widths"), [(28, 28, 1, (16, 32)), (20, 18, 3, (8, 16)), (48, 48, 1, (4, 8, 8))]
)
def test_conv_vae_shapes_including_padding(h, w, c, widths):
    cfg = VAEConfig(height=h, width=w, channels=c, kind="conv", widths=widths, latent_dim=5)
    model = build_vae(cfg)
    assert isinstance(model, ConvVAE)
    x = torch.rand(3, c, h, w)
    logits, mu, logvar = model(x)
    assert logits.shape == (3, c, h, w)
    assert mu.shape == logvar.shape == (3, 5)


def test_mlp_vae_shapes():
    cfg = VAEConfig.for_images((10, 8, 8), latent_dim=3)
    model = build_vae(cfg)
    assert isinstance(model, MLPVAE)
    logits, mu, _ = model(torch.rand(4, 1, 8, 8))
    assert logits.shape == (4, 1, 8, 8) and mu.shape == (4, 3)


def test_conv_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 8 px"):
        build_vae(VAEConfig(height=4, width=4, kind="conv"))


# ----------------------------------------------------------------------------- training
def test_fit_mlp_on_digits_learns_and_is_deterministic(digits_u8):
    cfg = VAEConfig.for_images(digits_u8.shape, epochs=6)
    model = VAE(cfg, seed=3, device="cpu").fit(digits_u8)
    history = model.history_
    assert model.fit(digits_u8) is model
    assert len(history.loss) == 6 and np.all(np.isfinite(history.loss))
    assert history.loss[-1] < 0.8 * history.loss[0]
    assert not model.network_.training

    err = model.reconstruction_error(digits_u8)
    assert err.shape == (600,) and err.dtype == np.float64 and np.all(np.isfinite(err))
    # A trained model explains digits far better than constant-grey or noise images.
    rng = np.random.default_rng(0)
    odd = np.concatenate(
        [np.full((5, 8, 8), 128, np.uint8), rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)]
    )
    assert model.reconstruction_error(odd).min() > np.quantile(err, 0.99)

    again = VAE(cfg, seed=3, device="cpu").fit(digits_u8)
    np.testing.assert_array_equal(again.reconstruction_error(digits_u8), err)
    other = VAE(cfg, seed=4, device="cpu").fit(digits_u8)
    assert not np.array_equal(other.reconstruction_error(digits_u8), err)


def test_fit_conv_colour_images_and_terms():
    images = _blobs(40, 16, channels=3)
    cfg = VAEConfig.for_images(images.shape, epochs=2, widths=(4, 8), hidden=16, batch_size=16)
    model = VAE(cfg, seed=0, device="cpu").fit(images)
    assert len(model.history_.loss) == 2 and np.all(np.isfinite(model.history_.loss))
    terms = model.error_terms(images, batch_size=7)  # ragged batches
    assert set(terms) == {"nelbo", "recon", "kl", "entropy"}
    for v in terms.values():
        assert v.shape == (40,) and np.all(np.isfinite(v))
    np.testing.assert_allclose(terms["nelbo"], terms["recon"] + cfg.beta * terms["kl"])
    # Cross-entropy of a Bernoulli reconstruction is never below the image's own entropy.
    assert np.all(terms["recon"] - terms["entropy"] > -1e-3)
    assert np.all(terms["kl"] >= -1e-4)


def test_progress_prints_a_summary_line(digits_u8, capsys):
    cfg = VAEConfig.for_images(digits_u8.shape, epochs=1)
    VAE(cfg, seed=0, device="cpu", progress=True).fit(digits_u8[:64])
    err = capsys.readouterr().err
    assert "vae: mlp VAE, 64 images 8x8x1, 1 epochs" in err and "final loss" in err


def test_a_single_image_trains():
    images = _blobs(1, 8)
    model = VAE(VAEConfig.for_images(images.shape, epochs=2)).fit(images)
    assert np.isfinite(model.history_.loss).all()
    assert model.reconstruction_error(images).shape == (1,)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((4, 8, 8), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 9, 8), dtype=np.uint8), r"must have shape \(N, 8, 8\)"),
        (np.zeros((0, 8, 8), dtype=np.uint8), "empty"),
    ],
)
def test_bad_images_are_refused(images, match):
    model = VAE(VAEConfig.for_images((4, 8, 8), epochs=1), device="cpu")
    model.fit(np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=match):
        model.reconstruction_error(images)


# ----------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path, digits_u8):
    cfg = VAEConfig.for_images(digits_u8.shape, epochs=1)
    model = VAE(cfg, seed=0, device="cpu").fit(digits_u8[:128])
    model.save(tmp_path / "vae.pt")
    loaded = VAE.load(tmp_path / "vae.pt")
    assert loaded.config_ == cfg and loaded.network_.config == cfg
    np.testing.assert_array_equal(
        loaded.reconstruction_error(digits_u8), model.reconstruction_error(digits_u8)
    )


def test_refit_continues_the_fitted_network(digits_u8):
    cfg = VAEConfig.for_images(digits_u8.shape, epochs=2)
    model = VAE(cfg, seed=0, device="cpu").fit(digits_u8)
    first = model.reconstruction_error(digits_u8)
    network = model.network_
    assert model.refit(digits_u8[:300], epochs=3, seed=1) is model
    assert model.network_ is network and len(model.history_.loss) == 3
    assert model.config_.epochs == 3 and model.config is cfg  # the parameter stays
    assert not np.array_equal(model.reconstruction_error(digits_u8), first)


def test_load_refuses_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        VAE.load(tmp_path / "vae.pt")
    (tmp_path / "vae.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a VAE written by VAE.save"):
        VAE.load(tmp_path / "vae.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a VAE written by VAE.save"):
        VAE.load(tmp_path / "other.pt")
