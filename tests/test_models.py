"""The models choose their architecture from image size and channels (8 to 64 px, grey
and colour): forward shapes and a few training steps for each size/channel combination."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from assay.models.classifier import Classifier, ClassifierConfig, SmallCNN
from assay.models.gan import GANConfig, GANTrainer
from assay.models.gan_networks import Discriminator, Generator, layout
from assay.models.tensors import scale_uint8, to_tensor, to_uint8
from assay.models.vae import VAE, VAEConfig, build_vae

SIZES = [(8, 8), (16, 16), (28, 28), (32, 32), (64, 64), (24, 40)]
CHANNELS = [1, 3]
COMBOS = [pytest.param(hw, c, id=f"{hw[0]}x{hw[1]}x{c}") for hw in SIZES for c in CHANNELS]


def _images(n: int, hw: tuple[int, int], c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, *hw) if c == 1 else (n, *hw, c)
    return (rng.random(shape) ** 2 * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- tensors
def test_to_tensor_layout_and_scales():
    grey = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    rgb = np.stack([grey[0], grey[0] // 3, 255 - grey[0]], axis=-1)[None]  # (1, 2, 2, 3)
    u = to_tensor(grey)
    assert u.shape == (1, 1, 2, 2) and u.dtype == torch.float32
    torch.testing.assert_close(u[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    s = to_tensor(rgb, scale="signed")
    assert s.shape == (1, 3, 2, 2)
    torch.testing.assert_close(s[0, 2], torch.tensor([[1.0, -1.0], [0.6, 0.2]]))
    raw = to_tensor(rgb, scale=None, channels_last=True)
    assert raw.dtype == torch.uint8 and raw.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(scale_uint8(raw, "unit"), to_tensor(rgb))
    np.testing.assert_array_equal(to_uint8(to_tensor(rgb, scale="signed")), rgb)
    np.testing.assert_array_equal(to_uint8(to_tensor(grey, scale="signed")), grey)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 4, 4), np.float32), "must be uint8"),
        (np.zeros((4, 4), np.uint8), "must be uint8 \\(N, H, W\\)"),
    ],
)
def test_to_tensor_refuses_other_arrays(images, match):
    with pytest.raises(ValueError, match=match):
        to_tensor(images)
    with pytest.raises(ValueError, match="`scale` must be one of"):
        scale_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), "percent")


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize(("hw", "c"), COMBOS)
def test_classifier_fits_every_size(hw, c):
    images = _images(12, hw, c)
    config = ClassifierConfig.for_images(images.shape, epochs=2, batch_size=6, hidden=8)
    net = SmallCNN(c, 3, hw, config)
    logits, emb = net(torch.zeros(2, c, *hw))
    assert logits.shape == (2, 3) and emb.shape == (2, 8)
    flat = net.embed[2].in_features  # the flattened feature map
    assert flat <= 64 * 8 * 8, f"{hw}: a {flat}-value feature map"
    clf = Classifier(config, n_classes=3, seed=0, device="cpu").fit(images, np.arange(12) % 3)
    probs, emb = clf.predict_with_embedding(images)
    assert probs.shape == (12, 3) and emb.shape == (12, 8) and np.isfinite(probs).all()
    assert clf.image_shape_ == (c, *hw)


def test_classifier_gets_deeper_with_the_image():
    depth = {s: len(ClassifierConfig.for_images((1, s, s)).widths) for s in (8, 28, 32, 64, 96)}
    assert depth == {8: 2, 28: 2, 32: 2, 64: 3, 96: 3}
    stem = {s: ClassifierConfig.for_images((1, s, s)).stem_stride for s in (32, 47, 48, 64)}
    assert stem == {32: 1, 47: 1, 48: 2, 64: 2}
    # 64 -> 32 (stride-2 stem) -> 16 -> 8 (pools, down to 8 px); 49 -> 25 -> 12 (min 8)
    for hw, flat in (((64, 64), 64 * 8 * 8), ((49, 64), 64 * 12 * 16)):
        net = SmallCNN(3, 10, hw, ClassifierConfig.for_images((1, *hw, 3)))
        assert net.embed[2].in_features == flat
        assert net(torch.zeros(2, 3, *hw))[0].shape == (2, 10)


def test_classifier_save_load_round_trip():
    images = _images(12, (16, 16), 3)
    config = ClassifierConfig.for_images(images.shape, epochs=1, batch_size=6, hidden=8)
    clf = Classifier(config, n_classes=3, seed=0, device="cpu").fit(images, np.arange(12) % 3)
    buf = io.BytesIO()
    clf.save(buf)
    buf.seek(0)
    back = Classifier.load(buf)
    assert back.config_ == clf.config_ and back.n_classes_ == 3
    np.testing.assert_array_equal(back.predict_proba(images), clf.predict_proba(images))


# ----------------------------------------------------------------------------- VAE
@pytest.mark.parametrize(("hw", "c"), COMBOS)
def test_vae_fits_every_size(hw, c):
    images = _images(8, hw, c)
    config = VAEConfig.for_images(images.shape, epochs=1, batch_size=4)
    assert config.kind == ("mlp" if min(hw) < 16 else "conv")
    assert (config.height, config.width, config.channels) == (*hw, c)
    net = build_vae(config)
    logits, mu, logvar = net(torch.rand(2, c, *hw))
    assert logits.shape == (2, c, *hw) and mu.shape == logvar.shape == (2, config.latent_dim)
    vae = VAE(config, seed=0, device="cpu").fit(images)
    err = vae.reconstruction_error(images)
    assert err.shape == (8,) and np.isfinite(err).all() and len(vae.history_.loss) == 1


# ----------------------------------------------------------------------------- GAN
@pytest.mark.parametrize(("hw", "c"), COMBOS)
def test_gan_fits_every_size(hw, c):
    images = _images(8, hw, c)
    shape = hw if c == 1 else (*hw, c)
    config = GANConfig.for_data(shape, 2, device="cpu", steps=2, batch_size=4, log_every=1)
    n_up, s0h, s0w = layout(*hw)
    assert s0h * 2**n_up >= hw[0] and s0w * 2**n_up >= hw[1] and min(s0h, s0w) >= 4
    gen, disc = Generator(config), Discriminator(config)
    x = gen(torch.randn(4, config.z_dim), torch.tensor([0, 1, 0, 1]))
    assert x.shape == (4, c, *hw)
    assert disc(x, torch.tensor([0, 1, 0, 1])).shape == (4,)
    trainer = GANTrainer(config, device="cpu", progress=False).fit(images, np.arange(8) % 2)
    assert trainer.step_ == 2 and np.isfinite(trainer.history_["loss_d"]).all()
    samples = trainer.sample(np.array([0, 1]))
    assert samples.shape == (2, *shape) and samples.dtype == np.uint8
