"""Speech separation: the separators shared by training and inference (Conv-TasNet, deep
clustering; :func:`build_separator`), and the loaded model (:class:`Separator`)."""

from __future__ import annotations

import jax
import numpy as np

from jaxspeech import dsp, infer
from jaxspeech.errors import ConfigError
from jaxspeech.inference.model import LoadedModel, waveform_rows
from jaxspeech.models.dpcl import DeepClustering, DeepClusteringConfig, separate_dpcl
from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig


class ConvTasNetSeparator:
    """Conv-TasNet: the module maps mixtures ``[B, T]`` to sources ``[B, S, T]``."""

    name = "Conv-TasNet"

    def __init__(self, config: ConvTasNetConfig, sample_rate: int, dtype) -> None:
        del sample_rate  # works on samples
        self.config = config
        self.model = ConvTasNet(config, dtype)

    @property
    def receptive_field(self) -> int:
        """Input samples an output sample depends on: ``(L/2)·(1 + R·(P−1)·(2^X − 1))``."""
        return self.config.filter_length // 2 * infer.tcn_receptive_frames(self.config.tcn)

    def init(self, rng: jax.Array, mixture: jax.Array):
        return self.model.init(rng, mixture)["params"]

    def separate(self, params, mixture: jax.Array) -> jax.Array:
        return self.model.apply({"params": params}, mixture)


class DeepClusteringSeparator:
    """Deep clustering: the module embeds time-frequency bins; k-means separates."""

    name = "deep clustering"
    receptive_field = None  # a BLSTM over the whole input

    def __init__(self, config: DeepClusteringConfig, sample_rate: int, dtype) -> None:
        self.config = config
        self.n_fft = round(config.window_ms * sample_rate / 1000)
        self.hop = round(config.hop_ms * sample_rate / 1000)
        self.model = DeepClustering(config, dtype)

    def _stft(self, wav: jax.Array) -> jax.Array:
        return dsp.stft(wav, self.n_fft, self.hop)

    @staticmethod
    def features(spectrum: jax.Array) -> jax.Array:
        """Log magnitude ``[..., T, F]`` normalised over time per utterance."""
        return dsp.cmvn(dsp.log_magnitude(spectrum))

    def init(self, rng: jax.Array, mixture: jax.Array):
        return self.model.init(rng, self.features(self._stft(mixture)))["params"]

    def separate(self, params, mixture: jax.Array) -> jax.Array:
        return separate_dpcl(
            lambda p, x: self.model.apply({"params": p}, x),
            params,
            mixture,
            self.config.n_src,
            self.n_fft,
            self.hop,
            features=self.features,
            threshold_db=self.config.silence_db,
            kmeans_iters=self.config.kmeans_iters,
        )


SEPARATORS = {ConvTasNetConfig: ConvTasNetSeparator, DeepClusteringConfig: DeepClusteringSeparator}


def build_separator(model_config, sample_rate: int, dtype, kinds=SEPARATORS):
    """The separator of ``model_config`` (``kinds``: separator class per config class; the
    training task gives its trainable subclasses)."""
    kind = kinds.get(type(model_config))
    if kind is None:
        raise ConfigError(
            f"model config {type(model_config).__name__} is not a separation model; use "
            "ConvTasNetConfig or DeepClusteringConfig"
        )
    return kind(model_config, sample_rate, dtype)


class Separator(LoadedModel):
    """A trained separation run (``configs/separation/*``), loaded by :func:`jaxspeech.load`.

    ``separate(wave)`` maps mixtures ``[..., T]`` at ``sample_rate`` to ``[..., S, T]``
    sources, each at its level in the mixture (``infer.rescale_to_mixture`` without a peak
    limit: the gains fitted jointly, so a faint track stays faint) and in one order through
    the whole recording; recordings longer than ``chunk`` samples run in overlapping chunks
    whose tracks are matched on the overlap and cross-faded (``infer.separate_long``), shorter
    ones in one call. Each row of a batch is separated on its own.

    Attributes (besides :class:`LoadedModel`'s):
      n_src: S. core: the separator (``ConvTasNetSeparator`` or ``DeepClusteringSeparator``).
      module: Conv-TasNet (mixtures ``[B, T] -> [B, S, T]``) or the deep-clustering
        embedding net (features ``[B, frames, F] -> [B, frames, F, D]``).
      variables: ``{"params": ...}`` for ``module.apply``.
      chunk, overlap: the default chunking (samples): a convolutional model (Conv-TasNet)
        takes recordings up to ``WHOLE_SECONDS`` in one call and longer ones in chunks that
        long, overlapping by its receptive field; a recurrent one (deep clustering) its
        training crop, half of it overlapping (``infer.default_chunking``).
    """

    #: Longer chunks separate better: each chunk boundary is a chance to swap speakers, and a
    #: chunk's global norm (gLN) is steadier over more signal. The ``cpu`` Conv-TasNet (1 s
    #: crops, 0.51 s receptive field) on ``evaluate.py --long-mixtures`` (64 two-speaker files
    #: of 2.9-12.6 s, 16 one-speaker files): median SI-SNRi 1.94 dB, 28 % of files below 0 dB,
    #: 62.5 % without a swap, 37.5 % of lone voices split, in 2.04 s chunks (four receptive
    #: fields, the earlier default); 2.58 dB, 19 %, 69 %, 37.5 % in 4 s chunks;
    #: 3.32 dB, 17 %, 69 %, 31 % on each whole file. Memory grows with the chunk: 30 s of 8 kHz
    #: audio is 30,000 frames per channel, well within one accelerator. Every recording length
    #: up to a chunk compiles once.
    WHOLE_SECONDS = 30.0

    system = "separation"

    def __init__(self, workdir, config, step, params, model_state) -> None:
        del model_state  # none
        rate = config.data.mixture.sample_rate
        super().__init__(workdir, config, step, rate)
        self.core = build_separator(config.model, rate, config.train.dtype)
        self.module, self.variables = self.core.model, {"params": params}
        self.n_src = config.model.n_src
        crop = config.data.mixture.num_samples
        field = self.core.receptive_field
        whole = 0 if field is None else round(self.WHOLE_SECONDS * rate)
        self.chunk, self.overlap = infer.default_chunking(crop, field, min_chunk=whole)

    def separate(self, wave, *, chunk: int | None = None, overlap: int | None = None):
        """Sources ``[..., S, T]`` float32 of mixtures ``wave [..., T]``; ``chunk`` and
        ``overlap`` (samples) override the default chunking."""
        rows, lead = waveform_rows(wave)
        chunking = {"chunk": chunk or self.chunk, "overlap": overlap or self.overlap}
        params = self.variables["params"]
        out = []
        for row in rows:
            sources = infer.separate_long(self.core.separate, params, row, **chunking)
            out.append(np.asarray(infer.rescale_to_mixture(sources, row, peak=np.inf)))
        return np.stack(out).reshape(*lead, self.n_src, rows.shape[-1])
