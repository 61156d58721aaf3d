"""Audio-visual enhancement: the masks of the gate system shared by training and inference
(:class:`AVMasking`), and the loaded gate stage (:class:`AVEnhancer`) with its frozen audio
net (Net 1) and lip net (Net 2)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.errors import ConfigError
from jaxspeech.inference.enhancement import Enhancer
from jaxspeech.inference.model import LoadedModel
from jaxspeech.models.av import LipNet, av_mask, build_gate_net, gate_inputs


class AVMasking:
    """The masks of the AV system (``jaxspeech.train.tasks.av``): needs the attributes
    ``config`` (the gate or lips stage's), ``audio`` (Net 1, a
    :class:`~jaxspeech.inference.enhancement.MaskEnhancer`), ``audio_variables`` (its
    ``(params, model_state)``), ``lip_net``, ``lips_params``, ``gate_net``."""

    @property
    def crop_shape(self) -> tuple[int, int]:
        size = self.config.data.mouth.crop_size
        return (size, size)

    def lip_mask(self, lips_params, lips: jax.Array, face: jax.Array) -> jax.Array:
        """The lip band mask ``[..., frames, M]`` (sigmoid of the lip net)."""
        return jax.nn.sigmoid(self.lip_net.apply({"params": lips_params}, lips, face))

    def masks_from_spectrum(self, params, spec, lips, face) -> dict[str, jax.Array]:
        """Every mask of the AV system for a noisy STFT ``spec [B, frames, F]``, the mouth
        crops ``lips [B, frames, h, w]`` and face flags ``face [B, frames]``: ``audio``
        (Net 1), ``lips`` (band mask), ``gate`` (0 where no face) and ``mask`` (output)."""
        lip_mask = self.lip_mask(self.lips_params, lips, face)
        return {"lips": lip_mask, **self.masks_from_bands(params, spec, lip_mask, face)}

    def masks_from_bands(self, params, spec, bands, face) -> dict[str, jax.Array]:
        """``audio`` (Net 1), ``gate`` and output ``mask`` for a noisy STFT ``spec [B, frames,
        F]`` and a band mask ``bands [B, frames, M]`` (the lip net's, or an oracle's), face
        flags ``face [B, frames]``; ``params`` None opens the gate (g = 1 on face frames)."""
        audio_params, audio_state = self.audio_variables
        features = self.audio.features(spec, audio_state)
        audio_mask = self.audio.model.apply({"params": audio_params}, features)
        if params is None:
            gate = jnp.ones_like(audio_mask[..., :1])
        else:
            gate = self.gate_net.apply({"params": params}, gate_inputs(audio_mask, bands))
        mask, gate = av_mask(audio_mask, bands, gate, face)
        return {"audio": audio_mask, "gate": gate, "mask": mask}

    def enhance_frames(self, params, noisy, lips, face) -> jax.Array:
        """Audio-visual enhancement ``[B, samples]`` of ``noisy [B, samples]`` given the video
        of each centred frame: ``lips [B, 1 + samples // hop, h, w]``, ``face`` likewise."""
        spec = self.audio.spectrum(noisy)
        mask = self.masks_from_spectrum(params, spec, lips, face)["mask"]
        return self.audio.resynthesise(spec, mask, noisy.shape[-1])


class AVEnhancer(LoadedModel, AVMasking):
    """A trained audio-visual gate stage (``configs/av/lipgate.py``) with its frozen audio and
    lip stages, loaded by :func:`jaxspeech.load`.

    ``enhance(wave, video=None)`` maps noisy speech ``[T]`` at ``sample_rate`` to enhanced
    speech ``[T]`` with the talker's face in the video file ``video`` (the mouth track, see
    :mod:`jaxspeech.avfile`); without a video, Net 1 alone (``audio_model``) enhances
    ``[..., T]``. ``stream()`` enhances hop by hop (causal nets only).

    Attributes (besides :class:`LoadedModel`'s):
      audio_model: Net 1 as an :class:`~jaxspeech.inference.enhancement.Enhancer`.
      module: the gate net, ``[B, frames, 3·M]`` (Net 1's mask in M bands, the lip band
        mask, their product) -> gate ``[B, frames, M]``. variables: ``{"params": ...}`` for
        ``module.apply``. lip_net: Net 2 (mouth crops ``[B, frames, h, w]``, face flags
        ``[B, frames]`` -> band logits ``[B, frames, M]``), lips_params: its params.
    """

    system = "av"

    def __init__(self, workdir, config, step, params, audio_model: Enhancer, lips) -> None:
        super().__init__(workdir, config, step, audio_model.sample_rate)
        if config.model.net != "gate":
            raise ConfigError(
                f"{workdir} is the lip net's stage; load the gate stage (or the AV workdir)"
            )
        lips_config, self.lips_params = lips
        self.audio_model, self.audio = audio_model, audio_model.core
        self.audio_variables = (audio_model.variables["params"], audio_model.model_state)
        self.hop, self.n_fft, self.n_bands = self.audio.hop, self.audio.n_fft, config.model.n_bands
        dtype = config.train.dtype
        self.lip_net = LipNet(lips_config.model.n_bands, lips_config.model.lip_net, dtype)
        self.gate_net = build_gate_net(config.model.gate_net, self.n_bands, dtype)
        self.module, self.variables = self.gate_net, {"params": params}

    def enhance(self, wave, video: str | pathlib.Path | None = None, *, progress=False):
        """Enhanced speech: ``[T]`` of ``wave [T]`` with ``video``, or Net 1's ``[..., T]``
        without one (module docstring)."""
        if video is None:
            return self.audio_model.enhance(wave)
        from jaxspeech import avfile

        noisy = np.asarray(wave, np.float32)
        return avfile.enhance_with_video(self, noisy, str(video), progress=progress)[0]

    def stream(self):
        """A :class:`jaxspeech.stream.AVStreamingEnhancer` of this system (causal nets):
        ``process_hop`` takes ``hop`` samples and, when one arrives, a video frame's crop."""
        from jaxspeech import stream

        return stream.AVStreamingEnhancer(self)
