"""Audio-visual enhancement of one recording of any length, and its picture.

:func:`enhance_with_video` runs a trained gate stage's system (Net 1, lip net, gate) on a
recording and the video of the talker's face: the mouth track (``jaxspeech.data.mouths``,
cached) gives a crop and a face flag per STFT frame, and the causal system runs as the
:class:`jaxspeech.stream.AVStreamingEnhancer` does, ``block_hops`` hops per jitted
``lax.scan`` (one compilation, memory independent of the length, a progress bar per block).
A non-causal system runs offline in one call. Frames without a face (:func:`faceless_spans`)
are enhanced by the audio net alone: the gate is closed there.

:func:`plot_enhancement` draws the spectrogram before and after, the lip band mask, the gate
and the face-present flag over time (matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxspeech import stream
from jaxspeech.data.av import cache_folder, lip_frames
from jaxspeech.errors import MissingExtraError
from jaxspeech.files import atomic_output


def video_track(model, video: str):
    """The :class:`~jaxspeech.data.mouths.MouthTrack` of ``video`` as the loaded
    :class:`~jaxspeech.inference.av.AVEnhancer` ``model`` was trained to see it (cached)."""
    from jaxspeech.data.mouths import mouth_track

    cfg = model.config.data
    return mouth_track(video, cfg.mouth, cache_folder(cfg.cache_dir))


def faceless_spans(track) -> list[tuple[int, int, float, float]]:
    """``(first frame, last frame, start s, end s)`` of every run of video frames of
    ``track`` without a face, where the system enhances by the audio net alone."""
    from jaxspeech.data.mouths import true_runs

    times = np.append(track.timestamps, track.timestamps[-1] + track.frame_duration)
    return [
        (int(start), int(stop) - 1, float(times[start]), float(times[stop]))
        for start, stop in true_runs(~np.asarray(track.face_present, bool))
    ]


def frame_inputs(model, video: str, n_frames: int, centre_offset: int):
    """Mouth crops ``[n_frames, h, w]`` and face flags ``[n_frames]`` of STFT frames ``t``
    centred on sample ``t·hop + centre_offset`` of the recording, from ``video``'s track
    (:func:`video_track`)."""
    return lip_frames(
        *video_track(model, video).lip_inputs(),
        n_frames,
        model.hop,
        model.sample_rate,
        -centre_offset / model.sample_rate,
    )


def enhance_with_video(model, noisy: np.ndarray, video: str, block_hops: int = 512, progress=True):
    """Enhanced ``[samples]`` of ``noisy [samples]`` (mono, the model's rate) by the loaded
    :class:`~jaxspeech.inference.av.AVEnhancer` ``model`` with the face in ``video`` (module
    docstring); returns ``(enhanced, lips, face)`` with the per-frame crops and flags used."""
    causal = model.lip_net.config.causal and not model.gate_net.config.bidirectional
    audio = model.audio
    if not causal:
        n_frames = 1 + noisy.shape[-1] // audio.hop
        lips, face = frame_inputs(model, video, n_frames, 0)
        params = model.variables["params"]
        out = jax.jit(model.enhance_frames)(params, noisy[None], lips[None], face[None])[0]
        return np.asarray(out), lips, face
    n_hops = stream.causal_frames(audio.n_fft, audio.hop, noisy.shape[-1])
    lips, face = frame_inputs(model, video, n_hops, audio.hop - audio.n_fft // 2)
    return stream_blocks(model, noisy, lips, face, block_hops, progress), lips, face


def stream_blocks(model, noisy, lips, face, block_hops: int = 512, progress=False):
    """The causal AV system of the loaded ``model`` on ``noisy [samples]`` with the crops
    ``lips [frames, h, w]`` and flags ``face [frames]`` of its ``stream.causal_frames``
    frames: the stream, run ``block_hops`` hops per jitted scan; equals
    ``stream.enhance_causal_av``."""
    enhancer = stream.AVStreamingEnhancer(model)
    hop, delay = enhancer.hop, enhancer.delay
    n_hops = len(face)
    n_blocks = -(-n_hops // block_hops)
    total = n_blocks * block_hops
    samples = np.zeros(total * hop, np.float32)
    samples[: noisy.shape[-1]] = noisy
    crops = np.zeros((total, *lips.shape[1:]), np.float32)
    crops[:n_hops] = lips
    flags = np.zeros(total, bool)
    flags[:n_hops] = face

    @jax.jit
    def block(state, hops, crops, flags):
        step = lambda s, x: enhancer._hop_step(enhancer.variables, s, *x)
        return jax.lax.scan(step, state, (hops, crops, flags))

    state, pieces = enhancer.init_state(), []
    for index in tqdm(range(n_blocks), "enhancing", unit="block", disable=not progress):
        part = slice(index * block_hops, (index + 1) * block_hops)
        hops = samples[part.start * hop : part.stop * hop].reshape(block_hops, hop)
        state, out = block(state, hops, crops[part], flags[part])
        pieces.append(np.asarray(out).reshape(-1))
    return np.concatenate(pieces)[delay : delay + noisy.shape[-1]]


def pyplot():
    """``matplotlib.pyplot`` (Agg backend), or MissingExtraError naming the plot extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingExtraError(
            "--plot needs matplotlib; install the plot extra: pip install 'jaxspeech[plot]'"
        ) from err
    return plt


def plot_enhancement(path, model, noisy, enhanced, lips, face) -> pathlib.Path:
    """Writes ``path`` (PNG): noisy and enhanced log spectrograms, the lip band mask, the gate
    g and the face flag over time (centred frames of the whole recording) of the loaded
    ``model``."""
    plt = pyplot()
    audio, params = model.audio, model.variables["params"]
    n_frames = 1 + noisy.shape[-1] // audio.hop
    lips_c = np.zeros((n_frames, *lips.shape[1:]), np.float32)
    face_c = np.zeros(n_frames, bool)
    count = min(n_frames, len(face))
    lips_c[:count], face_c[:count] = lips[:count], face[:count]

    @jax.jit
    def pictures(noisy, enhanced, lips, face):
        spec = audio.spectrum(noisy)
        outputs = model.masks_from_spectrum(params, spec[None], lips[None], face[None])
        log = lambda s: 20 * jnp.log10(jnp.abs(s) + 1e-6)
        return log(spec), log(audio.spectrum(enhanced)), outputs["lips"][0], outputs["gate"][0]

    before, after, lip_mask, gate = map(np.asarray, pictures(noisy, enhanced, lips_c, face_c))
    seconds = n_frames * audio.hop / audio.sample_rate
    extent = (0, seconds, 0, audio.sample_rate / 2000)
    figure, axes = plt.subplots(5, 1, figsize=(10, 11), sharex=True)
    for axis, spec, title in ((axes[0], before, "noisy"), (axes[1], after, "enhanced")):
        axis.imshow(spec.T, origin="lower", aspect="auto", extent=extent, vmin=spec.max() - 80)
        axis.set(title=title, ylabel="kHz")
    axes[2].imshow(lip_mask.T, origin="lower", aspect="auto", extent=(0, seconds, 0, 1))
    axes[2].set(title="lip band mask", ylabel="band (low → high)")
    times = np.arange(n_frames) * audio.hop / audio.sample_rate
    axes[3].plot(times, gate.mean(axis=-1))
    axes[3].set(title="gate g", ylim=(-0.05, 1.05))
    axes[4].step(times, face_c.astype(float), where="mid")
    axes[4].set(title="face present", ylim=(-0.05, 1.05), xlabel="seconds")
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
    return pathlib.Path(path)
