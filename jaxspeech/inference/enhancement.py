"""Mask-based enhancement: the numerics shared by training and inference
(:class:`MaskEnhancer`), and the loaded model (:class:`Enhancer`)."""

from __future__ import annotations

import jax
import numpy as np

from jaxspeech import audio, dsp, infer, masks
from jaxspeech.errors import ConfigError, TooShortError
from jaxspeech.inference.model import LoadedModel, waveform_rows
from jaxspeech.models.masknet import LSTMMaskNet, LSTMMaskNetConfig, TCNMaskNet, TCNMaskNetConfig


def build_mask_net(cfg: LSTMMaskNetConfig | TCNMaskNetConfig, n_freqs: int, dtype=np.float32):
    """The Flax mask estimator of ``cfg`` for ``n_freqs`` bins."""
    if isinstance(cfg, LSTMMaskNetConfig):
        return LSTMMaskNet(n_freqs, cfg, dtype)
    if isinstance(cfg, TCNMaskNetConfig):
        return TCNMaskNet(n_freqs, cfg, dtype)
    raise ConfigError(
        f"model.estimator is a {type(cfg).__name__}; use LSTMMaskNetConfig or TCNMaskNetConfig"
    )


class MaskEnhancer:
    """STFT, normalised log-magnitude features, mask net and ISTFT of an enhancement model
    (``EnhancementModelConfig``), built from its config alone; the enhancement task is one.

    Attributes:
      sample_rate, n_fft, hop (samples), n_freqs (``n_fft // 2 + 1``), window (its name),
      log_floor; model: the mask net, features ``[B, frames, n_freqs] -> mask`` (same shape).
    """

    def __init__(self, model_config, sample_rate: int, dtype=np.float32) -> None:
        feats = model_config.features
        self.sample_rate = sample_rate
        self.n_fft = round(feats.window_ms * sample_rate / 1000)
        self.hop = round(feats.hop_ms * sample_rate / 1000)
        if not 0 < self.hop <= self.n_fft:
            raise ConfigError(f"model.features: hop {feats.hop_ms} ms must be in (0, window]")
        self.window, self.log_floor = feats.window, feats.log_floor
        dsp.check_nola(dsp.get_window(self.window, self.n_fft), self.hop)
        self.n_freqs = self.n_fft // 2 + 1
        self.model = build_mask_net(model_config.estimator, self.n_freqs, dtype)

    @property
    def receptive_field(self) -> int | None:
        """Input samples an output sample depends on (None for a recurrent net: unbounded)."""
        estimator = self.model.config
        if isinstance(estimator, TCNMaskNetConfig):
            return (infer.tcn_receptive_frames(estimator.tcn) - 1) * self.hop + self.n_fft
        return None

    def spectrum(self, wav: jax.Array, center: bool = True) -> jax.Array:
        """Complex STFT ``[..., frames, n_freqs]`` of ``wav [..., samples]`` (``center``: as
        ``dsp.stft``; False for the causal framing of ``jaxspeech.stream``)."""
        return dsp.stft(wav, self.n_fft, self.hop, window=self.window, center=center)

    def features(self, spec: jax.Array, model_state) -> jax.Array:
        """Normalised log-magnitude features ``[..., frames, n_freqs]`` of a noisy STFT."""
        log_mag = dsp.log_magnitude(spec, self.log_floor)
        return dsp.normalize(log_mag, model_state["feature_mean"], model_state["feature_std"])

    def resynthesise(
        self, spec: jax.Array, mask: jax.Array, length: int, center: bool = True
    ) -> jax.Array:
        """``ISTFT(mask · spec)`` with the noisy phase, ``[..., length]``."""
        masked = masks.apply_mask(spec, mask)
        return dsp.istft(
            masked, self.n_fft, self.hop, window=self.window, center=center, length=length
        )

    def mask(self, params, model_state, noisy: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mask, noisy STFT)``, both ``[B, frames, n_freqs]``, for ``noisy [B, samples]``."""
        spec = self.spectrum(noisy)
        return self.model.apply({"params": params}, self.features(spec, model_state)), spec

    def enhance(self, params, model_state, noisy: jax.Array) -> jax.Array:
        """Enhanced speech ``[B, samples]`` for noisy speech ``[B, samples]``."""
        mask, spec = self.mask(params, model_state, noisy)
        return self.resynthesise(spec, mask, noisy.shape[-1])

    def enhance_chunks(self, variables, chunks: jax.Array) -> jax.Array:
        """``enhance`` as an ``infer.separate_long`` model: ``variables = (params,
        model_state)``, ``chunks [B, C] -> [B, 1, C]`` (one source)."""
        params, model_state = variables
        return self.enhance(params, model_state, chunks)[:, None]

    def prepare_waveform(self, wav: np.ndarray, sample_rate: int, source="audio") -> np.ndarray:
        """One recording ``[samples]`` or ``[channels, samples]`` at any rate as the model's
        input: mono (channel mean) ``[samples']`` float32 at the model's rate.

        Raises ``EmptyAudioError`` / ``NonFiniteAudioError`` (via ``audio.validate``) and
        ``TooShortError`` (under half a window), naming ``source``.
        """
        wav = audio.validate(np.asarray(wav, np.float32), source)
        if wav.ndim == 2:
            wav = wav.mean(axis=0)
        wav = audio.require_mono(wav, source)
        wav = audio.resample(wav, sample_rate, self.sample_rate)
        if wav.shape[-1] <= self.n_fft // 2:
            raise TooShortError(
                f"{source}: {wav.shape[-1]} samples at {self.sample_rate} Hz; enhancement needs "
                f"more than {self.n_fft // 2} (half an STFT window); pass a longer recording"
            )
        return wav


class Enhancer(LoadedModel):
    """A trained enhancement run (``configs/enhancement/*``), loaded by :func:`jaxspeech.load`.

    ``enhance(wave)`` maps noisy speech ``[..., T]`` at ``sample_rate`` to enhanced speech
    ``[..., T]``; recordings longer than ``chunk`` samples run in overlapping chunks
    (``infer.separate_long``), one compilation per chunk size. ``stream()`` enhances hop by
    hop (a causal LSTM only).

    Attributes (besides :class:`LoadedModel`'s):
      core: the :class:`MaskEnhancer` (STFT, features, ISTFT).
      module: the mask net, normalised features ``[B, frames, F] -> mask [B, frames, F]``
        (``F = n_fft // 2 + 1``). variables: ``{"params": ...}`` for ``module.apply``.
      model_state: ``{"feature_mean", "feature_std"}``, each ``[F]``, the feature
        normalisation.
      chunk, overlap: the default chunking (samples): the training crop and the receptive
        field (``infer.default_chunking``).
    """

    system = "enhancement"

    def __init__(self, workdir, config, step, params, model_state) -> None:
        rate = config.data.sample_rate
        super().__init__(workdir, config, step, rate)
        self.core = MaskEnhancer(config.model, rate, config.train.dtype)
        self.module = self.core.model
        self.variables = {"params": params}
        self.model_state = model_state
        crop = config.data.num_samples
        self.chunk, self.overlap = infer.default_chunking(crop, self.core.receptive_field)

    def enhance(self, wave, video=None, *, chunk: int | None = None, overlap: int | None = None):
        """Enhanced speech ``[..., T]`` float32 of noisy speech ``wave [..., T]`` at
        ``sample_rate``. ``video`` is for audio-visual models only; ``chunk`` and
        ``overlap`` (samples) override the default chunking."""
        if video is not None:
            raise ConfigError(
                f"{self.workdir} is an audio-only enhancement run; a video needs an "
                "audio-visual workdir (configs/av/*.py)"
            )
        rows, lead = waveform_rows(wave)
        chunking = {"chunk": chunk or self.chunk, "overlap": overlap or self.overlap}
        if chunking["chunk"] <= self.core.n_fft // 2:
            raise ConfigError(
                f"chunks of {chunking['chunk']} samples are shorter than half an STFT window "
                f"({self.core.n_fft // 2 + 1} samples at {self.sample_rate} Hz); use longer chunks"
            )
        variables = (self.variables["params"], self.model_state)
        out = [
            infer.separate_long(self.core.enhance_chunks, variables, row, **chunking)[0]
            for row in rows
        ]
        return np.stack(out).reshape(*lead, rows.shape[-1])

    def stream(self):
        """A :class:`jaxspeech.stream.StreamingEnhancer` of this model (a causal LSTM):
        ``process_hop`` takes ``hop`` samples at a time."""
        from jaxspeech import stream

        return stream.StreamingEnhancer(self)
