"""Audio-visual enhancement speed on this machine: the lip net's training step at the smoke
and full sizes of ``configs/av/lipgate.py``, and the real-time factor of the causal AV system
(Net 1 + lip net + gate, streamed in blocks as ``jaxspeech enhance --video`` runs it) on 60 s.

End to end, on a 60 s video made of GRID clips one after another (written with PyAV to a
temporary file): its sound track decoded at 16 kHz, the mouth track (decode, face detection,
crops; no cache) and the models as ``jaxspeech enhance CLIP --workdir W`` runs them, their one
compilation included; the decode + mouth rate in frames per second and the total real-time
factor are reported apart.

Usage: ``python bench/av_speed.py [--steps 5] [--data ../shared/data]``. Weights are random
(speed does not depend on them); the training step and models-only RTF use random crops of
the recipe's crop size.
"""

import argparse
import dataclasses
import pathlib
import statistics
import tempfile
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspeech import avfile
from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.data.mouths import mouth_track
from jaxspeech.data.video import read_video_audio
from jaxspeech.inference.av import AVEnhancer
from jaxspeech.inference.enhancement import Enhancer
from jaxspeech.losses import binary_cross_entropy
from jaxspeech.train import stages
from jaxspeech.train.task import TrainedRun
from jaxspeech.train.tasks import av, enhancement

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs/av/lipgate.py"


def random_params(module, *inputs, seed=0):
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.1 * rng.standard_normal(x.shape)).astype(x.dtype), shapes)


def lip_step_seconds(variant: str, steps: int) -> tuple[float, int, int]:
    """Median seconds of one lip-net training step (forward, backward, Adam), the batch size
    and frames per example."""
    config = stages.load_recipe(f"{RECIPE}:{variant}").stages[1].config
    task = av.LipNet(config.model.n_bands, config.model.lip_net)
    batch, frames = config.train.batch_size, 1 + config.data.num_samples // 256
    crop = (config.data.mouth.crop_size,) * 2
    rng = np.random.default_rng(0)
    lips = rng.uniform(0, 1, (batch, frames, *crop)).astype(np.float32)
    face = np.ones((batch, frames), bool)
    target = (rng.uniform(size=(batch, frames, config.model.n_bands)) > 0.3).astype(np.float32)
    params = random_params(task, lips[:1, :4], face[:1, :4])
    optimiser = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state):
        loss = lambda p: binary_cross_entropy(task.apply({"params": p}, lips, face), target).mean()
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimiser.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = optimiser.init(params)
    params, opt_state, value = step(params, opt_state)
    value.block_until_ready()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        params, opt_state, value = step(params, opt_state)
        value.block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times), batch, frames


def random_system(variant: str, cache_dir: str | None = None) -> AVEnhancer:
    """The gate system of the recipe's sizes as ``jaxspeech.load`` gives it, every net with
    random weights."""
    recipe = stages.load_recipe(f"{RECIPE}:{variant}")
    audio_task = enhancement.Task(recipe.stages[0].config)
    audio_params = random_params(audio_task.model, np.zeros((1, 4, audio_task.n_freqs)))
    state = {
        "feature_mean": np.zeros(audio_task.n_freqs),
        "feature_std": np.ones(audio_task.n_freqs),
    }
    audio_run = TrainedRun(pathlib.Path("audio"), audio_task, audio_params, state, 0)
    lips_task = av.Task(recipe.stages[1].config, {"audio": audio_run})
    crop = lips_task.crop_shape
    lips_params = random_params(lips_task.lip_net, np.zeros((1, 4, *crop)), np.ones((1, 4), bool))
    lips_run = TrainedRun(pathlib.Path("lips"), lips_task, lips_params, {}, 0)
    config = recipe.stages[2].config
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=cache_dir))
    gate = av.Task(config, {"audio": audio_run, "lips": lips_run})
    gate_params = random_params(gate.gate_net, jnp.zeros((1, 4, 3 * gate.n_bands)))
    audio = Enhancer(audio_run.workdir, audio_task.config, 0, audio_params, state)
    lips = (recipe.stages[1].config, lips_params)
    return AVEnhancer(pathlib.Path("gate"), config, 0, gate_params, audio, lips)


def system_rtf(variant: str, seconds: float = 60.0) -> float:
    """Real-time factor of the causal AV system on ``seconds`` of audio (after compiling)."""
    gate = random_system(variant)
    crop = gate.crop_shape
    rng = np.random.default_rng(1)
    noisy = (0.1 * rng.standard_normal(round(seconds * gate.sample_rate))).astype(np.float32)
    n_frames = -(-(noisy.size + gate.n_fft - gate.hop) // gate.hop)
    lips = rng.uniform(0, 1, (n_frames, *crop)).astype(np.float32)
    face = np.ones(n_frames, bool)
    avfile.stream_blocks(gate, noisy[: gate.hop * 600], lips[:600], face[:600])
    start = time.perf_counter()
    avfile.stream_blocks(gate, noisy, lips, face)
    return (time.perf_counter() - start) / seconds


def concatenated_video(clips: list[pathlib.Path], path: pathlib.Path, seconds: float) -> int:
    """Writes ``clips`` (GRID ``.mpg``: 25 fps video, one audio stream) one after another, from
    the first again while shorter than ``seconds``, as one MPEG-4 + MP2 file; returns its
    number of video frames."""
    import av as pyav

    with pyav.open(str(path), "w") as out:
        with pyav.open(str(clips[0])) as first:
            video_in, audio_in = first.streams.video[0], first.streams.audio[0]
            video = out.add_stream("mpeg4", rate=25)
            video.width, video.height = video_in.width, video_in.height
            video.pix_fmt, video.bit_rate = "yuv420p", 2_000_000
            sound = out.add_stream("mp2", rate=audio_in.rate, layout=audio_in.layout.name)
        frames = samples = 0
        for index in range(len(clips) * 1000):
            if frames >= seconds * 25:
                break
            with pyav.open(str(clips[index % len(clips)])) as clip:
                for frame in clip.decode(clip.streams.video[0], clip.streams.audio[0]):
                    if isinstance(frame, pyav.AudioFrame):
                        frame.pts, frame.time_base = samples, Fraction(1, sound.rate)
                        samples += frame.samples
                        out.mux(sound.encode(frame))
                    else:
                        frame.pts, frame.time_base = frames, Fraction(1, 25)
                        frames += 1
                        out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return frames


def end_to_end(variant: str, video: pathlib.Path, frames: int) -> dict[str, float]:
    """Seconds of each part of enhancing ``video``'s own sound track with its mouths (random
    weights): ``audio`` (decode at 16 kHz), ``mouths`` (decode, detect, crop; written to an
    empty cache), ``models`` (crops to STFT frames, the streamed system, its compilation);
    with ``fps`` (frames / (audio + mouths)), ``rtf`` (all parts / the sound's length), the
    sound's ``seconds`` and the ``face`` share of frames."""
    with tempfile.TemporaryDirectory() as cache:
        gate = random_system(variant, cache)
        start = time.perf_counter()
        noisy = read_video_audio(video, gate.sample_rate)
        decoded = time.perf_counter()
        face = mouth_track(video, gate.config.data.mouth, cache).face_present.mean()
        tracked = time.perf_counter()
        avfile.enhance_with_video(gate, noisy, str(video), progress=False)
        done = time.perf_counter()
    times = {"audio": decoded - start, "mouths": tracked - decoded, "models": done - tracked}
    times["fps"] = frames / (tracked - start)
    times["rtf"] = (done - start) / (noisy.size / gate.sample_rate)
    times["seconds"], times["face"] = noisy.size / gate.sample_rate, float(face)
    return times


def report(steps: int, data: pathlib.Path, seconds: float = 60.0) -> list[str]:
    """Every measurement of the module docstring, at the smoke and full sizes, as lines."""
    lines = [f"devices: {jax.devices()}"]
    clips = sorted((data / "grid/s1").glob("*.mpg"))
    with tempfile.TemporaryDirectory() as folder:
        video = pathlib.Path(folder) / "grid.mp4"
        frames = concatenated_video(clips, video, seconds)
        for variant in ("smoke", ""):
            name = variant or "full"
            times = end_to_end(variant, video, frames)
            lines.append(
                f"end to end, {name}, {times['seconds']:.1f} s video ({frames} frames): "
                f"decode + mouths {times['fps']:.1f} frames/s (audio {times['audio']:.1f} s, "
                f"mouths {times['mouths']:.1f} s, face in {times['face']:.3f}), "
                f"models {times['models']:.1f} s, total RTF {times['rtf']:.2f}"
            )
    for variant in ("smoke", ""):
        step, batch, frames = lip_step_seconds(variant, steps)
        name = variant or "full"
        lines.append(
            f"lip net training step, {name}: {step * 1000:.0f} ms (batch {batch} × {frames} frames)"
        )
        lines.append(
            f"AV system RTF on 60 s, {name} (causal, streamed in blocks): {system_rtf(variant):.3f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--data", help="the data root (default: $JAXSPEECH_DATA, ../shared/data)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the end-to-end video")
    args = parser.parse_args()
    print("\n".join(report(args.steps, resolve_data_root(args.data), args.seconds)))


if __name__ == "__main__":
    main()
