"""Exceptions raised for bad input. Every message names the offending input and the fix."""


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


class TrialError(JaxspeechError, ValueError):
    """Scores/labels of a trial list that cannot be scored."""


class ShapeError(JaxspeechError, ValueError):
    """Arrays whose shapes, dtypes or sizes do not fit the function."""
