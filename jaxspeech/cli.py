"""The ``jaxspeech`` command: run trained models on audio files.

    jaxspeech separate MIX.wav --workdir DIR -o OUTDIR [--checkpoint best|latest|STEP]
                               [--chunk-seconds S] [--overlap-seconds S]
    jaxspeech enhance NOISY.wav --workdir DIR -o OUT.wav [--stage NAME] [--checkpoint ...]
                                [--chunk-seconds S] [--overlap-seconds S]

Each subcommand is a ``_add_<name>(subparsers)`` function that declares its arguments and sets
``run`` to the function doing the work; bad input (a :class:`JaxspeechError`) is reported as
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

import jax
import numpy as np

from jaxspeech import audio, infer
from jaxspeech.errors import ConfigError, JaxspeechError

#: Largest magnitude written by ``enhance`` (16-bit PCM never clips below 1).
OUTPUT_PEAK = 0.99


def load_trained_model(workdir: str, checkpoint: str):
    """``(task, params, model_state, sample_rate)`` of a training run's checkpoint, the
    arrays on one device."""
    from jaxspeech.train.restore import restore_run  # imports the trainer only when needed

    run = restore_run(workdir, checkpoint, devices=jax.devices()[:1])
    return run.task, run.params, run.model_state, run.task.config.data.mixture.sample_rate


def stage_workdir(workdir: str, stage: str | None) -> pathlib.Path:
    """The run to load from ``workdir``: itself for a single run; for a multi-stage workdir
    (with ``stages.json``) ``workdir/<stage>``, by default "student" (the distilled model of
    ``configs/enhancement/distill.py``) if there is one, else the last stage."""
    from jaxspeech.train.stages import stage_names

    names = stage_names(workdir)
    if names is None:
        if stage is not None:
            raise ConfigError(f"--stage={stage}: {workdir} is a single run, not multi-stage")
        return pathlib.Path(workdir)
    if stage is None:
        stage = "student" if "student" in names else names[-1]
    if stage not in names:
        raise ConfigError(f"--stage={stage} is not a stage of {workdir}; use one of {names}")
    path = pathlib.Path(workdir) / stage
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"stage {stage!r} has not been trained in {path}; finish the recipe with train.py "
            "or pick another --stage"
        )
    return path


def seconds_to_samples(seconds: float, sample_rate: int, name: str) -> int:
    """``round(seconds · sample_rate)``; raises ConfigError naming ``name`` if not positive."""
    samples = round(seconds * sample_rate)
    if samples < 1:
        raise ConfigError(f"{name}={seconds} s is less than one sample at {sample_rate} Hz")
    return samples


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="training workdir (config.json)")
    parser.add_argument(
        "--checkpoint", default="best", help="best, latest or a step number (default: best)"
    )


def _add_chunk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=infer.DEFAULT_CHUNK_SECONDS,
        help="length of the chunks the model sees; use about the training segment length "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=infer.DEFAULT_OVERLAP_SECONDS,
        help="overlap of neighbouring chunks, at most half a chunk; at least the model's "
        "receptive field is best (default: %(default)s)",
    )


def _check_chunk_arguments(args: argparse.Namespace) -> None:
    if not 0 < 2 * args.overlap_seconds <= args.chunk_seconds:
        raise ConfigError(
            f"--overlap-seconds={args.overlap_seconds} must be positive and at most half of "
            f"--chunk-seconds={args.chunk_seconds}"
        )


def _chunking(args: argparse.Namespace, sample_rate: int) -> dict[str, int]:
    """``separate_long``'s ``chunk`` and ``overlap`` in samples."""
    return {
        "chunk": seconds_to_samples(args.chunk_seconds, sample_rate, "--chunk-seconds"),
        "overlap": seconds_to_samples(args.overlap_seconds, sample_rate, "--overlap-seconds"),
    }


def _separate(args: argparse.Namespace) -> None:
    _check_chunk_arguments(args)
    mixture, file_rate = audio.load(args.mixture)  # fails fast, before the model is loaded
    task, params, _, sample_rate = load_trained_model(args.workdir, args.checkpoint)
    mixture = audio.resample(mixture, file_rate, sample_rate)
    sources = infer.separate_long(task.separate, params, mixture, **_chunking(args, sample_rate))
    sources = np.asarray(infer.rescale_to_mixture(sources, mixture))
    stem = pathlib.Path(args.mixture).stem
    for index, source in enumerate(sources, start=1):
        path = pathlib.Path(args.output_dir) / f"{stem}_s{index}.wav"
        audio.save(path, source, sample_rate)
        print(path)


def _add_separate(subparsers) -> None:
    parser = subparsers.add_parser(
        "separate",
        help="split a recording into its speakers",
        description="Separates MIXTURE with a trained separation model into "
        "OUTPUT_DIR/<stem>_s1.wav, _s2.wav, … at the model's sample rate, each at its level "
        "in the mixture. Stereo input is downmixed, other rates are resampled.",
    )
    parser.add_argument("mixture", help="audio file (WAV, FLAC or OGG)")
    _add_model_arguments(parser)
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the sources")
    _add_chunk_arguments(parser)
    parser.set_defaults(run=_separate)


def _enhance(args: argparse.Namespace) -> None:
    _check_chunk_arguments(args)
    noisy, file_rate = audio.load(args.noisy)  # fails fast, before the model is loaded
    run_dir = stage_workdir(args.workdir, args.stage)
    task, params, model_state, sample_rate = load_trained_model(str(run_dir), args.checkpoint)
    if task.config.task != "enhancement":
        raise ConfigError(
            f"{run_dir} is a {task.config.task!r} run; enhance needs an enhancement run "
            "(configs/enhancement/*.py)"
        )
    noisy = task.prepare_waveform(noisy, file_rate, args.noisy)
    chunking = _chunking(args, sample_rate)
    if chunking["chunk"] <= task.n_fft // 2:
        raise ConfigError(
            f"--chunk-seconds={args.chunk_seconds} is shorter than half an STFT window "
            f"({task.n_fft // 2 + 1} samples at {sample_rate} Hz); use longer chunks"
        )
    variables = (params, model_state)
    enhanced = infer.separate_long(task.enhance_chunks, variables, noisy, **chunking)[0]
    peak = float(np.abs(enhanced).max())
    if peak > OUTPUT_PEAK:
        enhanced = enhanced * (OUTPUT_PEAK / peak)
    audio.save(args.output, enhanced, sample_rate)
    print(args.output)


def _add_enhance(subparsers) -> None:
    parser = subparsers.add_parser(
        "enhance",
        help="remove background noise from a recording",
        description="Enhances NOISY with a trained mask-based enhancement model into OUTPUT at "
        "the model's sample rate, at the input's level (scaled down only if a sample would "
        f"exceed ±{OUTPUT_PEAK}). Stereo input is downmixed, other rates are resampled; "
        "silence stays silence; clipped input is enhanced as it is (clipping is not repaired). "
        "Files of any length are processed in overlapping chunks.",
    )
    parser.add_argument("noisy", help="audio file (WAV, FLAC or OGG)")
    _add_model_arguments(parser)
    parser.add_argument(
        "--stage",
        help="for a multi-stage workdir (stages.json): the stage to use "
        "(default: student if there is one, else the last stage)",
    )
    parser.add_argument("-o", "--output", required=True, help="enhanced audio file")
    _add_chunk_arguments(parser)
    parser.set_defaults(run=_enhance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxspeech", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_separate(subparsers)
    _add_enhance(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except JaxspeechError as err:
        print(f"jaxspeech {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
