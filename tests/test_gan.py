"""The conditional GAN: shapes, the noise-aware loss, a tiny training run, checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from assay.models.gan import (
    CPU_WIDE_SIDE,
    DEFAULT_STEPS,
    SMALL_CPU_STEPS,
    SMALL_SIDE,
    GANConfig,
    GANTrainer,
    load_generator,
)
from assay.models.gan_losses import (
    check_transition,
    discriminator_loss,
    generator_loss,
    mode_seeking_loss,
    noisy_cross_entropy,
    noisy_labels,
)
from assay.models.gan_networks import (
    Discriminator,
    Generator,
    diff_augment,
    layout,
    minibatch_stddev,
)

TINY = {"width": 8, "z_dim": 16, "batch_size": 32, "log_every": 10}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return np.round(bunch.images * 255.0 / 16.0).astype(np.uint8), bunch.target.astype(np.int64)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(8, (1, 4, 4)), (10, (1, 5, 5)), (16, (2, 4, 4)), (28, (2, 7, 7)), (32, (3, 4, 4)),
     (64, (4, 4, 4))],
)
def test_layout(size, expected):
    assert layout(size, size) == expected


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 12, 20), (3, 64, 64)])
def test_networks_have_the_right_shapes(shape):
    cfg = GANConfig(image_shape=shape, n_classes=4, **TINY)
    gen, disc = Generator(cfg), Discriminator(cfg)
    z = torch.randn(6, cfg.z_dim)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x = gen(z, y)
    assert x.shape == (6, *shape)
    assert x.min() >= -1 and x.max() <= 1
    assert disc(x, y).shape == (6,)
    assert disc(x, torch.softmax(torch.randn(6, 4), dim=1)).shape == (6,)


def test_config_for_data_and_errors():
    cfg = GANConfig.for_data((28, 28), 10, device="cpu")
    assert cfg.image_shape == (1, 28, 28) and cfg.n_classes == 10
    assert GANConfig.for_data((32, 32, 3), 10, device="cpu").image_shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"height and width must be in \[8, 64\]"):
        GANConfig(image_shape=(1, 4, 4), n_classes=2)
    with pytest.raises(ValueError, match="`noise_mode` must be one of"):
        GANConfig(image_shape=(1, 8, 8), n_classes=2, noise_mode="hard")
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        GANConfig(image_shape=(1, 8, 8), n_classes=2, steps=0)


def test_config_budget_follows_image_size_and_device():
    from assay.pipeline.stages.base import STEPS_HELP

    small = GANConfig.for_data((8, 8), 10, device="cpu")
    assert (small.steps, small.batch_size, small.lr_g, small.lr_d) == (SMALL_CPU_STEPS, 128,
                                                                       7e-4, 7e-4)  # fmt: skip
    edge = GANConfig.for_data((SMALL_SIDE, SMALL_SIDE, 3), 10, device="cpu")
    assert edge.steps == SMALL_CPU_STEPS
    mnist = GANConfig.for_data((28, 28), 10, device="cpu")
    assert (mnist.steps, mnist.batch_size, mnist.lr_g) == (DEFAULT_STEPS, 64, 5e-4)
    assert GANConfig.for_data((CPU_WIDE_SIDE, CPU_WIDE_SIDE, 3), 10, device="cpu").width == 32
    assert GANConfig.for_data((64, 48, 3), 10, device="cpu").width == 16  # narrower past 32
    assert GANConfig.for_data((64, 64, 3), 10, device="cuda").width == 64
    cuda = GANConfig.for_data((8, 8), 10, device="cuda")
    assert (cuda.steps, cuda.batch_size, cuda.width) == (DEFAULT_STEPS, 256, 64)
    assert GANConfig.for_data((8, 8), 10, device="cpu", steps=5, batch_size=7).steps == 5
    assert f"{SMALL_CPU_STEPS} steps of 128" in STEPS_HELP and str(DEFAULT_STEPS) in STEPS_HELP
    assert f"up to {SMALL_SIDE} px" in STEPS_HELP


def test_diff_augment_translates_and_cuts():
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 6:10, 6:10] = 1.0  # a bright square in the middle
    g = torch.Generator().manual_seed(0)
    moved = diff_augment(x, "translation", generator=g)
    assert moved.shape == x.shape
    # a shift keeps the square whole (it is far from the border): 16 bright pixels each
    assert ((moved == 1.0).sum(dim=(1, 2, 3)) == 16).all()
    assert not torch.equal(moved, x)
    cut = diff_augment(x, "cutout", generator=g)
    assert ((cut == 0.0).sum(dim=(1, 2, 3)) == 64).all()  # one 8x8 square set to 0
    assert torch.equal(diff_augment(x, "", generator=g), x)
    with pytest.raises(ValueError, match="`augment` must be a comma-separated subset"):
        GANConfig(image_shape=(1, 8, 8), n_classes=2, augment="flip")


def test_minibatch_stddev_and_mode_seeking():
    h = torch.randn(8, 3, 4, 4)
    out = minibatch_stddev(h)
    assert out.shape == (8, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], h)
    same = minibatch_stddev(torch.ones(6, 2, 3, 3))  # no spread at all
    assert torch.allclose(same[:, 2], torch.full((6, 3, 3), 1e-4), atol=1e-6)
    z = torch.randn(8, 5)
    x = torch.randn(8, 1, 4, 4)
    collapsed = torch.cat([x[:4], x[:4]])  # both halves identical: the worst case
    assert mode_seeking_loss(collapsed, z) > 1e4
    assert mode_seeking_loss(x, z) < mode_seeking_loss(0.1 * x, z)


def test_transition_checks():
    with pytest.raises(ValueError, match="rows must sum to 1"):
        check_transition(np.full((3, 3), 0.5), 3)
    with pytest.raises(ValueError, match=r"must have shape \(3, 3\)"):
        check_transition(np.eye(2), 3)


def test_noisy_labels_follow_the_transition():
    t = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7]])
    y = torch.tensor([0, 1, 2]).repeat_interleave(20000)
    g = torch.Generator().manual_seed(0)
    out = noisy_labels(y, t, mode="sample", generator=g)
    freq = np.zeros((3, 3))
    np.add.at(freq, (y.numpy(), out.numpy()), 1)
    np.testing.assert_allclose(freq / 20000, t.numpy(), atol=0.015)
    soft = noisy_labels(torch.tensor([0, 1, 2]), t, mode="soft")
    torch.testing.assert_close(soft, t)
    assert noisy_labels(y, torch.eye(3), generator=g).equal(y)


@pytest.mark.parametrize("ac_weight", [0.0, 1.0])
@pytest.mark.parametrize("mode", ["sample", "soft"])
def test_noise_aware_loss_equals_plain_loss_with_identity(mode, ac_weight):
    cfg = GANConfig(image_shape=(1, 8, 8), n_classes=5, **TINY)
    torch.manual_seed(0)
    gen, disc = Generator(cfg), Discriminator(cfg).eval()  # eval: no power-iteration drift
    x_real = torch.rand(16, 1, 8, 8) * 2 - 1
    y_real = torch.randint(5, (16,))
    y_fake = torch.randint(5, (16,))
    x_fake = gen(torch.randn(16, cfg.z_dim), y_fake)
    eye = torch.eye(5)
    kw = {"ac_weight": ac_weight}
    plain_d = discriminator_loss(disc, x_real, y_real, x_fake, y_fake, **kw)
    aware_d = discriminator_loss(
        disc, x_real, y_real, x_fake, y_fake, transition=eye, mode=mode, **kw
    )
    for a, b in zip(plain_d, aware_d, strict=True):
        assert torch.equal(a, b)
    plain_g = generator_loss(disc, x_fake, y_fake, **kw)
    aware_g = generator_loss(disc, x_fake, y_fake, transition=eye, mode=mode, **kw)
    assert torch.equal(plain_g, aware_g)
    # and a real noise matrix does change the losses
    t = torch.full((5, 5), 0.2)
    noisy_g = generator_loss(disc, x_fake, y_fake, transition=t, mode=mode, **kw)
    assert not torch.allclose(noisy_g, plain_g)
    noisy_d = discriminator_loss(disc, x_real, y_real, x_fake, y_fake, transition=t, **kw)
    assert not torch.allclose(noisy_d[0], plain_d[0])


def test_noisy_cross_entropy_is_forward_corrected():
    logits = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])  # sure of class 0, then class 1
    t = torch.tensor([[0.5, 0.5], [0.0, 1.0]])  # true 0 is observed as 1 half of the time
    observed = torch.tensor([1, 1])
    loss = noisy_cross_entropy(logits, observed, t)
    torch.testing.assert_close(loss, torch.tensor(np.log(2.0) / 2, dtype=torch.float32))
    assert noisy_cross_entropy(logits, observed) > 10  # uncorrected: a confident mistake


def test_noise_aware_training_with_identity_equals_plain_training(digits):
    x, y = digits
    cfg = GANConfig(image_shape=(1, 8, 8), n_classes=10, steps=5, seed=3, **TINY)
    plain = GANTrainer(cfg, device="cpu", progress=False).fit(x, y)
    aware = GANTrainer(cfg, device="cpu", progress=False).fit(x, y, transition=np.eye(10))
    for a, b in zip(
        plain.generator_.state_dict().values(), aware.generator_.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_tiny_gan_trains_on_digits(digits, tmp_path):
    x, y = digits
    cfg = GANConfig(image_shape=(1, 8, 8), n_classes=10, steps=50, checkpoint_every=25, **TINY)
    lines: list[str] = []
    trainer = GANTrainer(cfg, device="cpu", log=lines.append, name="tiny")
    saved: list[int] = []

    def checkpoint(t: GANTrainer) -> None:
        saved.append(t.step_)
        t.save(tmp_path / "tiny.pt")

    assert trainer.fit(x, y, on_checkpoint=checkpoint) is trainer
    assert saved == [25, 50]
    hist = trainer.history_
    assert hist["step"].tolist() == [10, 20, 30, 40, 50]
    assert np.isfinite(hist[["loss_d", "loss_g", "d_real", "d_fake"]].to_numpy()).all()
    assert trainer.images_per_second_ > 0 and trainer.seconds_ > 0
    assert any("step 50/50" in line for line in lines)
    # a line before the last step says how long the rest takes at the rate so far
    assert any(re.search(r"step [1-4]0/50 .* ~\d+ s left$", line) for line in lines), lines
    assert not any("left" in line for line in lines if "step 50/50" in line)

    labels = np.repeat(np.arange(10), 3)
    samples = trainer.sample(labels, seed=1)
    assert samples.shape == (30, 8, 8) and samples.dtype == np.uint8
    assert samples.std() > 0  # not a constant picture
    np.testing.assert_array_equal(samples, trainer.sample(labels, seed=1))

    gen, loaded_cfg = load_generator(tmp_path / "tiny.pt")  # weights_only=True inside
    assert loaded_cfg == cfg
    z = torch.randn(30, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(trainer.sample(labels, z=z), _sample(gen, labels, z))

    # same seed, same numbers
    again = GANTrainer(cfg, device="cpu", progress=False).fit(x, y)
    np.testing.assert_allclose(again.history_["loss_d"], hist["loss_d"], rtol=1e-5)


def _sample(gen, labels, z):
    from assay.models.gan import sample

    return sample(gen, labels, z=z)


def test_fit_rejects_bad_input(digits):
    x, y = digits
    cfg = GANConfig(image_shape=(1, 8, 8), n_classes=10, steps=1, **TINY)
    trainer = GANTrainer(cfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match="must be uint8"):
        trainer.fit(x.astype(float), y)
    with pytest.raises(ValueError, match=r"must have shape \(N, 8, 8\)"):
        trainer.fit(np.zeros((4, 9, 9), np.uint8), y[:4])
    with pytest.raises(ValueError, match="rows must sum to 1"):
        trainer.fit(x, y, transition=np.ones((10, 10)))
