"""What every loaded model shares: where it came from and how batched input is walked."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from jaxspeech.errors import ShapeError


class LoadedModel:
    """A trained model restored for inference (see :func:`jaxspeech.load`).

    Attributes:
      system: short name of the system ("separation", "enhancement", "av", "speaker", "bgm").
      workdir: the run's folder. step: the checkpoint's step. config: the run's config.
      sample_rate: the rate (Hz) every waveform given to or returned by the model is at.
      module: the Flax module. variables: what ``module.apply`` takes.
    """

    system: str

    def __init__(self, workdir: pathlib.Path, config: Any, step: int, sample_rate: int) -> None:
        self.workdir, self.config, self.step = workdir, config, step
        self.sample_rate = int(sample_rate)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.workdir)!r}, step={self.step})"


def waveform_rows(wave, name: str = "wave") -> tuple[np.ndarray, tuple[int, ...]]:
    """``(rows [N, T] float32, leading shape)`` of a waveform batch ``[..., T]``."""
    wave = np.asarray(wave)
    if wave.ndim == 0 or not np.issubdtype(wave.dtype, np.floating):
        raise ShapeError(
            f"{name}: expected float samples [..., T], got {wave.dtype} of shape {wave.shape}"
        )
    return wave.reshape(-1, wave.shape[-1]).astype(np.float32), wave.shape[:-1]
