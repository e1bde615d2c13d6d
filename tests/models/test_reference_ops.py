"""The textbook convolution and max pooling (cnnexp.models.reference_ops) equal XLA's own, in
values and in gradients, on random inputs.

Relative error: max|a - b| / max|b| per array, b the library's result (worst seen on CPU: 4e-7).
Matrix products and convolutions are pinned to full float32 precision: XLA:CPU computes that
anyway (same errors without the pin), but a backend whose default is lower (TF32 on recent
GPUs) would miss 1e-5.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnexp.models import create_model
from cnnexp.models.layers import kernel_window
from cnnexp.models.reference_ops import im2col_conv2d, masked_max_pool

TOLERANCE = 1e-5
DIMENSIONS = ("NHWC", "HWIO", "NHWC")

# Every (stride, kernel size) pair once; paddings, channels and batch sizes cycle through theirs.
STRIDES, KERNELS = (1, 2, 3), (1, 2, 3, 5)
PADDINGS = (((0, 0), (0, 0)), ((1, 1), (1, 1)), ((2, 2), (2, 2)), ((0, 1), (1, 0)))
CHANNELS, BATCHES = (1, 3, 8), (1, 2, 3)
CONV_CASES = [
    (stride, kernel, PADDINGS[(i + j) % 4], CHANNELS[(i + j) % 3], CHANNELS[(i + 2 * j + 1) % 3], BATCHES[j % 3])
    for i, stride in enumerate(STRIDES)
    for j, kernel in enumerate(KERNELS)
] + [  # Inception-ResNet's one-dimensional kernels, (rows, columns)
    (1, (1, 7), ((0, 0), (3, 3)), 3, 8, 2), (2, (3, 1), ((1, 1), (0, 0)), 8, 3, 1),
]
# Windows 2 and 3, strides 1 and 2 overlap, stride 3 leaves gaps; padding smaller than the window.
POOL_CASES = [
    (2, 1, PADDINGS[0]), (2, 2, PADDINGS[1]), (2, 3, PADDINGS[3]),
    (3, 1, PADDINGS[1]), (3, 2, PADDINGS[3]), (3, 2, PADDINGS[2]), (3, 3, PADDINGS[0]),
]


@pytest.fixture(autouse=True)
def full_float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def conv_id(case) -> str:
    stride, kernel, ((top, bottom), (left, right)), cin, cout, batch = case
    rows, cols = kernel_window(kernel)
    return f"stride{stride}-k{rows}x{cols}-pad{top}{bottom}{left}{right}-c{cin}to{cout}-n{batch}"


def pool_id(case) -> str:
    window, stride, ((top, bottom), (left, right)) = case
    return f"window{window}-stride{stride}-pad{top}{bottom}{left}{right}"


def relative_error(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_close(actual, expected, what: str) -> None:
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.shape == b.shape, what
        assert relative_error(a, b) < TOLERANCE, f"{what}: relative error {relative_error(a, b):.2e}"


def library_conv(x, kernel, stride, pads):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads, dimension_numbers=DIMENSIONS)


def library_max_pool(x, window, stride, pads):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                                 ((0, 0), *pads, (0, 0)))


def random_cotangent(rng: np.random.Generator, f, *args) -> np.ndarray:
    return rng.standard_normal(jax.eval_shape(f, *args).shape, np.float32)


def value_and_grads(f, cotangent, *args):
    """f(*args) and its gradients by jax.vjp for `cotangent`, as one jitted program (inputs are
    NumPy arrays): compiling the many small operations one by one would take most of the time."""

    def run(cotangent, *args):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(cotangent)

    return jax.jit(run)(cotangent, *args)


@functools.cache
def conv_results(case):
    """Random inputs for a conv case, a random cotangent, and both implementations' output and
    gradients (input, kernel); the input is non-square, so rows and columns cannot mix."""
    stride, kernel, pads, cin, cout, batch = case
    rng = np.random.default_rng(CONV_CASES.index(case))
    x = rng.standard_normal((batch, 9, 8, cin), np.float32)
    w = rng.standard_normal((*kernel_window(kernel), cin, cout), np.float32)
    ours, lib = (lambda x, w: im2col_conv2d(x, w, stride, pads)), (lambda x, w: library_conv(x, w, stride, pads))
    cotangent = random_cotangent(rng, lib, x, w)
    return x, w, cotangent, value_and_grads(ours, cotangent, x, w), value_and_grads(lib, cotangent, x, w)


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_id)
def test_im2col_conv_equals_library_conv_with_gradients(case):
    _, _, _, (ours, our_grads), (lib, lib_grads) = conv_results(case)
    assert_close(ours, lib, "output")
    assert_close(our_grads, lib_grads, "gradients (input, kernel)")


def full_convolution_with_rotated_kernel(grad_out, kernel, stride, pads, input_hw):
    """The input gradient as source text 003 writes it: the output gradient, spread out by the
    stride, fully convolved with the kernel rotated 180 degrees, its in/out channels swapped.
    (lax "convolution" is cross-correlation, as in the forward pass.) Padding k-1-p trims what
    the forward padding added; rows and columns no window reached get zeros at the high end."""
    rotated = np.flip(kernel, (0, 1)).swapaxes(2, 3)
    padding = []
    for size, k, (low, high), out in zip(input_hw, kernel.shape[:2], pads, grad_out.shape[1:3], strict=True):
        unreached = size + low + high - k - (out - 1) * stride
        padding.append((k - 1 - low, k - 1 - high + unreached))
    return jax.lax.conv_general_dilated(grad_out, rotated, (1, 1), padding, lhs_dilation=(stride, stride),
                                        dimension_numbers=DIMENSIONS)


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_id)
def test_conv_input_gradient_is_full_convolution_with_rotated_kernel(case):
    stride, _, pads, *_ = case
    x, w, cotangent, (_, (our_grad, _)), (_, (lib_grad, _)) = conv_results(case)
    expected = full_convolution_with_rotated_kernel(cotangent, w, stride, pads, x.shape[1:3])
    assert_close(our_grad, expected, "im2col conv input gradient")
    assert_close(lib_grad, expected, "library conv input gradient")


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_masked_max_pool_equals_reduce_window_with_gradients(case):
    window, stride, pads = case
    # Distinct values in random order: every window has exactly one maximum.
    x = np.random.default_rng(POOL_CASES.index(case)).permutation(2 * 9 * 8 * 3).reshape(2, 9, 8, 3).astype(np.float32)
    ours, lib = (lambda x: masked_max_pool(x, window, stride, pads)), (lambda x: library_max_pool(x, window, stride, pads))
    cotangent = random_cotangent(np.random.default_rng(0), lib, x)
    ours, (our_grad,) = value_and_grads(ours, cotangent, x)
    lib, (lib_grad,) = value_and_grads(lib, cotangent, x)
    assert_close(ours, lib, "output")
    assert_close(our_grad, lib_grad, "input gradient")


def test_max_pool_gradient_is_the_mask_of_window_maxima():
    x = jnp.array([
        [1, 5, 2, 0],
        [3, 4, 7, 1],
        [9, 2, 0, 6],
        [8, 1, 3, 2],
    ], jnp.float32)[None, :, :, None]
    mask = np.array([
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [1, 0, 0, 1],
        [0, 0, 0, 0],
    ], np.float32)[None, :, :, None]
    pool = lambda x: masked_max_pool(x, 2, 2, ((0, 0), (0, 0)))  # noqa: E731
    np.testing.assert_array_equal(pool(x)[0, :, :, 0], [[5, 7], [9, 6]])
    np.testing.assert_array_equal(jax.grad(lambda x: pool(x).sum())(x), mask)


def test_lenet_with_reference_ops_equals_library_lenet():
    rng = np.random.default_rng(3)
    x, cotangent = rng.standard_normal((4, 28, 28, 1), np.float32), rng.standard_normal((4, 10), np.float32)

    def logits_and_param_grads(options):
        model = create_model("lenet", options, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return value_and_grads(lambda p: nnx.merge(graphdef, p, rest)(x), cotangent, params)

    reference = logits_and_param_grads({"conv_impl": "im2col", "pool_impl": "reference"})
    library = logits_and_param_grads({})
    assert_close(reference[0], library[0], "logits")
    assert_close(reference[1], library[1], "parameter gradients")
