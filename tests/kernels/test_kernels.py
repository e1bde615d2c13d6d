"""cnnexp's oneDNN kernels against XLA's own operations: values and both gradients on fresh random
inputs over the geometries the zoo uses and more, under jit, vmap and donation, bit-for-bit
repeatable, and the fallback when the library cannot load."""

from __future__ import annotations

import logging
import platform
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.commands import TINY, read_summary, run_dirs
from omegaconf import OmegaConf

from cnnexp import kernels
from cnnexp.kernels import library
from cnnexp.models.layers import pool2d as layers_pool2d
from cnnexp.models.layers import resolve_impl, resolve_padding
from cnnexp.runs.fingerprint import config_fingerprint

RTOL = 1e-4  # float32: relative to the largest magnitude of the reference


def relative_error(actual: jax.Array, expected: jax.Array) -> float:
    scale = float(jnp.max(jnp.abs(expected)))
    return float(jnp.max(jnp.abs(actual - expected))) / (scale if scale else 1.0)


def normal(seed: int, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def seed_of(case: tuple) -> int:
    """A fixed seed per test case (Python's own hash of strings changes between runs)."""
    return zlib.crc32(repr(case).encode())


def xla_conv(x, kernel, bias, geometry: kernels.ConvGeometry, relu: bool = False):
    y = jax.lax.conv_general_dilated(x, kernel, geometry.stride, geometry.pads, rhs_dilation=geometry.dilation,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=geometry.groups)
    y = y if bias is None else y + bias
    return jax.nn.relu(y) if relu else y


def test_the_kernels_load_where_cnnexp_builds_them():
    """CI and `make` install oneDNN from the registry: on Linux x86-64 a missing library is a bug."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("the kernels are built for Linux on x86-64 only")
    assert kernels.available(), "the oneDNN kernel library did not load"
    assert kernels.version().startswith("3.")


needs_kernels = pytest.mark.skipif(not kernels.available(), reason="oneDNN kernels unavailable")

# (batch, height, width, in channels, out channels, kernel, stride, pads, dilation, groups, bias, relu)
CONVOLUTIONS = [
    (3, 9, 11, 3, 8, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, False),  # "same" 3x3
    (2, 28, 28, 1, 6, 5, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, True, True),  # LeNet C1, fused ReLU
    (2, 12, 10, 6, 9, 5, (2, 3), ((0, 2), (1, 0)), (1, 1), 3, False, False),  # asymmetric, groups
    (1, 8, 8, 4, 4, 3, (1, 1), ((2, 2), (2, 2)), (2, 2), 2, True, False),  # dilated, grouped
    (4, 7, 7, 5, 7, 1, (2, 2), ((0, 0), (0, 0)), (1, 1), 1, True, False),  # 1x1 stride 2 (ResNet shortcut)
    (2, 32, 32, 3, 16, 7, (2, 2), ((3, 3), (3, 3)), (1, 1), 1, False, False),  # ImageNet-style stem
    (5, 6, 6, 16, 32, 3, (2, 2), ((1, 1), (1, 1)), (1, 1), 1, False, True),  # downsampling 3x3
    (2, 5, 9, 8, 8, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 8, True, False),  # depthwise
    (1, 4, 4, 2, 3, 4, (1, 1), ((1, 2), (2, 1)), (1, 1), 1, True, False),  # even kernel, uneven pads
]


@needs_kernels
@pytest.mark.parametrize("case", CONVOLUTIONS, ids=lambda c: f"n{c[0]}_{c[1]}x{c[2]}_{c[3]}to{c[4]}_k{c[5]}"
                         f"_s{c[6][0]}{c[6][1]}_d{c[8][0]}_g{c[9]}{'_bias' if c[10] else ''}{'_relu' if c[11] else ''}")
def test_convolution_and_both_gradients_equal_xla(case):
    n, h, w, cin, cout, k, stride, pads, dilation, groups, with_bias, relu = case
    geometry = kernels.ConvGeometry(stride, pads, dilation, groups)
    seed = seed_of(case)
    x, kernel = normal(seed, (n, h, w, cin)), normal(seed + 1, (k, k, cin // groups, cout))
    bias = normal(seed + 2, (cout,)) if with_bias else None
    weights = normal(seed + 3, geometry.output_shape(x.shape, kernel.shape))  # a loss that weighs every output

    ours = jax.jit(lambda x, kernel, bias: kernels.conv2d(x, kernel, bias, geometry, relu))(x, kernel, bias)
    assert ours.shape == weights.shape
    assert relative_error(ours, xla_conv(x, kernel, bias, geometry, relu)) < RTOL

    def loss(conv):
        return lambda x, kernel, bias: jnp.sum(jnp.tanh(conv(x, kernel, bias)) * weights)

    arguments = (0, 1, 2) if with_bias else (0, 1)
    got = jax.jit(jax.grad(loss(lambda *a: kernels.conv2d(*a, geometry, relu)), arguments))(x, kernel, bias)
    want = jax.grad(loss(lambda *a: xla_conv(*a, geometry, relu)), arguments)(x, kernel, bias)
    for name, g, r in zip(("input", "kernel", "bias"), got, want):
        assert relative_error(g, r) < RTOL, name


# (batch, height, width, channels, kind, window, stride, padding rule)
POOLS = [
    (2, 28, 28, 6, "max", 2, 2, "valid"),  # LeNet
    (3, 8, 9, 5, "max", 3, 2, "ceil"),  # odd sizes, ceil mode: the last window overhangs
    (2, 7, 7, 4, "max", 3, 1, "same"),  # Inception's branch pool
    (2, 9, 9, 3, "avg", 3, 2, "ceil"),
    (2, 6, 6, 3, "avg", 3, 1, "same"),  # padded pixels do not count in the average
    (4, 5, 5, 16, "avg", 2, 2, "ceil"),  # DenseNet transition, odd size
    (1, 3, 3, 2, "max", 2, 2, "ceil"),  # a map barely larger than the window
]


@needs_kernels
@pytest.mark.parametrize("case", POOLS, ids=lambda c: f"{c[4]}{c[5]}s{c[6]}_{c[1]}x{c[2]}_{c[7]}")
def test_pooling_and_its_gradient_equal_xla(case):
    n, h, w, c, kind, window, stride, padding = case
    pads = tuple(resolve_padding(padding, size, window, stride) for size in (h, w))
    # After a ReLU many windows tie at zero: the gradient must go where XLA's goes (the first).
    x = jax.nn.relu(normal(seed_of(case), (n, h, w, c)))

    def ours(x):
        return kernels.pool2d(x, kind, window, stride, pads)

    def xla(x):
        return layers_pool2d(x, kind, window, stride, pads, impl="library")

    assert relative_error(jax.jit(ours)(x), xla(x)) < RTOL
    weights = normal(1, xla(x).shape)
    got = jax.jit(jax.grad(lambda x: jnp.sum(ours(x) * weights)))(x)
    want = jax.grad(lambda x: jnp.sum(xla(x) * weights))(x)
    assert relative_error(got, want) < RTOL


def xla_batch_norm(x, scale, shift, epsilon):
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    return (x - mean) / jnp.sqrt(var + epsilon) * scale + shift, mean, var


@needs_kernels
@pytest.mark.parametrize("shape", [(16, 7, 5, 3), (128, 4, 4, 32), (20, 12)], ids=str)
def test_batch_norm_statistics_and_gradients_equal_xla(shape):
    x = normal(0, shape) * 3 + 1
    scale, shift = normal(1, shape[-1:]), normal(2, shape[-1:])
    ours = jax.jit(lambda *a: kernels.batch_norm(*a, 1e-5))(x, scale, shift)
    for got, want in zip(ours, xla_batch_norm(x, scale, shift, 1e-5)):
        assert relative_error(got, want) < RTOL
    weights = normal(3, shape)
    got = jax.jit(jax.grad(lambda *a: jnp.sum(kernels.batch_norm(*a, 1e-5)[0] * weights), (0, 1, 2)))(x, scale, shift)
    want = jax.grad(lambda *a: jnp.sum(xla_batch_norm(*a, 1e-5)[0] * weights), (0, 1, 2))(x, scale, shift)
    for name, g, r in zip(("input", "scale", "shift"), got, want):
        assert relative_error(g, r) < RTOL, name


@needs_kernels
def test_vmap_maps_each_slice_through_its_own_call():
    """As `cnnexp visualize` does for saliency: vmap over single images of per-image gradients."""
    geometry = kernels.ConvGeometry((1, 1), ((1, 1), (1, 1)))
    images, kernel = normal(0, (5, 1, 6, 6, 2)), normal(1, (3, 3, 2, 4))

    def score(image):
        y = kernels.pool2d(kernels.conv2d(image, kernel, None, geometry, True), "max", 2, 2, ((0, 0), (0, 0)))
        return jnp.sum(y**2)

    def xla_score(image):
        y = layers_pool2d(xla_conv(image, kernel, None, geometry, True), "max", 2, 2, ((0, 0), (0, 0)), "library")
        return jnp.sum(y**2)

    got = jax.jit(jax.vmap(jax.grad(score)))(images)
    want = jnp.stack([jax.grad(xla_score)(image) for image in images])
    assert relative_error(got, want) < RTOL


@needs_kernels
def test_a_donating_jitted_update_step_runs_and_repeats_bit_for_bit():
    """The train step's pattern: jit with donated state, gradients through conv, pool and batch norm."""
    geometry = kernels.ConvGeometry((1, 1), ((1, 1), (1, 1)))
    x = normal(0, (8, 10, 10, 3))

    def loss(params):
        y = kernels.conv2d(x, params["kernel"], params["bias"], geometry)
        y, _, _ = kernels.batch_norm(y, params["scale"], params["shift"], 1e-5)
        y = kernels.pool2d(jax.nn.relu(y), "max", 2, 2, ((0, 0), (0, 0)))
        return jnp.mean(y**2)

    def update(params):
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params))

    step = jax.jit(update, donate_argnums=0)

    def initial():
        return {"kernel": normal(1, (3, 3, 3, 4)), "bias": jnp.zeros(4), "scale": jnp.ones(4), "shift": jnp.zeros(4)}

    def run():
        params = initial()
        for _ in range(3):
            params = step(params)
        return jax.tree.map(np.asarray, params)

    first, second = run(), run()
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(loss(jax.tree.map(jnp.asarray, first))) < float(loss(initial()))


@needs_kernels
@pytest.mark.skipif(not (kernels.available() and kernels.supports(jnp.bfloat16)), reason="no bfloat16 kernels here")
def test_bfloat16_convolution_stays_close_to_float32():
    geometry = kernels.ConvGeometry((1, 1), ((1, 1), (1, 1)))
    x, kernel = normal(0, (4, 8, 8, 16)), normal(1, (3, 3, 16, 16))
    got = kernels.conv2d(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), None, geometry)
    assert got.dtype == jnp.bfloat16
    assert relative_error(got.astype(jnp.float32), xla_conv(x, kernel, None, geometry)) < 2e-2


def test_an_unloadable_library_falls_back_to_xla_with_one_warning(monkeypatch, caplog):
    """No library file (no compiler at install time, another OS): one warning, no crash, and
    `auto` means XLA's layers."""
    monkeypatch.setattr(library, "_kernel_library", lambda: (_ for _ in ()).throw(
        library.KernelsUnavailable("cnnexp's oneDNN kernels were not built")))
    library.load.cache_clear()
    kernels._bf16.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="cnnexp.kernels"):
            assert library.load() is None and library.load() is None
            assert not kernels.available()
            assert resolve_impl("auto", jnp.float32) == "library"
            y = layers_pool2d(jnp.ones((1, 4, 4, 1)), "max", 2, 2, ((0, 0), (0, 0)))
        assert y.shape == (1, 2, 2, 1)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "were not built" in warnings[0].getMessage()
    finally:
        monkeypatch.undo()
        library.load.cache_clear()
        kernels._bf16.cache_clear()


@pytest.mark.slow
def test_without_the_kernels_cnnexp_trains_on_xla_after_one_warning(cnnexp, tmp_path):
    """What a machine where the library cannot load sees, through the installed command."""
    result = cnnexp("train", *TINY, "trainer.epochs=1", env={**cnnexp.env, library.DISABLE_VARIABLE: "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr  # the log goes to the console, train.log too
    assert output.count("oneDNN kernels unavailable") == 1, output[-3000:]
    (run,) = run_dirs(tmp_path / "outputs")
    summary = read_summary(run)
    assert summary["status"] == "completed"
    assert summary["kernels"] == {"conv": "library", "pool": "library", "norm": "library"}
    assert summary["versions"]["onednn"] is None


def test_the_implementation_is_not_part_of_what_a_run_computes():
    """Checkpoints move between implementations, so resume=latest finds a run made with another."""
    base = OmegaConf.create({"model": {"name": "lenet", "conv_impl": "auto", "pool_impl": "auto", "norm_impl": "auto"},
                             "seed": 0})
    other = OmegaConf.merge(base, {"model": {"conv_impl": "library", "pool_impl": "reference", "norm_impl": "onednn"}})
    assert config_fingerprint(base) == config_fingerprint(other)
    assert config_fingerprint(base) != config_fingerprint(OmegaConf.merge(base, {"seed": 1}))
