"""The pure, jitted functions of training: one train step, one eval step, the epoch shuffle.

The state is a plain pytree (`TrainState`), so one jit holds the whole step (forward, loss,
gradients, Optax update, metrics), the step can donate its input buffers, and Orbax saves and
restores the state as it is. A dataset held in memory sits on the device as uint8 and each step
gathers its batch by index, so nothing crosses the host per step; a streamed one arrives batch by
batch. Either way the step crops (`data.resize=crop`), augments (training only) and preprocesses
inside the jit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cnnexp.data.augment import Augment, augment_key
from cnnexp.data.geometry import View, crop_key
from cnnexp.data.preprocess import Preprocessing, apply_preprocessing
from cnnexp.training.losses import LossFn

# Running sums over the current epoch: [loss * examples, correct, examples].
SUMS_SIZE = 3


class TrainState(NamedTuple):
    params: Any
    model_state: Any  # every non-parameter variable: batch statistics, RNG counters
    opt_state: Any
    step: jax.Array
    epoch_sums: jax.Array
    # The first step whose loss was not finite (-1: none). From then on updates are skipped,
    # so the state stays the last good one.
    nonfinite_step: jax.Array
    # The exponential moving average of the parameters (trainer.ema_decay; None: off), which
    # evaluation and checkpoints' readers use in place of `params`.
    ema_params: Any = None


# trainer.precision -> the dtype of the forward and backward passes; parameters, optimizer state,
# batch statistics and the loss stay float32 (bfloat16 has float32's range: no loss scaling).
COMPUTE_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}


def cast_floats(tree: Any, dtype: Any) -> Any:
    """`tree` with every floating-point leaf cast to `dtype` (integer leaves, RNG keys as they are)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def evaluated_params(state: TrainState) -> Any:
    """The parameters evaluation uses: the moving average when one is kept."""
    return state.params if state.ema_params is None else state.ema_params


def init_state(model: nnx.Module, tx: optax.GradientTransformation, *,
               ema: bool = False) -> tuple[nnx.GraphDef, TrainState]:
    """Split `model` into its static graph and a fresh training state (with a moving average of
    the parameters if `ema`)."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        epoch_sums=jnp.zeros((SUMS_SIZE,), jnp.float32),
        nonfinite_step=jnp.full((), -1, jnp.int32),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )
    return graphdef, state


def to_pixels(images: jax.Array) -> jax.Array:
    """uint8 NHWC images to float32 pixels in [0, 1], where augmentation and preprocessing start."""
    return images.astype(jnp.float32) / 255.0


def metric_sums(logits: jax.Array, labels: jax.Array, losses: jax.Array, weights: jax.Array) -> jax.Array:
    """[loss sum, correct, examples] of one batch, each example counted with its weight (0: padding)."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.stack([jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)])


def make_train_step(
    train_graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    loss: LossFn,
    augment: Augment | None = None,
    view: View | None = None,
    seed: int = 0,
    precision: str = "float32",
    ema_decay: float | None = None,
):
    """`step(state, images, labels, preprocessing, batch_index) -> state` on one batch of uint8
    images: cropped by `view` and augmented by `augment` (if any) with draws from (`seed`,
    state.step), computed in `precision`. `batch_index` 0 starts the epoch's metric sums."""
    compute_dtype = COMPUTE_DTYPES[precision]

    def step(state: TrainState, images, y, preprocessing: Preprocessing, batch_index) -> TrainState:
        pixels = to_pixels(images)
        if view is not None:
            pixels = view(crop_key(seed, state.step), pixels)
        if augment is not None:
            pixels = augment(augment_key(seed, state.step), pixels)
        x = apply_preprocessing(preprocessing, pixels)

        def mean_loss(params):
            # copy=True: fresh Variables owned by this trace, so batch norm may update them here.
            model = nnx.merge(train_graphdef, cast_floats(params, compute_dtype), state.model_state, copy=True)
            logits = model(x.astype(compute_dtype)).astype(jnp.float32)
            losses = loss(logits, y)
            _, _, new_model_state = nnx.split(model, nnx.Param, ...)
            # Batch statistics keep their float32 dtype whatever precision computed them.
            new_model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_model_state, state.model_state)
            return losses.mean(), (logits, losses, new_model_state)

        (batch_loss, (logits, losses, new_model_state)), grads = jax.value_and_grad(mean_loss, has_aux=True)(
            state.params
        )
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        new_ema = None if ema_decay is None else optax.incremental_update(new_params, state.ema_params, 1 - ema_decay)

        finite = jnp.isfinite(batch_loss) & (state.nonfinite_step < 0)
        keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        sums = jnp.where(batch_index == 0, 0.0, state.epoch_sums)
        batch_sums = metric_sums(logits, y, losses, jnp.ones_like(losses))
        return TrainState(
            params=keep_if_finite(new_params, state.params),
            model_state=keep_if_finite(new_model_state, state.model_state),
            opt_state=keep_if_finite(new_opt_state, state.opt_state),
            step=state.step + 1,
            epoch_sums=sums + batch_sums,
            nonfinite_step=jnp.where(
                jnp.isfinite(batch_loss) | (state.nonfinite_step >= 0), state.nonfinite_step, state.step + 1
            ),
            ema_params=None if new_ema is None else keep_if_finite(new_ema, state.ema_params),
        )

    return step


def gathering(step: Callable[..., TrainState], batch_size: int,
              batch_sharding: jax.sharding.Sharding | None = None) -> Callable[..., TrainState]:
    """`step` fed from a dataset on the device: `gathered(state, images, labels, preprocessing,
    order, batch_index)` takes batch `batch_index` of the shuffled `order` from the whole split.
    With `batch_sharding` the batch is split across devices (data parallel: the compiler inserts
    the gradient all-reduce); the images themselves stay replicated."""

    def gathered(state: TrainState, images, labels, preprocessing: Preprocessing, order, batch_index) -> TrainState:
        indices = jax.lax.dynamic_slice_in_dim(order, batch_index * batch_size, batch_size)
        if batch_sharding is not None:
            indices = jax.lax.with_sharding_constraint(indices, batch_sharding)
        return step(state, images[indices], labels[indices], preprocessing, batch_index)

    return gathered


# XLA:CPU runs every local device's share of a step on one pool of threads (one per core) and admits
# at most 32 queued programs per device. With collectives between devices of one process, a loop
# that dispatches 32 steps ahead can leave every thread waiting for a device whose share cannot
# start (jax 0.10.2, 2 CPU devices on 2 cores: a rendezvous abort after 40 s, in 2 of 3 LeNet runs on
# Fashion-MNIST). Waiting for the state every this many steps keeps each queue short.
CPU_COLLECTIVE_STEPS_AHEAD = 8


def _steps_ahead_limit(state: TrainState) -> int | None:
    """CPU_COLLECTIVE_STEPS_AHEAD for a state replicated over several CPU devices of this process."""
    devices = jax.tree.leaves(state)[0].sharding.addressable_devices
    if len(devices) > 1 and next(iter(devices)).platform == "cpu":
        return CPU_COLLECTIVE_STEPS_AHEAD
    return None


class LeafStep:
    """A train step jitted over the leaves of its `TrainState` (donated): `step(leaves, ...) -> leaves`.

    Calling a jitted function flattens its arguments and unflattens its results on every call, and
    nnx's `State` and `Variable` nodes do that in Python (tenths of a millisecond per step, which on
    a 2-core machine the device work cannot hide: ~5% of a LeNet step); a list of arrays stays on
    jit's C++ path. `state()` and `leaves()` convert where the loop reads or saves the state.
    On several CPU devices of one process it waits for every CPU_COLLECTIVE_STEPS_AHEAD-th step."""

    def __init__(self, step: Callable[..., TrainState], state: TrainState):
        self._treedef = jax.tree.structure(state)
        self._steps_ahead, self._calls = _steps_ahead_limit(state), 0

        def on_leaves(leaves: list[jax.Array], *args: Any) -> list[jax.Array]:
            new_state = step(jax.tree.unflatten(self._treedef, leaves), *args)
            if jax.tree.structure(new_state) != self._treedef:
                raise TypeError(f"the train step changed its state's structure: {jax.tree.structure(new_state)}")
            return jax.tree.leaves(new_state)

        self._jitted = jax.jit(on_leaves, donate_argnums=0)
        self._compiled: Any = None

    def leaves(self, state: TrainState) -> list[jax.Array]:
        return jax.tree.leaves(state)

    def state(self, leaves: list[jax.Array]) -> TrainState:
        return jax.tree.unflatten(self._treedef, leaves)

    def lower(self, state: TrainState, *args: Any) -> jax.stages.Lowered:
        return self._jitted.lower(self.leaves(state), *args)

    def compile(self, state: TrainState, *args: Any) -> LeafStep:
        """Compile for these arguments' shapes once; later calls never trace again."""
        self._compiled = self.lower(state, *args).compile()
        return self

    def __call__(self, leaves: list[jax.Array], *args: Any) -> list[jax.Array]:
        leaves = self._compiled(leaves, *args)
        if self._steps_ahead:
            self._calls += 1
            if self._calls % self._steps_ahead == 0:
                jax.block_until_ready(leaves)
        return leaves


def make_eval_step(eval_graphdef: nnx.GraphDef, *, batch_size: int, loss: LossFn, precision: str = "float32",
                   tta_flip: bool = False, view: View | None = None,
                   batch_sharding: jax.sharding.Sharding | None = None):
    """`step(sums, params, model_state, images, labels, preprocessing, count, start) -> sums` over
    the batch of `images` starting at `start`, cropped by `view` (the centre window) but never
    augmented; with `tta_flip` the logits are the mean over each image and its mirror image
    (test-time augmentation).

    `images` are padded to a whole number of batches; examples at or past `count` are masked.
    """
    compute_dtype = COMPUTE_DTYPES[precision]

    def step(sums, params, model_state, images, labels, preprocessing: Preprocessing, count, start):
        batch = jax.lax.dynamic_slice_in_dim(images, start, batch_size)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        pixels = to_pixels(batch)
        if view is not None:
            pixels = view(None, pixels)
        x = apply_preprocessing(preprocessing, pixels).astype(compute_dtype)
        y = jax.lax.dynamic_slice_in_dim(labels, start, batch_size)
        model = nnx.merge(eval_graphdef, cast_floats(params, compute_dtype), model_state)
        logits = model(x).astype(jnp.float32)
        if tta_flip:
            logits = (logits + model(x[:, :, ::-1]).astype(jnp.float32)) / 2
        weights = ((start + jnp.arange(batch_size)) < count).astype(jnp.float32)
        return sums + metric_sums(logits, y, loss(logits, y), weights)

    return step


def epoch_order(key: jax.Array, epoch: jax.Array, size: int) -> jax.Array:
    """The shuffled order of the training examples in `epoch`: a function of (seed, epoch) only,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), size).astype(jnp.int32)
