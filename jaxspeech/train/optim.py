"""Optimisers (optax) and learning-rate schedules, including reduce-on-plateau halving.

The optimiser built here returns *unit-learning-rate* descent directions; the train step
multiplies them by ``-learning_rate(step) * lr_scale`` so that one number, logged as ``lr``,
is the learning rate actually applied. ``lr_scale`` lives in the train state and is changed
only by :func:`plateau_update` after a validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import optax

from jaxspeech.errors import ConfigError
from jaxspeech.train.config import OptimConfig, ScheduleConfig

OPTIMIZERS = ("adam", "adamw", "sgd-nesterov")
SCHEDULES = ("constant", "warmup_cosine", "warmup_exponential")


def make_optimizer(optim: OptimConfig) -> optax.GradientTransformation:
    """Gradient clipping (by global norm) followed by the update rule at learning rate 1."""
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
    return optax.chain(*clip, *rule)


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


@dataclasses.dataclass(frozen=True)
class Plateau:
    """Reduce-on-plateau bookkeeping: best validation value, validations without improvement,
    and the current learning-rate scale."""

    best: float = float("nan")
    bad: int = 0
    scale: float = 1.0


def plateau_update(plateau: Plateau, value: float, mode: str, schedule: ScheduleConfig) -> Plateau:
    """Returns the bookkeeping after one validation with metric ``value`` (``mode`` "min" or
    "max"); the scale is multiplied by ``plateau_factor`` after ``plateau_patience`` validations
    in a row without improvement. No-op when ``plateau_patience`` is 0."""
    if schedule.plateau_patience <= 0:
        return plateau
    improved = (
        plateau.best != plateau.best  # first validation (best is NaN)
        or (value < plateau.best if mode == "min" else value > plateau.best)
    )
    if improved:
        return Plateau(best=value, bad=0, scale=plateau.scale)
    if plateau.bad + 1 >= schedule.plateau_patience:
        return Plateau(plateau.best, 0, plateau.scale * schedule.plateau_factor)
    return Plateau(plateau.best, plateau.bad + 1, plateau.scale)
