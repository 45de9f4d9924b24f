"""Data augmentation for image batches: random shifts (crops of a zero-padded image) and flips.

    from cnncore.augment import RandomCropFlip
    augment = RandomCropFlip(pad=4, flip=True, seed=0)      # CIFAR-10's usual setting
    x_batch = augment(x_batch)                              # (N, C, H, W) -> new (N, C, H, W)
    Trainer(..., augment=augment)                           # applied to every training batch

Each image is padded with ``pad`` zero pixels on every side and an ``H x W`` window is cut at a
random offset (a shift of up to ``pad`` pixels each way); with ``flip`` half of the images are also
mirrored left-right. The whole batch is done with one padded copy and one gather (no Python loop
per image), in the batch's dtype. The randomness comes from the augmenter's own
``np.random.Generator``, never the global ``np.random``: a seeded textbook run draws the same
batches with augmentation on as off.

Flips suit CIFAR-10 and Fashion-MNIST; they turn digits into other shapes, so leave them off for
MNIST.
"""
import numpy as np

from ._validate import check_int


def random_crop_flip(x, pad=4, flip=True, rng=None):
    """A new batch: every image of ``x`` (N, C, H, W) shifted by up to ``pad`` pixels (the uncovered
    border is zero) and, with ``flip``, mirrored left-right with probability 1/2.

    ``rng``: a ``np.random.Generator``, an int seed or None (a fresh unseeded generator).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {x.shape}")
    pad = check_int(pad, "pad", 0)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n, _, h, w = x.shape
    offset_y = rng.integers(0, 2 * pad + 1, n)
    offset_x = rng.integers(0, 2 * pad + 1, n)
    rows = offset_y[:, None] + np.arange(h)            # (N, H): source rows in the padded image
    cols = offset_x[:, None] + np.arange(w)            # (N, W)
    if flip:
        mirrored = rng.random(n) < 0.5
        cols[mirrored] = cols[mirrored, ::-1]
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # one gather with broadcast (N,1,1,1) (1,C,1,1) (N,1,H,1) (N,1,1,W) indexes: it is
    # cheaper than two take_along_axis passes, which materialise full-size index arrays
    return x[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


class RandomCropFlip:
    """A seeded augmenter: ``augment(x_batch)`` is :func:`random_crop_flip` with this object's
    ``pad``, ``flip`` and generator (``seed``: an int for a reproducible sequence, or None)."""

    def __init__(self, pad=4, flip=True, seed=None):
        self.pad = check_int(pad, "pad", 0)
        self.flip = bool(flip)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x):
        return random_crop_flip(x, self.pad, self.flip, self.rng)

    def __repr__(self):
        return f"RandomCropFlip(pad={self.pad}, flip={self.flip})"
