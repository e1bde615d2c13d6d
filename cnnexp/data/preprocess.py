"""`data.preprocess`: the fixed transform from pixels to the inputs a model sees (source text 002:
mean subtraction, normalization, PCA and whitening).

It is fitted on the training split only (validation and test images never shape it), saved in
the run folder before training starts (`runs.layout.PREPROCESSING_FILE`), and read back from
there by resume, evaluate and visualize, so every one of them feeds the model exactly what it
was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from cnnexp.checks import check_values, is_number
from cnnexp.errors import RunFolderWriteError, UserError

# none: pixels in [0, 1]; center: minus the per-channel mean; standardize: per-channel mean 0 and
# std 1; pca: decorrelated principal components; zca: whitened images that still look like images.
PREPROCESSING = ("none", "center", "standardize", "pca", "zca")
_CHUNK = 4096  # images per covariance update: bounds the float64 copy (CIFAR: 100 MB a chunk)
_CHUNK_PIXELS = 1 << 22  # pixels per chunk of the channel statistics: 32 MB of float64 per channel


@partial(jax.tree_util.register_dataclass, data_fields=("mean", "std", "matrix"), meta_fields=("kind",))
@dataclass(frozen=True)
class Preprocessing:
    """inputs = (pixels - mean) / std, then, for pca and zca, each image flattened times `matrix`^T.

    A pytree whose `kind` is static, so it is an argument of the jitted steps rather than a constant
    baked into them (a CIFAR whitening matrix is 37 MB).
    """

    kind: str
    mean: np.ndarray  # broadcasts against HWC: per channel (C,) or per pixel (H, W, C)
    std: np.ndarray  # broadcasts against HWC
    matrix: np.ndarray | None = None  # D x D, D = H * W * C (pca, zca)


def validate_preprocess_options(data_cfg: DictConfig) -> None:
    """data.preprocess and data.whitening_epsilon, checked before any data is loaded."""
    if data_cfg.preprocess not in PREPROCESSING:
        raise UserError(f"invalid data.preprocess={data_cfg.preprocess!r}: choose one of {', '.join(PREPROCESSING)}")
    check_values([("data.whitening_epsilon", data_cfg.whitening_epsilon, lambda v: is_number(v) and v > 0,
                   "a number > 0 (a variance in [0, 1] pixel units)")])


def fit_preprocessing(kind: str, images: np.ndarray, epsilon: float | None = None) -> Preprocessing:
    """Fit `kind` on uint8 NHWC training images (statistics in float64 on pixels in [0, 1]);
    `epsilon` is for pca and zca only.

    pca and zca use the covariance of whole flattened images, eigendecomposed with
    numpy.linalg.eigh (Fashion-MNIST, D = 784: a second; CIFAR-10, D = 3072: about a minute on
    2 CPU cores, mostly the covariance; once per run); `epsilon` is added to every eigenvalue, so
    directions with a variance well below it are damped instead of amplified into noise. pca's
    output has no spatial layout any more (position i holds the i-th principal component, largest
    first, in row-major order), which is what a conv net relying on locality is tested against.
    """
    if kind not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {kind!r}; choose one of {', '.join(PREPROCESSING)}")
    channels = images.shape[-1]
    ones = np.ones(channels, np.float32)
    if kind == "none":
        return Preprocessing(kind, np.zeros(channels, np.float32), ones)
    if kind in ("center", "standardize"):
        mean, std = _channel_moments(images)
        return Preprocessing(kind, mean.astype(np.float32),
                             np.maximum(std, 1e-6).astype(np.float32) if kind == "standardize" else ones)
    if epsilon is None or epsilon <= 0:
        raise ValueError(f"{kind} needs an epsilon > 0, got {epsilon!r}")
    mean, matrix = _whitening(images.reshape(len(images), -1), kind, epsilon)
    return Preprocessing(kind, mean.reshape(images.shape[1:]).astype(np.float32), ones, matrix.astype(np.float32))


def _pixel_chunks(images: np.ndarray) -> Iterator[np.ndarray]:
    """`images` as (pixels, channels) float64 chunks in [0, 1] of at most _CHUNK_PIXELS rows each, so a
    fit never holds a float64 copy of the whole split (8x its uint8 size: 14 GB for 17k 128x128 photos)."""
    flat = images.reshape(-1, images.shape[-1])
    for start in range(0, len(flat), _CHUNK_PIXELS):
        yield flat[start:start + _CHUNK_PIXELS].astype(np.float64) / 255.0


def _channel_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images, two passes over float64 chunks."""
    count = images.size // images.shape[-1]
    mean = sum(chunk.sum(axis=0) for chunk in _pixel_chunks(images)) / count
    variance = sum(np.square(chunk - mean).sum(axis=0) for chunk in _pixel_chunks(images)) / count
    return mean, np.sqrt(variance)


def _whitening(flat: np.ndarray, kind: str, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and the pca (diag(1/sqrt(S + eps)) U^T) or zca (U diag(1/sqrt(S + eps)) U^T)
    matrix of the covariance U S U^T of flattened uint8 images."""
    mean = flat.mean(axis=0, dtype=np.float64) / 255.0
    covariance = np.zeros((flat.shape[1], flat.shape[1]))
    for start in range(0, len(flat), _CHUNK):
        centred = flat[start:start + _CHUNK] / 255.0 - mean
        covariance += centred.T @ centred
    variances, vectors = np.linalg.eigh(covariance / len(flat))
    variances, vectors = np.maximum(variances[::-1], 0.0), vectors[:, ::-1]  # largest first; no rounding below 0
    pca = vectors.T / np.sqrt(variances + epsilon)[:, None]
    return mean, pca if kind == "pca" else vectors @ pca


def apply_preprocessing(prep: Preprocessing, pixels: jax.Array) -> jax.Array:
    """NHWC pixels in [0, 1] (float) to model inputs; runs inside the jitted steps."""
    x = (pixels - prep.mean) / prep.std
    if prep.matrix is None:
        return x
    flat = jnp.matmul(x.reshape(x.shape[0], -1), prep.matrix.T, precision=jax.lax.Precision.HIGHEST)
    return flat.reshape(x.shape)


def save_preprocessing(target: Path, prep: Preprocessing) -> None:
    """Store `prep` as an .npz file (via a temporary file, so a kill never leaves half of it)."""
    temporary = target.with_suffix(".tmp.npz")
    arrays = {"kind": np.array(prep.kind), "mean": prep.mean, "std": prep.std}
    if prep.matrix is not None:
        arrays["matrix"] = prep.matrix
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise RunFolderWriteError(target, error) from error


def load_preprocessing(path: Path) -> Preprocessing | None:
    """The preprocessing stored at `path`, bit for bit; None when there is none (a run from before
    preprocessing was stored)."""
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return Preprocessing(str(stored["kind"]), stored["mean"], stored["std"],
                             stored["matrix"] if "matrix" in stored else None)
