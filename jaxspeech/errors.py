"""Exceptions raised for bad input, and how the entry points report them.

Every message names the offending input and the fix. ``train.py``, ``evaluate.py`` and the
``jaxspeech`` command run their ``main`` through :func:`run_command`: a
:class:`JaxspeechError` is one line on stderr and exit status 2 (a traceback only with
``--debug``); an interrupted training run exits with its own status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class JaxspeechError(Exception):
    """Base class of every error jaxspeech raises on purpose."""


class ConfigError(JaxspeechError, ValueError):
    """A config key, type or value is wrong."""


class AudioError(JaxspeechError, ValueError):
    """Audio that cannot be used as it is."""


class AudioFileError(AudioError):
    """The file is missing, unreadable or not an audio format soundfile understands."""


class EmptyAudioError(AudioError):
    """The audio has no samples."""


class NonFiniteAudioError(AudioError):
    """The audio contains NaN or Inf samples."""


class ChannelError(AudioError):
    """Multichannel audio where mono is required."""


class SilentAudioError(AudioError):
    """All-zero audio given to something that cannot measure silence (metrics, normalisation)."""


class SampleRateError(AudioError):
    """A sample rate the function does not support."""


class TooShortError(AudioError):
    """Audio shorter than the function needs."""


class VideoFileError(JaxspeechError, ValueError):
    """A video file that is missing, cannot be decoded, or lacks the stream asked for."""


class CorpusError(JaxspeechError, ValueError):
    """A corpus folder that does not match the official layout it should have (a missing
    split, folder, list or file)."""


class MissingExtraError(JaxspeechError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class TrialError(JaxspeechError, ValueError):
    """Scores/labels of a trial list that cannot be scored."""


class ShapeError(JaxspeechError, ValueError):
    """Arrays whose shapes, dtypes or sizes do not fit the function."""


class TrainingInterrupted(JaxspeechError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; ``exit_status`` is
    ``128 + signal number``, as a shell reports a process ended by that signal."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


DEBUG_FLAG = "--debug"
DEBUG_HELP = "show the traceback of an error instead of its one-line message"


def run_command(prog: str, main: Callable[[list[str]], object], argv: Sequence[str] | None) -> int:
    """Runs ``main(argv)`` and returns the exit status: 0, 2 after printing a
    :class:`JaxspeechError` as ``prog: error: message`` on stderr, or an interrupted run's
    status after printing its message. With ``--debug`` in ``argv`` errors propagate."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except TrainingInterrupted as err:
        print(f"{prog}: {err}", file=sys.stderr, flush=True)
        return err.exit_status
    except JaxspeechError as err:
        if DEBUG_FLAG in argv:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0
