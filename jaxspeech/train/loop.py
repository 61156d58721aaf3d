"""The generic training loop: one jit-compiled data-parallel step for every task.

``run(config, workdir)`` builds the task (``jaxspeech.train.tasks``), restores the latest
checkpoint in ``workdir/checkpoints`` if there is one, and trains to ``config.train.steps``:
metrics every ``log_every`` steps to ``workdir/metrics.jsonl``, validation every
``eval_every`` steps, checkpoints every ``checkpoint_every`` steps and at the end.
``evaluate(workdir, split, checkpoint)`` rebuilds everything from ``workdir/config.json``.

A step whose loss or gradient norm is not finite is skipped inside jit (params, optimiser
and model state unchanged) and counted, by ``optax.apply_if_finite``; after
``max_nonfinite_steps`` in a row every later step is skipped too, so the state freezes, and the
host stops the run with a :class:`JaxspeechError` at its next check (log, validation or
checkpoint step), before saving anything. Reduce-on-plateau (``optax.contrib``) sees the
validation metric after each validation.
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxspeech import parallel
from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train import optim
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.logging import MetricsLog, Progress, mean_metrics, write_table
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


def init_state(task: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
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
    """What ``run`` and ``evaluate`` both build from a config."""

    def __init__(self, config: config_lib.Config, workdir: pathlib.Path, devices=None) -> None:
        config_lib.validate(config)
        self.config = config
        self.task = make_task(config)
        self.mesh = parallel.make_mesh(devices)
        if config.train.batch_size % self.mesh.size:
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} must be a multiple of the "
                f"{self.mesh.size} devices"
            )
        schedule = optim.make_schedule(
            config.schedule, config.optim.learning_rate, config.train.steps
        )
        self.optimizer = optim.make_optimizer(config.optim, schedule)
        self.plateau = optim.make_plateau(config.schedule)
        self.checkpointer = Checkpointer(
            workdir / "checkpoints",
            keep=config.train.keep_checkpoints,
            valid_metric=self.task.valid_metric,
            valid_mode=self.task.valid_mode,
        )

    def new_state(self, abstract: bool = False) -> TrainState:
        init = functools.partial(init_state, self.task, self.optimizer, self.config.train.seed)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        if abstract:
            shapes = jax.eval_shape(init)
            return jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes
            )
        return jax.jit(init, out_shardings=replicated)()


def _check_finite(state: TrainState, step: int, setup: _Setup) -> None:
    limit = setup.config.train.max_nonfinite_steps
    if int(state.nonfinite_run) >= limit:
        setup.checkpointer.close()
        raise JaxspeechError(
            f"training stopped at step {step}: {limit} steps in a row had a non-finite loss or "
            f"gradient ({int(state.nonfinite_total)} skipped in all); the last good checkpoint "
            f"is step {setup.checkpointer.latest_step()} in {setup.checkpointer.directory}. "
            "Lower optim.learning_rate, set optim.clip_norm, or check the data for NaN/Inf."
        )


def _update_plateau(state: TrainState, value: float, setup: _Setup) -> TrainState:
    if setup.plateau is None:
        return state
    plateau = optim.plateau_update(
        setup.plateau, jax.device_get(state.plateau), value, setup.task.valid_mode
    )
    # two copies of the scale: the train step donates the state, so no buffer may appear twice
    plateau, scale = parallel.replicate(setup.mesh, (plateau, plateau.scale))
    return state.replace(
        plateau=plateau, opt_state=optim.with_plateau_scale(state.opt_state, scale)
    )


def run(config: config_lib.Config, workdir: str | pathlib.Path, *, devices=None) -> TrainState:
    """Trains (or resumes training) in ``workdir``; returns the final state.

    ``devices``: the devices of the data mesh (default: all devices of all processes).
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    setup = _Setup(config, workdir, devices)
    train, task, mesh = config.train, setup.task, setup.mesh
    config_json = config_lib.to_json(config)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config_json)

    state = setup.new_state()
    data_iterator = iter(task.train_dataset(jax.process_index(), jax.process_count(), train.seed))
    latest = setup.checkpointer.latest_step()
    if latest is not None:
        state = setup.checkpointer.restore(latest, state, data_iterator)
    train_step = make_train_step(task, setup.optimizer, train.max_nonfinite_steps, mesh)
    eval_step = make_eval_step(task, mesh)
    valid_batches = task.valid_batches()

    log = MetricsLog(workdir, enabled=is_main)
    start = int(state.step)
    progress = Progress(train.steps, start, enabled=is_main)
    pending, window_start, window_steps = [], time.perf_counter(), 0
    for step in range(start + 1, train.steps + 1):
        try:
            local_batch = next(data_iterator)
        except StopIteration:
            raise JaxspeechError(
                f"task {config.task!r}: the training dataset ended at step {step}; "
                "train_dataset must repeat forever (grain: .repeat() before batching)"
            ) from None
        state, metrics = train_step(state, parallel.shard_batch(mesh, local_batch))
        pending.append(metrics)
        window_steps += 1
        last = step == train.steps
        is_log = step % train.log_every == 0 or last
        is_eval = step % train.eval_every == 0 or last
        is_checkpoint = step % train.checkpoint_every == 0 or last
        if not (is_log or is_eval or is_checkpoint):
            progress.update()
            continue
        record = mean_metrics(pending)  # the only device -> host transfer of the step
        _check_finite(state, step, setup)
        elapsed = time.perf_counter() - window_start
        record.update(
            step=step,
            steps_per_s=window_steps / elapsed,
            samples_per_s=window_steps * train.batch_size / elapsed,
            nonfinite_total=int(state.nonfinite_total),
        )
        valid = None
        if is_eval:
            valid = validate_on(eval_step, mesh, state, valid_batches)
            record.update({f"valid_{k}": v for k, v in valid.items()})
            state = _update_plateau(state, valid[task.valid_metric], setup)
        log.write(record)
        if is_checkpoint:
            setup.checkpointer.save(step, state, data_iterator, config_json, valid)
        progress.update(record)
        pending, window_start, window_steps = [], time.perf_counter(), 0
    progress.close()
    setup.checkpointer.close()
    return state


def restore_run(workdir: str | pathlib.Path, checkpoint: str = "latest"):
    """Rebuilds a finished or running training run from ``workdir`` alone.

    ``checkpoint``: "best", "latest" or a step number. Returns ``(task, state, step)``; later
    stages of a multi-stage recipe use it to load frozen params from an earlier stage.
    """
    workdir = pathlib.Path(workdir).absolute()
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise JaxspeechError(f"{config_path} not found; is {workdir} a training workdir?")
    setup = _Setup(config_lib.from_json(config_path.read_text()), workdir)
    step = setup.checkpointer.resolve(checkpoint)
    state = setup.checkpointer.restore(step, setup.new_state(abstract=True))
    setup.checkpointer.close()
    return setup.task, state, step


def evaluate(workdir: str | pathlib.Path, split: str = "test", checkpoint: str = "best"):
    """Calls ``task.evaluate`` on ``split`` with the params of ``checkpoint`` and writes
    ``workdir/eval/<split>.{md,csv,json}`` (process 0). Returns ``(rows, markdown)``."""
    task, state, step = restore_run(workdir, checkpoint)
    rows = task.evaluate(state.params, state.model_state, split)
    rows = [{"checkpoint_step": step, **row} for row in rows]
    stem = pathlib.Path(workdir).absolute() / "eval" / split
    markdown = write_table(rows, stem) if jax.process_index() == 0 else ""
    return rows, markdown
