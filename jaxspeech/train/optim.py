"""Optimisers, learning-rate schedules and reduce-on-plateau, all from optax.

:func:`make_optimizer` returns the one optax transformation that owns the update::

    inject_hyperparams(learning_rate=schedule, plateau_scale=1.0)
      apply_if_finite
        chain(clip_by_global_norm, update rule,
              scale_by_learning_rate(learning_rate * plateau_scale))

The injected schedule is evaluated at its own count, which advances on every update, skipped
or not, so step ``s`` of training uses ``schedule(s)``. ``apply_if_finite`` turns an update
whose gradient holds a NaN or Inf into a zero update that leaves the optimiser state as it was,
and counts it (``notfinite_count`` in a row, ``total_notfinite`` in all). Its own limit, after
which it would apply such updates anyway, is never reached: the train loop decides when to
stop (see :mod:`jaxspeech.train.loop`). ``plateau_scale`` is written by
:func:`with_plateau_scale` from the reduce-on-plateau state after each validation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from jaxspeech.errors import ConfigError
from jaxspeech.train.config import OptimConfig, ScheduleConfig

OPTIMIZERS = ("adam", "adamw", "sgd-nesterov")
SCHEDULES = ("constant", "warmup_cosine", "warmup_exponential")

# apply_if_finite gives up (applies non-finite updates) after more than this many in a row;
# its int32 count saturates at this value, so it never does.
_NEVER_GIVE_UP = int(np.iinfo(np.int32).max)
# optax counts an improvement when value < (1 - rtol) * best - atol and refuses rtol = atol = 0.
# The bookkeeping is float32, where (1 - 1e-10) rounds to exactly 1: improvement is then the
# strict value < best.
_STRICT_RTOL = 1e-10


def _update_rule(optim: OptimConfig) -> list[optax.GradientTransformation]:
    """Gradient clipping (by global norm) and the update rule at learning rate 1."""
    decay = [optax.add_decayed_weights(optim.weight_decay)] if optim.weight_decay else []
    if optim.name == "adam":
        rule = [*decay, optax.scale_by_adam(optim.b1, optim.b2, optim.eps)]
    elif optim.name == "adamw":
        rule = [optax.scale_by_adam(optim.b1, optim.b2, optim.eps), *decay]
    elif optim.name == "sgd-nesterov":
        rule = [*decay, optax.trace(decay=optim.momentum, nesterov=True)]
    else:
        raise ConfigError(f"optim.name={optim.name!r}; use one of {', '.join(OPTIMIZERS)}")
    clip = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
    return [*clip, *rule]


def make_optimizer(
    optim: OptimConfig, learning_rate: float | optax.Schedule
) -> optax.GradientTransformationExtraArgs:
    """The whole update (see the module docstring); ``learning_rate``: a number or a
    ``step -> learning rate`` schedule (before the plateau scale)."""
    rule = _update_rule(optim)

    def skipping_non_finite(learning_rate, plateau_scale):
        chain = optax.chain(*rule, optax.scale_by_learning_rate(learning_rate * plateau_scale))
        return optax.apply_if_finite(chain, max_consecutive_errors=_NEVER_GIVE_UP)

    return optax.inject_hyperparams(skipping_non_finite)(
        learning_rate=learning_rate, plateau_scale=1.0
    )


def applied_learning_rate(opt_state: optax.InjectStatefulHyperparamsState) -> jax.Array:
    """The learning rate (schedule × plateau scale) of the last update, ``()``."""
    hyperparams = opt_state.hyperparams
    return hyperparams["learning_rate"] * hyperparams["plateau_scale"]


def finite_guard(opt_state: optax.InjectStatefulHyperparamsState) -> optax.ApplyIfFiniteState:
    """The ``apply_if_finite`` state: ``notfinite_count``, ``last_finite``, ``total_notfinite``."""
    return opt_state.inner_state


def with_plateau_scale(
    opt_state: optax.InjectStatefulHyperparamsState, scale: jax.Array
) -> optax.InjectStatefulHyperparamsState:
    """``opt_state`` whose later updates multiply the scheduled learning rate by ``scale``."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "plateau_scale": scale})


def make_schedule(
    schedule: ScheduleConfig, learning_rate: float, total_steps: int
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """``step -> learning rate`` (before the plateau scale) for ``total_steps`` steps."""
    warmup = schedule.warmup_steps
    if schedule.name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule.name == "warmup_cosine":
        main = optax.cosine_decay_schedule(
            learning_rate, max(total_steps - warmup, 1), alpha=schedule.final_factor
        )
    elif schedule.name == "warmup_exponential":
        main = optax.exponential_decay(
            learning_rate,
            transition_steps=schedule.decay_every,
            decay_rate=schedule.decay_rate,
            end_value=learning_rate * schedule.final_factor,
        )
    else:
        raise ConfigError(f"schedule.name={schedule.name!r}; use one of {', '.join(SCHEDULES)}")
    if not warmup:
        return main
    ramp = optax.linear_schedule(learning_rate / warmup, learning_rate, warmup)
    return optax.join_schedules([ramp, main], boundaries=[warmup])


PlateauUpdate = Callable[
    [optax.contrib.ReduceLROnPlateauState, jax.Array], optax.contrib.ReduceLROnPlateauState
]


def make_plateau(schedule: ScheduleConfig) -> PlateauUpdate | None:
    """``optax.contrib.reduce_on_plateau`` as a jitted ``(state, value) -> state``, fed one
    validation value at a time: after ``plateau_patience`` values in a row without a strict
    improvement on the best one, the scale is multiplied by ``plateau_factor`` and the count
    restarts (no cooldown, no averaging). ``None`` when ``plateau_patience`` is 0 (off)."""
    patience, factor = schedule.plateau_patience, schedule.plateau_factor
    if patience < 0:
        raise ConfigError(f"schedule.plateau_patience={patience}; use 0 (off) or more")
    if patience == 0:
        return None
    if not 0 < factor < 1:
        raise ConfigError(f"schedule.plateau_factor={factor}; it must be between 0 and 1")
    plateau = optax.contrib.reduce_on_plateau(
        factor=factor, patience=patience, rtol=_STRICT_RTOL, atol=0.0, cooldown=0
    )
    return jax.jit(lambda state, value: plateau.update((), state, value=value)[1])


def init_plateau() -> optax.contrib.ReduceLROnPlateauState:
    """Fresh reduce-on-plateau state (scale 1, best +inf), float32 whatever the params; its
    initial value does not depend on the settings."""
    return optax.contrib.reduce_on_plateau().init(jnp.zeros((), jnp.float32))


def plateau_update(
    plateau: PlateauUpdate, state: optax.contrib.ReduceLROnPlateauState, value: float, mode: str
) -> optax.contrib.ReduceLROnPlateauState:
    """``state`` after one validation with metric ``value``; ``mode`` "min" or "max" (the
    state then holds the negated metric, as optax minimises)."""
    return plateau(state, jnp.float32(value if mode == "min" else -value))
