"""Trained models for inference: :func:`load` turns a training workdir into the model of its
system, built from its config and one checkpoint (no task, optimiser or data)."""

from __future__ import annotations

import pathlib

from jaxspeech.errors import ConfigError
from jaxspeech.inference import runs
from jaxspeech.inference.av import AVEnhancer
from jaxspeech.inference.bgm import MusicMatcher
from jaxspeech.inference.enhancement import Enhancer
from jaxspeech.inference.model import LoadedModel
from jaxspeech.inference.separation import Separator
from jaxspeech.inference.speaker import Speaker

#: The loaded model class of each task that has one.
SYSTEMS = {
    "separation": Separator,
    "enhancement": Enhancer,
    "av": AVEnhancer,
    "speaker": Speaker,
    "bgm": MusicMatcher,
}


def load(
    workdir: str | pathlib.Path, *, stage: str | None = None, checkpoint: str = "best"
) -> LoadedModel:
    """The trained model of ``workdir``: a :class:`Separator`, :class:`Enhancer`,
    :class:`AVEnhancer`, :class:`Speaker` or :class:`MusicMatcher`, by the run's task.

    Args:
      workdir: a training run (``config.json``) or a multi-stage recipe (``stages.json``).
      stage: for a multi-stage workdir, the stage to load (default: "student" if there is
        one, else the last stage).
      checkpoint: "best" (by the run's validation metric), "latest" or a step number.
    """
    run_dir = runs.stage_workdir(workdir, stage).absolute()
    config = runs.read_config(run_dir)
    system = SYSTEMS.get(config.task)
    if system is None:
        raise ConfigError(
            f"{run_dir} is a {config.task!r} run, which has no inference model; load a "
            f"workdir of one of {sorted(SYSTEMS)}"
        )
    params, model_state, step = runs.restore_variables(run_dir, str(checkpoint), config)
    if system is AVEnhancer:
        frozen = runs.frozen_stages(run_dir)
        audio_dir, audio_step = frozen[config.model.audio_stage]
        lips_dir, lips_step = frozen[config.model.lips_stage]
        audio = load(audio_dir, checkpoint=str(audio_step))
        lips_config = runs.read_config(lips_dir)
        lips_params, _, _ = runs.restore_variables(lips_dir, str(lips_step), lips_config)
        return AVEnhancer(run_dir, config, step, params, audio, (lips_config, lips_params))
    return system(run_dir, config, step, params, model_state)


__all__ = [
    "AVEnhancer",
    "Enhancer",
    "LoadedModel",
    "MusicMatcher",
    "Separator",
    "Speaker",
    "load",
]
