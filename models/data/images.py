"""A small built-in image set and the augmentations of contrastive learning, as NumPy data code.

Nothing is downloaded: ``make_shapes(n, seed)`` draws grayscale images of six simple shapes, each
at a random position and size, with a random stroke width, ink intensity and background noise.
The labels exist only for the linear-probe evaluation; contrastive training never sees them.

``augment(images, rng, Augment())`` makes one random view per image. Two calls give the two views
of SimCLR. Each step is its own function with a documented distribution (tests check them):

    random_shift   translate by (dy, dx), each uniform in {-max_shift .. max_shift}, zero fill
                   (the "pad and random crop" of small-image augmentation)
    random_flip    mirror left-right with probability ``flip``
    jitter         v = (x - mean(x)) * c + mean(x) + b, c ~ U(1 - contrast, 1 + contrast),
                   b ~ U(-brightness, brightness), per image
    add_noise      v = x + N(0, noise_std^2) per pixel
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("disk", "ring", "square", "triangle", "plus", "cross")


def make_shapes(n: int, seed: int | np.random.Generator = 0, size: int = 16,
                noise_std: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images f32[n, size, size] in about [0, 1] and their labels i64[n] (balanced classes).

    The same seed gives the same images. A shape's radius is 20-30% of the side and its center is
    uniform over the positions where it fits whole.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    coords = np.arange(size, dtype=np.float64) + 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    images = np.empty((n, size, size), np.float32)
    for i, label in enumerate(labels):
        radius = rng.uniform(0.2 * size, 0.3 * size)
        cy, cx = rng.uniform(radius + 0.5, size - radius - 0.5, 2)
        stroke = rng.uniform(1.0, 2.0)
        ink = rng.uniform(0.6, 1.0)
        shape = _DRAW[CLASSES[label]](ys - cy, xs - cx, radius, stroke)
        images[i] = ink * shape + rng.normal(0.0, noise_std, (size, size))
    return images, labels


# -- shapes: coverage in [0, 1] from a signed distance (negative inside), anti-aliased by 1 px --
def _fill(sdf):
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _outline(sdf, stroke):
    return np.clip(0.5 + stroke / 2 - np.abs(sdf), 0.0, 1.0)


def _bars(dy, dx, radius, stroke):
    """The union of a horizontal and a vertical bar of half-length ``radius``, width ``stroke``."""
    horizontal = np.maximum(np.abs(dy) - stroke / 2, np.abs(dx) - radius)
    vertical = np.maximum(np.abs(dx) - stroke / 2, np.abs(dy) - radius)
    return _fill(np.minimum(horizontal, vertical))


def _triangle(dy, dx, radius, stroke):
    """A filled upward triangle: the intersection of three half-planes (y grows downwards)."""
    r = 0.9 * radius
    base = dy - r / 2
    left = (-np.sqrt(3) * dx - dy - r) / 2
    right = (np.sqrt(3) * dx - dy - r) / 2
    return _fill(np.maximum(base, np.maximum(left, right)))


_DRAW = {
    "disk": lambda dy, dx, r, s: _fill(np.hypot(dy, dx) - 0.8 * r),
    "ring": lambda dy, dx, r, s: _outline(np.hypot(dy, dx) - r, s),
    "square": lambda dy, dx, r, s: _outline(np.maximum(np.abs(dy), np.abs(dx)) - 0.8 * r, s),
    "triangle": _triangle,
    "plus": _bars,
    "cross": lambda dy, dx, r, s: _bars((dy + dx) / np.sqrt(2), (dx - dy) / np.sqrt(2), r, s),
}


# -- augmentations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """The augmentation distribution (see the module docstring); zero turns a step off."""
    max_shift: int = 3
    flip: float = 0.5
    contrast: float = 0.3
    brightness: float = 0.1
    noise_std: float = 0.05


def augment(images: np.ndarray, rng: np.random.Generator, aug: Augment = Augment()) -> np.ndarray:
    """One random view of each image of ``images`` [n, H, W] (float32)."""
    v = random_shift(images, rng, aug.max_shift)
    v = random_flip(v, rng, aug.flip)
    v = jitter(v, rng, aug.contrast, aug.brightness)
    return add_noise(v, rng, aug.noise_std).astype(np.float32)


def random_shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Translate each image by its own (dy, dx) in {-max_shift .. max_shift}^2, filling with 0."""
    if max_shift == 0:
        return images.copy()
    n, h, w = images.shape
    m = max_shift
    padded = np.pad(images, ((0, 0), (m, m), (m, m)))
    top, left = rng.integers(0, 2 * m + 1, (2, n))  # the crop's corner in the padded image
    rows = top[:, None, None] + np.arange(h)[None, :, None]
    cols = left[:, None, None] + np.arange(w)[None, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(images: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Mirror each image left-right with probability ``p``."""
    flip = rng.random(len(images)) < p
    return np.where(flip[:, None, None], images[:, :, ::-1], images)


def jitter(images: np.ndarray, rng: np.random.Generator, contrast: float, brightness: float) -> np.ndarray:
    """Scale each image's deviation from its mean by c and shift it by b (see the docstring)."""
    n = len(images)
    c = rng.uniform(1 - contrast, 1 + contrast, n)[:, None, None]
    b = rng.uniform(-brightness, brightness, n)[:, None, None]
    mean = images.mean(axis=(1, 2), keepdims=True)
    return (images - mean) * c + mean + b


def add_noise(images: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Add independent Gaussian noise of standard deviation ``std`` to every pixel."""
    return images + rng.normal(0.0, std, images.shape) if std else images.copy()


def two_views(images: np.ndarray, rng: np.random.Generator,
              aug: Augment = Augment()) -> dict[str, np.ndarray]:
    """The contrastive loss graph's inputs: two independent views of the same images."""
    return {"view1": augment(images, rng, aug), "view2": augment(images, rng, aug)}
