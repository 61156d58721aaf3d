"""Audio-visual enhancement speed on this machine: the lip net's training step at the smoke
and full sizes of ``configs/av/lipgate.py``, and the real-time factor of the causal AV system
(Net 1 + lip net + gate, streamed in blocks as ``jaxspeech enhance --video`` runs it) on 60 s.

Usage: ``python bench/av_speed.py [--steps 5]``. Weights are random (speed does not depend on
them); inputs are random crops of the recipe's crop size. The 60 s figure covers the models
only: decoding and mouth extraction are measured by the video benchmark.
"""

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspeech import avfile
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


def system_rtf(variant: str, seconds: float = 60.0) -> float:
    """Real-time factor of the causal AV system on ``seconds`` of audio (after compiling)."""
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
    gate = av.Task(recipe.stages[2].config, {"audio": audio_run, "lips": lips_run})
    gate_params = random_params(gate.gate_net, jnp.zeros((1, 4, 3 * gate.n_bands)))
    rng = np.random.default_rng(1)
    noisy = (0.1 * rng.standard_normal(round(seconds * gate.sample_rate))).astype(np.float32)
    n_frames = -(-(noisy.size + gate.n_fft - gate.hop) // gate.hop)
    lips = rng.uniform(0, 1, (n_frames, *crop)).astype(np.float32)
    face = np.ones(n_frames, bool)
    avfile.stream_blocks(gate, gate_params, noisy[: gate.hop * 600], lips[:600], face[:600])
    start = time.perf_counter()
    avfile.stream_blocks(gate, gate_params, noisy, lips, face)
    return (time.perf_counter() - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    for variant in ("smoke", ""):
        seconds, batch, frames = lip_step_seconds(variant, args.steps)
        name = variant or "full"
        print(f"lip net training step, {name}: {seconds * 1000:.0f} ms "
              f"(batch {batch} × {frames} frames)")  # fmt: skip
        print(f"AV system RTF on 60 s, {name} (causal, streamed in blocks): "
              f"{system_rtf(variant):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
