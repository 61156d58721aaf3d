"""``jaxspeech embed`` and ``jaxspeech verify``: speaker embeddings of recordings, and whether
two recordings have the same speaker, with a speaker run."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

import jaxspeech
from jaxspeech import audio, files
from jaxspeech.commands.outputs import add_run_arguments, check_output_folder, report_conversion
from jaxspeech.commands.runs import add_model_arguments, trained_run
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError
from jaxspeech.inference.speaker import prepare_recording
from jaxspeech.workdir import VERIFICATION


def _speaker_recordings(sources: Sequence[str], model_rate: int, quiet: bool) -> tuple:
    """``(paths, waveforms)``: every file of ``sources`` (a folder gives its audio files, sorted)
    read, checked and converted to the model's input (``prepare_recording``)."""
    from jaxspeech.data.corpus import audio_files

    paths = [p for s in sources for p in (audio_files(s) if os.path.isdir(s) else [s])]
    waveforms = []
    for path in paths:
        wav, file_rate = audio.load(path, mono=False)
        report_conversion(path, wav.shape[0], file_rate, model_rate, quiet)
        waveforms.append(prepare_recording(wav, file_rate, model_rate, path))
    return paths, waveforms


def _embed(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} must be at least 1")
    output = pathlib.Path(args.output)
    if output.suffix != ".npz":
        raise ConfigError(f"{output}: the embeddings are written as .npz; name it *.npz")
    if output.is_dir():
        raise ConfigError(f"{output} is a folder; give the output a file name")
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} exists; pass --overwrite to replace it, or choose another")
    check_output_folder(output.parent)
    _, config = trained_run(args.workdir, args.stage, "speaker", "embed")
    paths, waveforms = _speaker_recordings(args.inputs, config.data.sample_rate, args.quiet)
    model = jaxspeech.load(args.workdir, stage=args.stage, checkpoint=args.checkpoint)
    desc = None if args.quiet else "embedding"
    embeddings = model.embed_recordings(waveforms, args.batch_size, desc)
    output.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_output(output) as temporary:
        np.savez(temporary, embeddings=embeddings.astype(np.float32), paths=np.asarray(paths))
    print(output, flush=True)


def _add_embed(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="speaker embeddings of recordings",
        description="Writes the speaker embedding of every recording (files, and the audio "
        "files below each folder, sorted) into OUTPUT.npz: 'embeddings' [N, D] float32 and "
        "'paths' [N], one row per file in the order given. Recordings of any length are "
        "embedded whole, batched by length; stereo is downmixed and other rates resampled. A "
        "recording under 0.5 s is refused, as is unreadable, empty or NaN audio, before the "
        "model is loaded.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders")
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="the .npz file to write")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="recordings per model call (default: %(default)s)"
    )
    add_run_arguments(parser)
    parser.set_defaults(run=_embed)


def _verify(args: argparse.Namespace) -> None:
    run_dir, config = trained_run(args.workdir, args.stage, "speaker", "verify")
    record_path = run_dir / VERIFICATION
    if not record_path.is_file():
        raise ConfigError(
            f"{record_path} not found: the decision threshold is chosen on the validation "
            f"trials when the run is evaluated; run python evaluate.py --workdir {args.workdir}"
        )
    paths, waveforms = _speaker_recordings(
        [args.enrol, args.test], config.data.sample_rate, args.quiet
    )
    model = jaxspeech.load(args.workdir, stage=args.stage, checkpoint=args.checkpoint)
    threshold = model.threshold
    if model.threshold_step not in (None, model.step):
        print(
            f"{record_path}: the threshold was chosen for checkpoint {model.threshold_step}, "
            f"not {model.step}; python evaluate.py --workdir {args.workdir} --checkpoint "
            f"{model.step} --overwrite chooses one for it",
            file=sys.stderr,
            flush=True,
        )
    emb = model.embed_recordings(waveforms, batch_size=2)
    score = float(model.score(emb[0], emb[1]))
    verdict = "same speaker" if score >= threshold else "different speakers"
    print(f"{score:.4f} {verdict} (threshold {threshold:.4f}): {paths[0]} {paths[1]}", flush=True)


def _add_verify(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="do two recordings have the same speaker?",
        description="Prints the cosine score of the speaker embeddings of A and B and the "
        "decision at the threshold chosen on the validation trials (the equal-error-rate "
        "threshold, stored in the workdir by evaluate.py). Recordings under 0.5 s are refused.",
    )
    parser.add_argument("enrol", metavar="A", help="audio file (WAV, FLAC or OGG)")
    parser.add_argument("test", metavar="B", help="audio file (WAV, FLAC or OGG)")
    add_model_arguments(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="do not say on stderr that audio was converted"
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    parser.set_defaults(run=_verify)


def register(subparsers) -> None:
    _add_embed(subparsers)
    _add_verify(subparsers)
