"""One training run: from a composed config to a finished run folder.

The loop talks to the device only at log points and epoch ends; between them it just
dispatches the compiled step on the batches of its feed (`training.feeds`: the split on the
device, or streamed from disk). Checkpoints are written at every epoch end and on Ctrl-C, and
summary.json says at every moment how far the run got.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig

from cnnexp.console import print_summary, training_progress
from cnnexp.data import load_dataset
from cnnexp.data.preprocess import Preprocessing, load_preprocessing, save_preprocessing
from cnnexp.data.stream import stream_workers
from cnnexp.errors import RunFolderWriteError, TrainingDiverged, TrainingInterrupted, UserError
from cnnexp.runs.checkpoints import RunCheckpoints, abstract_like
from cnnexp.runs.layout import PREPROCESSING_FILE
from cnnexp.runs.metrics import MetricsLog
from cnnexp.runs.summary import environment, read_summary, write_summary
from cnnexp.runs.trackers.fanout import Trackers
from cnnexp.training.builder import build_experiment, fit_to_training_data
from cnnexp.training.distributed import any_process, host_value, is_main_process
from cnnexp.training.feeds import MemoryEval, StreamEval, stream_options, train_feed
from cnnexp.training.init_from import initialize_from, resolve_source
from cnnexp.training.interrupts import CheckpointClock, StopRequests
from cnnexp.training.optim import REST_GROUP
from cnnexp.training.parallel import trainer_parallel
from cnnexp.training.steps import evaluated_params

log = logging.getLogger("cnnexp.train")


def enable_compilation_cache(directory: str) -> None:
    """Turn on JAX's persistent compilation cache, so repeated runs of a config compile less."""
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class Trainer:
    """Everything one run needs, built once: data on the device, compiled steps, checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path, fingerprint: str):
        self.cfg, self.run_dir = cfg, run_dir
        # In a run of several processes, process 0 alone writes the run folder's files; all of them
        # compute, and write their parts of each checkpoint.
        self.writes_files = is_main_process()
        self.trackers = Trackers()  # started by `fit` (in process 0 only), finished by `_close`
        self.clock_start = time.perf_counter()
        resumed = read_summary(run_dir) if cfg.resume else None
        self.summary: dict[str, Any] = {
            "status": "running",
            "started_at": (resumed or {}).get("started_at", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            "config_fingerprint": fingerprint,
            "model": cfg.model.name,
            "dataset": cfg.data.name,
            "seed": cfg.seed,
            "epochs": cfg.trainer.epochs,
            "epochs_completed": 0,
            "run_dir": str(run_dir),
            **environment(),
        }
        self.write_summary()

    def write_summary(self) -> None:
        """summary.json as the run stands now (process 0's; the others write nothing)."""
        if self.writes_files:
            write_summary(self.run_dir, self.summary)

    def build(self) -> None:
        """Load the data, build the model and optimizer, restore a checkpoint, compile the steps."""
        cfg, run_dir = self.cfg, self.run_dir
        self.data = load_dataset(cfg.data, cfg.seed)
        trainer = cfg.trainer
        self.batch_size, self.eval_batch_size = trainer.batch_size, trainer.eval_batch_size
        self.steps_per_epoch = len(self.data.train) // self.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(
                f"trainer.batch_size={self.batch_size} is larger than the training split "
                f"({len(self.data.train)} examples)"
            )
        self.total_steps = trainer.epochs * self.steps_per_epoch
        log.info(
            "data %s: %d train, %d val, %d test images of %s, %d classes; preprocess %s, augment %s",
            self.data.name, len(self.data.train), len(self.data.val), len(self.data.test),
            "x".join(map(str, self.data.input_shape)), self.data.num_classes, cfg.data.preprocess,
            ", ".join(f"{key}={value}" for key, value in cfg.data.augment.items() if value) or "none",
        )
        preprocessing = self._preprocessing()
        self.summary["preprocess"] = preprocessing.kind

        self.parallel = trainer_parallel(trainer)
        self._cap_eval_batch(trainer)
        experiment = build_experiment(cfg, self.data.input_shape, self.data.num_classes,
                                      steps_per_epoch=self.steps_per_epoch,
                                      initialize=partial(self._initialize, preprocessing), parallel=self.parallel)
        self.schedule, self.state = experiment.schedule, experiment.state
        self.summary["params"] = experiment.params
        self.summary["kernels"] = experiment.kernels
        log.info("kernels: %s", ", ".join(f"{kind} {impl}" for kind, impl in experiment.kernels.items()))
        groups = experiment.param_groups
        self.summary["param_groups"] = {g.name: {"lr_scale": g.lr_scale, "params": list(g.paths)} for g in groups}
        if len(groups) > 1 or groups[0].name != REST_GROUP:
            log.info("optimizer groups: %s", ", ".join(
                f"{g.name} x{g.lr_scale:g} ({len(g.paths)} tensors)" for g in groups))

        # Host values onto the device, or onto every device (of every process) when data parallel.
        self.place = jax.device_put if self.parallel is None else self.parallel.replicate
        if self.parallel is not None:
            log.info("data parallel over %d devices%s", self.parallel.device_count,
                     f" of {jax.process_count()} processes" if jax.process_count() > 1 else "")
        self.state = self.place(self.state)
        self.preprocessing = self.place(preprocessing)

        self.checkpoints = RunCheckpoints(run_dir, trainer.checkpoint_keep)
        self.meta = {"step": 0, "epoch": 0, "best_val_accuracy": None, "best_epoch": None,
                     "elapsed_s": 0.0, "log_window_sums": None}
        # Restored straight into the state's placement, whatever devices and processes saved it.
        restored = self.checkpoints.restore_latest(abstract_like(self.state)) if cfg.resume else None
        if cfg.resume and restored is None:
            log.warning("%s has no complete checkpoint yet: starting it over from step 0", run_dir)
        if restored is not None:
            self.state, self.meta = restored
            self.summary.update(epochs_completed=self.meta["epoch"], best_epoch=self.meta["best_epoch"],
                                best_val_accuracy=self.meta["best_val_accuracy"])
            log.info("resuming %s from step %d", run_dir, self.meta["step"])
        self._make_feeds()

        compile_start = time.perf_counter()
        self.train_step = self.feed.compile(experiment, self.state, self.preprocessing)
        eval_step = jax.jit(experiment.eval_step)
        self.eval_steps = {}
        for name, feed in self.eval_feeds.items():
            images, labels, count, start = feed.example()
            self.eval_steps[name] = eval_step.lower(
                self._zero_sums(), evaluated_params(self.state), self.state.model_state, images, labels,
                self.preprocessing, count, start,
            ).compile()
        self.summary["compile_time_s"] = time.perf_counter() - compile_start
        log.info("compiled train and eval steps in %.1f s", self.summary["compile_time_s"])

    def _cap_eval_batch(self, trainer: DictConfig) -> None:
        """An evaluation batch larger than every evaluated split only pads it (trainer.eval_batch_size
        =10**8 asked for terabytes of padding): cap it at the largest split, rounded up to whole rows
        per device. Evaluation sums over the real rows, so its results do not change."""
        devices = 1 if self.parallel is None else self.parallel.device_count
        largest = max(len(self.data.val), len(self.data.test))
        capped = min(trainer.eval_batch_size, -(-largest // devices) * devices)
        if capped < trainer.eval_batch_size:
            trainer.eval_batch_size = self.eval_batch_size = capped

    def _make_feeds(self) -> None:
        """The training feed and the evaluation splits' feeds: on the device, or streamed."""
        data, eval_batch_size, place = self.data, self.eval_batch_size, self.place
        self.summary["data_path"] = "streamed" if data.streamed else "in_memory"
        self.feed = train_feed(data, self.cfg.data, batch_size=self.batch_size, seed=self.cfg.seed, place=place,
                               parallel=self.parallel)
        if not data.streamed:
            self.eval_feeds = {name: MemoryEval(split, batch_size=eval_batch_size, place=place)
                               for name, split in (("val", data.val), ("test", data.test))}
            return
        log.info("streaming %s from disk: %d Grain worker process(es), images stored at %s",
                 data.name, stream_workers(self.cfg.data), "x".join(map(str, data.stored_shape)))
        stream = stream_options(data, self.cfg.data, eval_batch_size, self.parallel)
        self.eval_feeds = {name: StreamEval(split, batch_size=eval_batch_size, **stream)
                           for name, split in (("val", data.val), ("test", data.test))}

    def _initialize(self, preprocessing: Preprocessing, model: nnx.Module, output: str) -> None:
        """A fresh run fits data-dependent layers; fine-tuning loads what fits of `init_from`; a
        resumed run keeps the fresh weights, which its checkpoint replaces."""
        cfg = self.cfg
        if cfg.init_from:
            self.summary["init_from"] = initialize_from(
                model, cfg.init_from, output=output, reinit=list(cfg.init_from_reinit), strict=cfg.init_from_strict,
            ).as_record()
        elif not cfg.resume:
            fit_to_training_data(model, self.data.fit_images(), preprocessing)

    def _preprocessing(self) -> Preprocessing:
        """The run's input transform. Resuming: the one stored in the run folder, so training goes on
        with bit for bit the inputs its checkpoints saw. Fine-tuning (`init_from`): the source run's,
        so the reused layers see inputs like those they learned from. Otherwise the one fitted on
        this run's training split. Stored for resume, evaluate and visualize."""
        cfg = self.cfg
        if cfg.resume and (stored := load_preprocessing(self.run_dir / PREPROCESSING_FILE)) is not None:
            return _same_kind(stored, cfg.data.preprocess, f"{self.run_dir} was trained with")
        chosen = self.data.preprocessing
        if cfg.init_from:
            source_dir, _ = resolve_source(cfg.init_from)
            source = load_preprocessing(source_dir / PREPROCESSING_FILE)
            if source is None:
                log.warning("%s stores no preprocessing (an older run): fitting this run's own", source_dir)
            else:
                chosen = _same_kind(source, cfg.data.preprocess, f"init_from={cfg.init_from} was trained with")
        if self.writes_files:
            save_preprocessing(self.run_dir / PREPROCESSING_FILE, chosen)
        return chosen

    def _elapsed(self) -> float:
        return self.meta["elapsed_s"] + time.perf_counter() - self.clock_start

    def _zero_sums(self) -> jax.Array:
        """Evaluation's [loss sum, correct, count] to start from, placed like the state."""
        return self.place(np.zeros(3, np.float32))

    def evaluate(self, split_name: str) -> tuple[float, float]:
        """Mean loss and accuracy of the current state on an evaluation split."""
        step, params, model_state = self.eval_steps[split_name], evaluated_params(self.state), self.state.model_state
        sums = self._zero_sums()
        for images, labels, count, start in self.eval_feeds[split_name].batches():
            sums = step(sums, params, model_state, images, labels, self.preprocessing, count, start)
        loss_sum, correct, count = host_value(sums)
        return float(loss_sum / count), float(correct / count)

    def _record(self, metrics: MetricsLog | None, kind: str, split: str, epoch: int, step: int,
                loss: float, accuracy: float, images_per_s: float | None = None) -> None:
        if metrics is None:  # not the process that writes the run folder
            return
        metrics.write({
            "kind": kind, "split": split, "epoch": epoch, "step": step, "loss": loss,
            "accuracy": accuracy, "lr": float(self.schedule(max(step - 1, 0))),
            "images_per_s": images_per_s, "time": round(self._elapsed(), 3),
        })

    def _check_finite(self) -> None:
        bad_step = int(host_value(self.state.nonfinite_step))
        if bad_step >= 0:
            raise TrainingDiverged(
                f"the training loss became NaN or infinite at step {bad_step}; "
                f"stopped, the last good checkpoint is kept (try a lower optim.lr)"
            )

    def _save(self, epoch: int, best: bool, window_sums: list[float] | None) -> None:
        self.meta.update(step=int(host_value(self.state.step)), epoch=epoch,
                         elapsed_s=self._elapsed(), log_window_sums=window_sums)
        self.clock_start = time.perf_counter()  # time so far is in meta["elapsed_s"] now
        self.checkpoints.save(self.state, self.meta, best=best)

    def fail(self, error: BaseException) -> None:
        """Record in summary.json why the run stopped."""
        if isinstance(error, TrainingInterrupted):
            self.summary.update(status="interrupted", error=str(error), signal=error.signal_name)
        else:
            self.summary.update(status="failed", error=f"{type(error).__name__}: {error}")

    def fit(self) -> dict[str, Any]:
        """Train to the last epoch (or until stopped), evaluate the test split, summarize."""
        cfg, trainer = self.cfg, self.cfg.trainer
        first_step = int(self.meta["step"])
        resume_step = first_step if cfg.resume else None
        metrics = MetricsLog(self.run_dir, resume_step, forward=self.trackers.log) if self.writes_files else None
        if self.writes_files:
            self.trackers.start(cfg, self.run_dir, resume_step)
        self.trained_images, self.train_time = 0, 0.0
        processes = jax.process_count()
        clock = CheckpointClock(trainer.checkpoint_every_minutes, processes)
        try:
            with StopRequests(processes) as stop_requests, training_progress(
                self.total_steps, first_step, trainer.progress and self.writes_files
            ) as progress:
                for epoch in range(first_step // self.steps_per_epoch, trainer.epochs):
                    epoch_start_time = time.perf_counter()
                    first_batch = first_step % self.steps_per_epoch if epoch == first_step // self.steps_per_epoch else 0
                    window = self.meta["log_window_sums"] if first_batch else None
                    window = np.asarray(window if window is not None else [0.0, 0.0, 0.0])
                    window_time = time.perf_counter()
                    leaves = self.train_step.leaves(self.state)
                    for batch, step_args in enumerate(self.feed.epoch(epoch, first_batch, self.preprocessing),
                                                      first_batch):
                        leaves = self.train_step(leaves, *step_args)
                        self.state = None  # its buffers went to the step (donated); `leaves` holds the new state
                        step = epoch * self.steps_per_epoch + batch + 1
                        progress.update(progress.task_ids[0], advance=1)
                        epoch_end = batch + 1 == self.steps_per_epoch
                        logging_now = (batch + 1) % trainer.log_every_steps == 0 and not epoch_end
                        stopping = stop_requests.stop_now(at_sync_point=logging_now or epoch_end)
                        saving = not epoch_end and (stopping or clock.due(at_sync_point=logging_now))
                        if logging_now or saving or epoch_end:
                            self.state = self.train_step.state(leaves)
                        if logging_now:
                            sums = np.asarray(host_value(self.state.epoch_sums), np.float64)
                            self._check_finite()
                            loss_sum, correct, count = sums - window
                            now = time.perf_counter()
                            self._record(metrics, "step", "train", epoch + 1, step, loss_sum / count,
                                         correct / count, count / (now - window_time))
                            progress.update(progress.task_ids[0], description=f"epoch {epoch + 1}/{trainer.epochs}",
                                            status=f"loss {loss_sum / count:.3f} acc {100 * correct / count:.1f}%")
                            window, window_time = sums, now
                        if saving:
                            self._check_finite()
                            self._save(epoch, best=False, window_sums=window.tolist())
                            clock.restart()
                        if stopping and not epoch_end:
                            raise self._stopped(stop_requests, f"at step {step}")
                    epoch_images = (self.steps_per_epoch - first_batch) * self.batch_size
                    self.train_time += self._end_epoch(metrics, epoch, epoch_start_time, epoch_images)
                    self.trained_images += epoch_images
                    clock.restart()
                    if stopping and epoch + 1 < trainer.epochs:
                        raise self._stopped(stop_requests, f"after epoch {epoch + 1}")
            test_loss, test_accuracy = self.evaluate("test")
            self._record(metrics, "epoch", "test", trainer.epochs, self.total_steps, test_loss, test_accuracy)
            self.summary.update(status="completed", test_accuracy=test_accuracy, test_loss=test_loss)
        except BaseException as error:
            self.fail(error)
            closing_failure = self._close(metrics)
            if closing_failure is not None and isinstance(error, TrainingInterrupted):
                raise closing_failure from error  # the checkpoint it stopped for was not saved
            raise
        if (closing_failure := self._close(metrics)) is not None:
            raise closing_failure
        return self.summary

    @staticmethod
    def _stopped(stop_requests: StopRequests, where: str) -> TrainingInterrupted:
        received = stop_requests.received
        if received is None:  # only another process of the run was signalled
            return TrainingInterrupted(f"stopped {where} with the other processes of the run")
        return TrainingInterrupted(f"interrupted by {received.name} {where}", received.name, int(received))

    def _close(self, metrics: MetricsLog | None) -> Exception | None:
        """Finish the checkpoint writes still under way, close the logs, write the final summary and
        send it to the trackers. Never raises, so that the error that stopped a run is the one
        reported: returns the first thing that failed (a background checkpoint write, say), which
        also fails the run."""
        failures = []
        for finish in (self.checkpoints.wait, self.checkpoints.close, *([metrics.close] if metrics else [])):
            try:
                finish()
            except Exception as error:  # noqa: BLE001 (each is reported below or raised by the caller)
                failures.append(error)
        if failures and self.summary["status"] != "failed":
            self.fail(failures[0])
        self.summary.update(
            wall_time_s=self._elapsed(),
            train_time_s=self.train_time,
            train_images_per_s=self.trained_images / self.train_time if self.train_time > 0 else None,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        try:
            self.write_summary()
        except RunFolderWriteError as error:
            failures.append(error)
        self.trackers.finish(self.summary)
        for later in failures[1:]:
            log.warning("also: %s", later)
        return failures[0] if failures else None

    def _end_epoch(self, metrics: MetricsLog, epoch: int, epoch_start_time: float, images: int) -> float:
        """Epoch metrics, validation, checkpoint, summary: the once-per-epoch bookkeeping.

        Returns the epoch's training time (up to the sync, without evaluation)."""
        cfg = self.cfg
        loss_sum, correct, count = np.asarray(host_value(self.state.epoch_sums), np.float64)
        train_time = time.perf_counter() - epoch_start_time
        self._check_finite()
        step = (epoch + 1) * self.steps_per_epoch
        self._record(metrics, "epoch", "train", epoch + 1, step, loss_sum / count, correct / count,
                     images / train_time)
        val_loss, val_accuracy = self.evaluate("val")
        self._record(metrics, "epoch", "val", epoch + 1, step, val_loss, val_accuracy)
        if cfg.trainer.eval_test_every_epoch:
            self._record(metrics, "epoch", "test_epoch", epoch + 1, step, *self.evaluate("test"))
        best = self.meta["best_val_accuracy"] is None or val_accuracy > self.meta["best_val_accuracy"]
        if best:
            self.meta.update(best_val_accuracy=val_accuracy, best_epoch=epoch + 1)
        self._save(epoch + 1, best=best, window_sums=None)
        self.summary.update(
            epochs_completed=epoch + 1, best_val_accuracy=self.meta["best_val_accuracy"],
            best_epoch=self.meta["best_epoch"], final_val_accuracy=val_accuracy,
            wall_time_s=self._elapsed(),
        )
        self.write_summary()
        log.info(
            "epoch %d/%d: train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | %.1f s, %.0f images/s",
            epoch + 1, cfg.trainer.epochs, loss_sum / count, 100 * correct / count, val_loss,
            100 * val_accuracy, train_time, images / train_time,
        )
        return train_time


def _same_kind(stored: Preprocessing, configured: str, whose: str) -> Preprocessing:
    """`stored` if it is the configured kind of preprocessing, else a UserError."""
    if stored.kind != configured:
        raise UserError(f"{whose} data.preprocess={stored.kind}; this run is configured with "
                        f"data.preprocess={configured} (set it to {stored.kind})")
    return stored


def train(cfg: DictConfig, run_dir: Path, fingerprint: str) -> dict[str, Any]:
    """Run one experiment of a validated config into `run_dir` and print its summary; returns
    summary.json's content."""
    previous = read_summary(run_dir) if cfg.resume else None
    if previous and previous.get("status") == "completed":
        log.info("%s has already completed; nothing to resume", run_dir)
        if is_main_process():
            print_summary(previous, str(run_dir))
        return previous
    enable_compilation_cache(cfg.paths.jax_cache_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, fingerprint)
    try:
        trainer.build()
    except BaseException as error:
        trainer.fail(error)
        trainer.write_summary()
        raise
    try:
        return trainer.fit()
    finally:
        if trainer.writes_files:
            print_summary(trainer.summary, str(run_dir))
