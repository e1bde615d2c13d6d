"""Reading back what the trackers wrote, with their own libraries: an MLflow store through MLflow's
client, a W&B offline run through its transaction log (`run-<id>.wandb`, the file `wandb sync`
uploads) and TensorBoard's event files, each parsed with the library's own protobuf messages."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient
from tensorboardX.proto import event_pb2, plugin_hparams_pb2
from wandb.proto import wandb_internal_pb2

# The .wandb file: a header (b":W&B", magic 0xBEE1, version 0), then LevelDB's log format: 32 KiB
# blocks of chunks, each a header (CRC32C, length, type) and up to the block's end of a record.
_HEADER, _CHUNK_HEADER, _BLOCK = struct.Struct("<4sHB"), struct.Struct("<IHB"), 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def mlflow_client(outputs: Path) -> MlflowClient:
    """A client of the default store of the runs under `outputs` (logger.mlflow.store_dir)."""
    return MlflowClient(tracking_uri=f"sqlite:///{(outputs / 'mlruns' / 'mlflow.db').absolute()}")


def tracker_ids(run: Path) -> dict[str, dict[str, str]]:
    return json.loads((run / "trackers.json").read_text())


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of a W&B transaction log, in order."""
    data = path.read_bytes()
    ident, magic, version = _HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    position, pending = _HEADER.size, b""
    while position + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # the block's padding
            position += left_in_block
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:  # the rest of the block is zeros
            position += left_in_block
            continue
        start = position + _CHUNK_HEADER.size
        pending += data[start:start + length]
        position = start + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_runs(outputs: Path, run_id: str) -> list[Path]:
    """The transaction logs of the W&B offline run `run_id` under `outputs` (logger.wandb.dir): one
    per start, a resumed run has two; oldest first. Their folders are `offline-run-<time>-<id>`, and
    `-1`, `-2`... after it for those started in the same second as the first."""
    def started(log: Path) -> tuple[str, int]:
        _, _, time, _, *suffix = log.parent.name.split("-")  # W&B's run ids have no "-"
        return time, int(suffix[0]) if suffix else 0

    return sorted((outputs / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"), key=started)


def wandb_run(path: Path, wait_s: float = 30) -> dict:
    """One offline W&B run read back: its run record (id, project, group, config), its history
    (step -> {key: value}), its summary updates, and the files it uploads. W&B's service process
    writes the log after the run's `finish` returns: read again (up to `wait_s`) until the run
    record is there."""
    deadline = time.monotonic() + wait_s
    while (found := _read_wandb_run(path))["run"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _read_wandb_run(path: Path) -> dict:
    found = {"run": None, "history": {}, "summary": {}, "files": []}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["run"] = record.run
        elif kind == "history":
            items = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            found["history"].setdefault(record.history.step.num, {}).update(
                {key: value for key, value in items.items() if not key.startswith("_")})
        elif kind == "summary":
            for item in record.summary.update:
                found["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "files":
            found["files"] += [file.path for file in record.files.files]
    return found


def tensorboard_events(run: Path) -> dict:
    """The run's TensorBoard events (TFRecord files: length, its CRC, the Event, its CRC): scalars
    (tag -> [(step, value)]), texts (tag -> text) and the HParams tab's hyperparameters."""
    found = {"scalars": {}, "texts": {}, "hparams": {}}
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        data, position = path.read_bytes(), 0
        while position < len(data):
            (length,) = struct.unpack_from("<Q", data, position)
            event = event_pb2.Event()
            event.ParseFromString(data[position + 12:position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if plugin.plugin_name == "hparams":
                    content = plugin_hparams_pb2.HParamsPluginData.FromString(plugin.content)
                    for key, hparam in content.session_start_info.hparams.items():
                        found["hparams"][key] = getattr(hparam, hparam.WhichOneof("kind"))
                elif value.HasField("tensor") and plugin.plugin_name == "text":
                    found["texts"][value.tag] = value.tensor.string_val[0].decode()
                elif value.HasField("simple_value"):
                    found["scalars"].setdefault(value.tag, []).append((event.step, value.simple_value))
    return found
