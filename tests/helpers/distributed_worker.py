"""One process of a tiny data-parallel training run for tests/training/test_distributed.py.

    python distributed_worker.py OUT_DIR                      # one process (all its devices)
    python distributed_worker.py OUT_DIR COORD NPROC PID      # trainer.distributed keys given
    python distributed_worker.py OUT_DIR slurm                # from (fake) Slurm variables

Joins the run through cnnexp.training.distributed, trains a small conv net with SGD + momentum on
fixed data for a few steps, each global batch split across the processes (process_shard rows,
global_batch), and writes process_<id>.npz: the losses, the final parameters (host_value) and
what agree_on returned. A script, not a test module: JAX's distributed state is per process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
from omegaconf import OmegaConf

from cnnexp.training import distributed

STEPS, GLOBAL_BATCH = 5, 16
INIT_TIMEOUT_S = 30  # a process that never connects fails the run quickly


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    keys = {"coordinator": None, "num_processes": None, "process_id": None}
    environ: dict[str, str] = {}
    if argv[1:] == ["slurm"]:
        environ = dict(os.environ)
    elif len(argv) == 4:
        keys = {"coordinator": argv[1], "num_processes": int(argv[2]), "process_id": int(argv[3])}
    spec = distributed.distributed_spec(OmegaConf.create({"distributed": keys}), environ)
    joined = distributed.initialize(spec, timeout_s=INIT_TIMEOUT_S)
    assert distributed.initialize(spec) == joined  # a second call changes nothing

    import optax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated, batch = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
            self.linear = nnx.Linear(4 * 8 * 8, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv(x))
            return self.linear(x.reshape(x.shape[0], -1))

    graphdef, params = nnx.split(Net(nnx.Rngs(0)), nnx.Param)
    tx = optax.sgd(0.1, momentum=0.9)
    # A typed PRNG key rides along, as in cnnexp's train state: jax.device_put refuses those
    # for a sharding over other processes' devices, distributed.replicate does not.
    state = distributed.replicate((params, tx.init(params), jax.random.key(0)), replicated)

    @jax.jit
    def step(state, x, y):
        params, opt_state, key = state

        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, jax.random.fold_in(key, 1)), loss

    rng = np.random.default_rng(0)
    images = rng.normal(size=(STEPS * GLOBAL_BATCH, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, size=STEPS * GLOBAL_BATCH).astype(np.int32)
    rows = distributed.process_shard(GLOBAL_BATCH)
    assert rows == distributed.process_shard(GLOBAL_BATCH, batch), (rows, distributed.process_shard(GLOBAL_BATCH, batch))
    losses = []
    for i in range(STEPS):
        start = i * GLOBAL_BATCH
        local = (images[start:start + GLOBAL_BATCH][rows], labels[start:start + GLOBAL_BATCH][rows])
        x, y = distributed.global_batch(local, batch)
        state, loss = step(state, x, y)
        losses.append(loss)

    params, _, key = distributed.host_value(state)
    agreed = distributed.agree_on(f"run-folder-of-process-{jax.process_index()}")
    flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(out / f"process_{jax.process_index()}.npz", losses=np.array(distributed.host_value(losses)),
             key=key, **flat)
    (out / f"process_{jax.process_index()}.json").write_text(json.dumps({
        "agreed": agreed, "is_main": distributed.is_main_process(), "rows": [rows.start, rows.stop],
        "process_count": jax.process_count(), "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(), "joined": joined,
        "spec": None if spec is None else [spec.coordinator, spec.num_processes, spec.process_id, spec.cluster],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
