"""The generic training loop: one jit-compiled data-parallel step for every task.

``run(config, workdir, frozen=...)`` builds the task (``jaxspeech.train.tasks``) with the
frozen earlier stages it reads, restores the latest checkpoint in ``workdir/checkpoints`` if
there is one (else calls the task's ``prepare_model_state``), and trains to
``config.train.steps``: metrics every ``log_every`` steps to ``workdir/metrics.jsonl``,
validation every ``eval_every`` steps, checkpoints every ``checkpoint_every`` steps and at the
end. A gradient task's step is one optimiser update; an estimation task's step sums its
statistics over ``batches_per_step`` batches and updates (``jaxspeech.train.task``).
Restoring a run for evaluation or inference is ``jaxspeech.train.restore``.

A step whose loss or gradient norm is not finite is skipped inside jit (params, optimiser
and model state unchanged) and counted, by ``optax.apply_if_finite``; after
``max_nonfinite_steps`` in a row every later step is skipped too, so the state freezes, and the
host stops the run with a :class:`JaxspeechError` at its next check (log, validation or
checkpoint step), before saving anything. Reduce-on-plateau (``optax.contrib``) sees the
validation metric after each validation.
"""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from jaxspeech import files, parallel
from jaxspeech import workdir as names
from jaxspeech.errors import ConfigError, JaxspeechError, TrainingInterrupted
from jaxspeech.train import config as config_lib
from jaxspeech.train import optim
from jaxspeech.train import workdir as workdir_lib
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.logging import BestValidation, MetricsLog, Progress, mean_metrics
from jaxspeech.train.restore import write_frozen_record
from jaxspeech.train.task import Task, TrainedRun
from jaxspeech.train.tasks import make_task

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (replicated over the mesh).

    ``rng`` is the base key; step ``s`` uses ``fold_in(rng, s)`` (and the replica index), so a
    resumed run draws the same numbers. ``opt_state`` is the state of
    :func:`jaxspeech.train.optim.make_optimizer` (schedule, plateau scale, non-finite counts);
    ``plateau`` is the reduce-on-plateau state, whose ``scale`` the optimiser applies.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    model_state: PyTree
    rng: jax.Array
    plateau: optax.contrib.ReduceLROnPlateauState

    @property
    def nonfinite_run(self) -> jax.Array:
        """Steps in a row skipped for a non-finite loss or gradient, ``()``."""
        return optim.finite_guard(self.opt_state).notfinite_count

    @property
    def nonfinite_total(self) -> jax.Array:
        """Steps skipped since the start of training, ``()``."""
        return optim.finite_guard(self.opt_state).total_notfinite


def init_state(task: Task, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh train state (pure; the caller jits it with replicated output shardings)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params, model_state = task.init_model(init_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        model_state=model_state,
        rng=train_key,
        plateau=optim.init_plateau(),
    )


def make_train_step(task, optimizer, max_nonfinite: int, mesh):
    """``step(state, batch) -> (state, metrics)``, jitted, data-parallel, state donated.

    ``metrics``: the task's metrics plus ``loss``, ``grad_norm``, ``lr`` (the learning rate
    applied) and ``skipped``.
    """

    def per_replica(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step_key = jax.random.fold_in(state.rng, state.step)
        key = jax.random.fold_in(step_key, jax.lax.axis_index(parallel.DATA_AXIS))
        grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
        (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, key)
        loss, metrics, model_state, grads = parallel.pmean_floats(
            (loss, metrics, model_state, grads)
        )
        grad_norm = optax.tree.norm(grads)
        # apply_if_finite looks at the gradients alone: hand it NaN ones to skip a step whose
        # loss or norm is not finite, and every step once the run has halted (the count then
        # stays at the limit until the host stops the run).
        halted = state.nonfinite_run >= max_nonfinite
        usable = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & ~halted
        grads = jax.tree.map(lambda g: jnp.where(usable, g, jnp.nan), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        applied = optim.finite_guard(opt_state).last_finite
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            model_state=jax.tree.map(
                lambda new, old: jnp.where(applied, new, old), model_state, state.model_state
            ),
        )
        extra = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": optim.applied_learning_rate(opt_state),
            "skipped": (~applied).astype(jnp.float32),
        }
        return new_state, {**metrics, **extra}

    return parallel.data_parallel(
        per_replica, mesh, sharded_argnums=(1,), num_args=2, donate_argnums=(0,)
    )


def make_eval_step(task, mesh):
    """``eval_step(params, model_state, batch) -> metrics`` averaged over replicas."""

    def per_replica(params, model_state, batch):
        return parallel.pmean_floats(task.eval_fn(params, model_state, batch))

    return parallel.data_parallel(per_replica, mesh, sharded_argnums=(2,), num_args=3)


def validate_on(eval_step, mesh, state: TrainState, batches: list[dict]) -> dict[str, float]:
    """Mean of the task's validation metrics over the fixed global ``batches``."""
    records = [
        eval_step(state.params, state.model_state, parallel.shard_batch(mesh, local))
        for local in map(parallel.local_rows, batches)
    ]
    return mean_metrics(records)


class _Setup:
    """What ``run`` builds from a config: the task, the mesh and the checkpointer."""

    def __init__(self, config, workdir: pathlib.Path, devices, frozen) -> None:
        config_lib.validate(config)
        self.config = config
        self.task = make_task(config, frozen)
        self.estimation = self.task.capabilities.estimation
        self.mesh = parallel.make_mesh(devices)
        if config.train.batch_size % self.mesh.size:
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} must be a multiple of the "
                f"{self.mesh.size} devices"
            )
        self.checkpointer = Checkpointer.for_run(workdir, config, self.task)

    def replicated_init(self, init):
        """``init()`` (a pure function returning a state) replicated over the mesh."""
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return jax.jit(init, out_shardings=replicated)()


class _GradientDescent:
    """Steps of a gradient task: one batch, the optimiser's update, the non-finite guard and
    reduce-on-plateau."""

    def __init__(self, setup: _Setup) -> None:
        config = setup.config
        self.setup = setup
        schedule = optim.make_schedule(
            config.schedule, config.optim.learning_rate, config.train.steps
        )
        self.optimizer = optim.make_optimizer(config.optim, schedule)
        self.plateau = optim.make_plateau(config.schedule)
        self.train_step = make_train_step(
            setup.task, self.optimizer, config.train.max_nonfinite_steps, setup.mesh
        )
        self.samples_per_step = config.train.batch_size

    def new_state(self) -> TrainState:
        seed = self.setup.config.train.seed
        return self.setup.replicated_init(
            functools.partial(init_state, self.setup.task, self.optimizer, seed)
        )

    def step(self, state: TrainState, batches) -> tuple[TrainState, dict]:
        return self.train_step(state, parallel.shard_batch(self.setup.mesh, next(batches)))

    def check(self, state: TrainState, step: int) -> None:
        """Stops the run when ``max_nonfinite_steps`` steps in a row were skipped."""
        limit = self.setup.config.train.max_nonfinite_steps
        if int(state.nonfinite_run) >= limit:
            checkpointer = self.setup.checkpointer
            raise JaxspeechError(
                f"training stopped at step {step}: {limit} steps in a row had a non-finite "
                f"loss or gradient ({int(state.nonfinite_total)} skipped in all); the last good "
                f"checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}. "
                "Lower optim.learning_rate, set optim.clip_norm, or check the data for NaN/Inf."
            )

    def validated(self, state: TrainState, value: float) -> TrainState:
        """Reduce-on-plateau after a validation with metric ``value``."""
        if self.plateau is None:
            return state
        plateau = optim.plateau_update(
            self.plateau, jax.device_get(state.plateau), value, self.setup.task.valid_mode
        )
        # two copies of the scale: the train step donates the state, so no buffer may appear
        # twice
        plateau, scale = parallel.replicate(self.setup.mesh, (plateau, plateau.scale))
        return state.replace(
            plateau=plateau, opt_state=optim.with_plateau_scale(state.opt_state, scale)
        )


@flax.struct.dataclass
class EstimationState:
    """The state of an estimation task (replicated): step ``s`` draws from
    ``fold_in(rng, s)``."""

    step: jax.Array
    params: PyTree
    model_state: PyTree
    rng: jax.Array


class _Estimation:
    """Steps of an estimation task: statistics of ``task.batches_per_step`` batches, summed
    over the ``data`` axis and the batches, then ``task.update``."""

    def __init__(self, setup: _Setup) -> None:
        task, mesh = setup.task, setup.mesh
        self.setup, self.batches_per_step = setup, task.batches_per_step
        if self.batches_per_step < 1:
            raise ConfigError(f"{type(task).__name__}.batches_per_step must be >= 1")

        def per_replica(state: EstimationState, batch: dict, index: jax.Array):
            key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), index)
            key = jax.random.fold_in(key, jax.lax.axis_index(parallel.DATA_AXIS))
            stats = task.statistics(state.params, state.model_state, batch, key)
            return jax.lax.psum(stats, parallel.DATA_AXIS)

        def update(state: EstimationState, stats) -> tuple[EstimationState, dict]:
            params, model_state, metrics = task.update(state.params, state.model_state, stats)
            new = state.replace(step=state.step + 1, params=params, model_state=model_state)
            return new, metrics

        self.statistics = parallel.data_parallel(
            per_replica, mesh, sharded_argnums=(1,), num_args=3
        )
        self.add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=(0,))
        self.update = jax.jit(update, donate_argnums=(0,))
        self.samples_per_step = setup.config.train.batch_size * self.batches_per_step

    def new_state(self) -> EstimationState:
        def init() -> EstimationState:
            init_key, key = jax.random.split(jax.random.PRNGKey(self.setup.config.train.seed))
            params, model_state = self.setup.task.init_model(init_key)
            return EstimationState(jnp.zeros((), jnp.int32), params, model_state, key)

        return self.setup.replicated_init(init)

    def step(self, state: EstimationState, batches) -> tuple[EstimationState, dict]:
        total = None
        for index in range(self.batches_per_step):
            batch = parallel.shard_batch(self.setup.mesh, next(batches))
            stats = self.statistics(state, batch, np.int32(index))
            total = stats if total is None else self.add(total, stats)
        return self.update(state, total)

    def check(self, state: EstimationState, step: int) -> None:
        del state, step  # no non-finite guard: the task's update decides

    def validated(self, state: EstimationState, value: float) -> EstimationState:
        del value  # no learning rate to reduce
        return state


def _stepper(setup: _Setup) -> _GradientDescent | _Estimation:
    return _Estimation(setup) if setup.estimation else _GradientDescent(setup)


def _next_batches(iterator, task_name: str):
    """The training batches, with an error when the dataset ends."""
    yield from iterator
    raise JaxspeechError(
        f"task {task_name!r}: the training dataset ended; train_dataset must repeat forever "
        "(grain: .repeat() before batching)"
    )


class _StopRequests:
    """SIGINT and SIGTERM while training: the first asks the loop to finish its step, save a
    checkpoint and stop; a second exits at once. In a multi-process job every process learns
    of a request on any of them at the same step (an all-gather per step), so all save the
    same step. Handlers are installed only in the main thread, for the ``with`` block."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _StopRequests:
        self.signum, self.previous = 0, {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self.signum:
            print("\nsecond signal: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: saving a checkpoint after this step", file=sys.stderr, flush=True)

    def requested(self) -> int:
        """The signal number asked for on any process, or 0."""
        if jax.process_count() == 1:
            return self.signum
        return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))


def run(
    config: config_lib.Config,
    workdir: str | pathlib.Path,
    *,
    devices=None,
    frozen: Mapping[str, TrainedRun] | None = None,
    allow_changes: bool = False,
):
    """Trains (or resumes training) in ``workdir``; returns the final state.

    ``devices``: the devices of the data mesh (default: all devices of all processes).
    ``frozen``: the earlier stages the task reads (``{name: TrainedRun}``); recorded in
    ``workdir/frozen.json`` so that the run can be restored from its workdir alone.
    ``allow_changes``: resume a workdir whose config differs in more than
    ``workdir.RESUMABLE_KEYS`` (otherwise a ConfigError, before anything is written).

    Raises ``TrainingInterrupted`` after saving a checkpoint on SIGINT/SIGTERM.
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir_lib.check_resumable(workdir, config_lib.to_json(config), allow_changes)
    workdir.mkdir(parents=True, exist_ok=True)
    frozen = dict(frozen or {})
    setup = _Setup(config, workdir, devices, frozen)
    task, mesh = setup.task, setup.mesh
    # the ranking is recorded so that inference finds "best" without the task
    config_json = names.with_ranking(config_lib.to_json(config), task.valid_metric, task.valid_mode)
    stepper = _stepper(setup)
    is_main = jax.process_index() == 0
    if is_main:
        files.write_text(workdir / names.CONFIG, config_json)
        write_frozen_record(workdir, frozen)

    with setup.checkpointer:  # finishes pending saves, also when training stops on an error
        state = stepper.new_state()
        seed = config.train.seed
        data_iterator = iter(task.train_dataset(jax.process_index(), jax.process_count(), seed))
        state, latest = setup.checkpointer.restore_latest_readable(state, data_iterator)
        if latest is None:
            prepared = task.prepare_model_state(jax.device_get(state.model_state))
            state = state.replace(model_state=parallel.replicate(mesh, jax.device_get(prepared)))
        start = int(state.step)
        log = MetricsLog(workdir, enabled=is_main)
        # drops the records a killed run wrote after its last checkpoint
        best = BestValidation(task.valid_metric, task.valid_mode, log.drop_after(start))
        if start >= config.train.steps:
            if is_main:
                print(f"{workdir}: already complete at step {start}", flush=True)
            return state
        if latest is not None and is_main:
            print(f"{workdir}: resuming from the checkpoint of step {start}", flush=True)
        with _StopRequests() as stop:
            try:
                return _train(setup, stepper, state, data_iterator, log, best, stop, config_json)
            finally:
                log.close()


def _train(setup, stepper, state, data_iterator, log, best, stop, config_json):
    """Steps from ``state.step + 1`` to ``train.steps``: logs, validations (each printed with
    the ``best`` so far, and the task's ``examples`` logged), checkpoints, and a checkpoint then
    ``TrainingInterrupted`` when ``stop`` was requested."""
    train, task, mesh = setup.config.train, setup.task, setup.mesh
    eval_step = make_eval_step(task, mesh)
    valid_batches = task.valid_batches()
    batches = _next_batches(data_iterator, setup.config.task)
    start = int(state.step)
    progress = Progress(train.steps, start, enabled=log.enabled)
    pending, window_start, window_steps = [], time.perf_counter(), 0
    for step in range(start + 1, train.steps + 1):
        state, metrics = stepper.step(state, batches)
        pending.append(metrics)
        window_steps += 1
        last = step == train.steps
        is_log = step % train.log_every == 0 or last
        is_eval = step % train.eval_every == 0 or last
        is_checkpoint = step % train.checkpoint_every == 0 or last
        signum = stop.requested()
        if not (is_log or is_eval or is_checkpoint):
            progress.update()
        else:
            record = mean_metrics(pending)  # the only device -> host transfer of the step
            stepper.check(state, step)
            elapsed = time.perf_counter() - window_start
            record.update(
                step=step,
                steps_per_s=window_steps / elapsed,
                samples_per_s=window_steps * stepper.samples_per_step / elapsed,
            )
            if not setup.estimation:
                record["nonfinite_total"] = int(state.nonfinite_total)
            valid = None
            if is_eval:
                valid = validate_on(eval_step, mesh, state, valid_batches)
                record.update({f"valid_{k}": v for k, v in valid.items()})
                state = stepper.validated(state, valid[task.valid_metric])
                progress.write(best.update(step, valid[task.valid_metric]))
                if log.events is not None and task.capabilities.examples:
                    host = jax.device_get((state.params, state.model_state))
                    log.write_examples(step, task.examples(*host))
            log.write(record)
            if is_checkpoint:
                setup.checkpointer.save(step, state, data_iterator, config_json, valid)
            progress.update(record)
            pending, window_start, window_steps = [], time.perf_counter(), 0
        if signum:
            if not is_checkpoint:
                stepper.check(state, step)
                setup.checkpointer.save(step, state, data_iterator, config_json)
            progress.close()
            raise TrainingInterrupted(
                f"stopped at step {step}, checkpoint saved; rerun the same command to resume",
                128 + signum,
            )
    progress.write(best.summary())
    progress.close()
    return state
