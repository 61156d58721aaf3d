"""Speed of the background-music matcher: ranking a cached library, descriptor extraction,
one training step (the recipe's default model, `configs/bgm/match.py`).

Usage: python bench/bgm_speed.py [--tracks 100000] [--repeats 5] [--data ../shared/data]

- ranking: scores of one recording against `--tracks` cached deep features (one `[N, D] x
  [D, H]` product and the head, `jaxspeech.models.bgm.rank_library`) and the top 5;
- extraction: every file of `music/` and `gtzan/` decoded, resampled to 22.05 kHz, clipped
  and described; seconds of audio per second, of the files' whole length and of the clips;
- training step: forward + backward + AdamW on a batch of 64 pairs.
"""

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import soundfile as sf

from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.models.bgm import BGMConfig
from jaxspeech.train.tasks.bgm import BGMTaskConfig, Task

BATCH, TOP_K = 64, 5


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _task() -> tuple[Task, dict, dict]:
    task = Task(BGMTaskConfig(model=BGMConfig()))
    params, state = task.init_model(jax.random.key(0))
    return task, params, state


def ranking_seconds(tracks: int, repeats: int) -> float:
    """Median seconds to score `tracks` cached tracks for one recording and take the top 5."""
    task, params, _ = _task()
    rng = np.random.default_rng(0)
    library = jnp.asarray(rng.standard_normal((tracks, task.config.model.embedding_dim)), "float32")
    query = library[0]
    rank = jax.jit(task.rank)

    def top():
        scores = np.asarray(rank(params, query, library))
        return np.argpartition(-scores, TOP_K)[:TOP_K]

    return median_seconds(top, repeats)


def extraction_rates(data: pathlib.Path) -> dict[str, float]:
    """Files, seconds of audio (whole files and clips) and the seconds per second of each."""
    task, _, _ = _task()
    paths = sorted((data / "music").glob("*.ogg")) + sorted((data / "gtzan").glob("*.ogg"))
    task.file_descriptors(str(paths[0]))  # compiles
    start = time.perf_counter()
    for path in paths:
        task.file_descriptors(str(path))
    wall = time.perf_counter() - start
    audio_seconds = sum(sf.info(str(p)).duration for p in paths)
    clip_seconds = len(paths) * task.config.model.clip_seconds
    return {
        "files": len(paths),
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "audio_per_second": audio_seconds / wall,
        "clip_per_second": clip_seconds / wall,
    }


def training_step_seconds(repeats: int) -> float:
    """Median seconds of one jitted forward + backward + AdamW step on 64 pairs."""
    task, params, state = _task()
    shape = (BATCH, task.num_segments, len(task.names))
    rng = np.random.default_rng(0)
    batch = {
        "first": jnp.asarray(rng.standard_normal(shape), jnp.float32),
        "second": jnp.asarray(rng.standard_normal(shape), jnp.float32),
        "label": jnp.asarray(rng.random(BATCH), jnp.float32),
    }
    optimizer = optax.adamw(1e-3, weight_decay=1e-4)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: task.loss_fn(p, state, batch, None)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    carry = [params, optimizer.init(params)]

    def run():
        carry[:] = step(*carry)
        return carry[0]

    return median_seconds(run, repeats)


def report(tracks: int, repeats: int, data: pathlib.Path) -> list[str]:
    """The three measurements as Markdown lines."""
    rank = ranking_seconds(tracks, repeats)
    rates = extraction_rates(data)
    step = training_step_seconds(max(repeats, 20))
    return [
        "| measurement | figure |",
        "|---|---:|",
        f"| ranking {tracks:,} cached tracks for one recording, top {TOP_K} (median of "
        f"{repeats}) | {1000 * rank:.1f} ms |",
        f"| descriptors of {rates['files']} files of `music/` and `gtzan/` "
        f"({rates['audio_seconds']:.0f} s of audio): decode, resample to 22.05 kHz, 12 s clip, "
        f"descriptors | {rates['audio_per_second']:.0f} s of audio per second "
        f"({rates['clip_per_second']:.0f} s of clip per second) |",
        f"| training step, {BATCH} pairs, forward + backward + AdamW (median of "
        f"{max(repeats, 20)}) | {1000 * step:.2f} ms ({BATCH / step:,.0f} pairs/s) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", help="the data root (default: $JAXSPEECH_DATA, ../shared/data)")
    args = parser.parse_args()
    print("\n".join(report(args.tracks, args.repeats, resolve_data_root(args.data))))


if __name__ == "__main__":
    main()
