"""The ``jaxspeech`` command: run trained models on audio files.

    jaxspeech separate MIX.wav --workdir DIR -o OUTDIR [--stage NAME]
                               [--checkpoint best|latest|STEP] [--chunk-seconds S]
                               [--overlap-seconds S] [--overwrite] [--quiet] [--debug]
    jaxspeech enhance NOISY.wav --workdir DIR -o OUT.wav [the same options]
    jaxspeech enhance NOISY.wav --video CLIP.mpg --workdir AVDIR -o OUT.wav [--plot OUT.png]
    jaxspeech enhance NOISY_VIDEO.mpg --workdir AVDIR -o OUT.wav [--plot OUT.png]
    jaxspeech match RECORDING (--library MUSIC_DIR | --music TRACK) --workdir DIR [-k 5]
                              [--json] [--cache-dir DIR] [--checkpoint ...] [--quiet] [--debug]
    jaxspeech embed FILES_OR_DIRS... --workdir DIR -o EMBEDDINGS.npz [--stage NAME]
                    [--checkpoint best|latest|STEP] [--batch-size N] [--overwrite] [--quiet]
    jaxspeech verify A.wav B.wav --workdir DIR [--stage NAME] [--checkpoint best|latest|STEP]
    jaxspeech --version

Each subcommand is a ``_add_<name>(subparsers)`` function that declares its arguments and sets
``run`` to the function doing the work. What can be checked without the model is checked before
it is loaded: the input file, the task of the workdir's run, and the output paths (never the
input; an existing file only with ``--overwrite``; a format ``audio.save`` writes; a folder that
can be created). ``main`` runs through ``errors.run_command``: bad input (a
:class:`JaxspeechError`) is one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Sequence

import jax
import numpy as np

import jaxspeech
from jaxspeech import audio, files, infer
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError, run_command

#: Largest magnitude written by ``enhance`` (16-bit PCM never clips below 1).
OUTPUT_PEAK = 0.99
#: The subcommand that runs the models of each task.
COMMANDS = {
    "separation": "separate",
    "enhancement": "enhance",
    "bgm": "match",
    "speaker": "embed",
}


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


def trained_run(workdir: str, stage: str | None, task: str, command: str | None = None):
    """``(run_dir, config)`` of the run in ``workdir`` (see :func:`stage_workdir`), read from its
    ``config.json`` without loading the model; ConfigError naming the command that serves the
    run when it is not of ``task`` (``command``: the one asking, default ``COMMANDS[task]``)."""
    from jaxspeech.train.restore import read_config

    run_dir = stage_workdir(workdir, stage)
    config = read_config(run_dir)
    if config.task != task:
        other = COMMANDS.get(config.task)
        served = f"`jaxspeech {other}` runs it" if other else "no jaxspeech command runs it"
        raise ConfigError(
            f"{run_dir} is {_quoted_with_article(config.task)} run ({served}); "
            f"`jaxspeech {command or COMMANDS[task]}` needs {_quoted_with_article(task)} run "
            f"(configs/{task}/*.py)"
        )
    return run_dir, config


def _quoted_with_article(word: str) -> str:
    """``"a 'separation'"``, ``"an 'enhancement'"``."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word!r}"


def check_output_folder(folder: str | os.PathLike) -> None:
    """Raises ConfigError when ``folder`` is a file or cannot be created because a file is in
    its way; a missing folder is created when the first output is written."""
    folder = pathlib.Path(folder).absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if existing == folder and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder; choose another output folder")
    if not existing.is_dir():
        raise ConfigError(
            f"cannot create the folder {folder}: {existing} is a file; choose another output path"
        )


def check_output_file(path: pathlib.Path, source: str, overwrite: bool) -> None:
    """Raises before any work when ``path`` would be written over the input ``source`` (never
    allowed), over an existing file without ``overwrite``, in a format ``audio.save`` does not
    write, or where its folder cannot be created."""
    audio.output_format(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the output a file name")
    if path.exists():
        if os.path.samefile(path, source):
            raise ConfigError(
                f"{path} is the input {source}; write to another file (an input is never "
                "replaced, not even with --overwrite)"
            )
        if not overwrite:
            raise ConfigError(
                f"{path} exists; pass --overwrite to replace it, or choose another name"
            )
    check_output_folder(path.parent)


def report_conversion(
    source: str, channels: int, file_rate: int, model_rate: int, quiet: bool
) -> None:
    """Says in one line on stderr (unless ``quiet``) that ``source`` was resampled from
    ``file_rate`` to ``model_rate`` or downmixed from ``channels`` channels."""
    changes = []
    if file_rate != model_rate:
        changes.append(f"{file_rate} Hz resampled to {model_rate} Hz")
    if channels > 1:
        changes.append(f"{channels} channels downmixed to mono")
    if changes and not quiet:
        print(f"{source}: {'; '.join(changes)}", file=sys.stderr, flush=True)


def seconds_to_samples(seconds: float, sample_rate: int, name: str) -> int:
    """``round(seconds · sample_rate)``; raises ConfigError naming ``name`` if not positive."""
    samples = round(seconds * sample_rate)
    if samples < 1:
        raise ConfigError(f"{name}={seconds} s is less than one sample at {sample_rate} Hz")
    return samples


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        required=True,
        help="training workdir: a run (config.json) or a multi-stage recipe (stages.json)",
    )
    parser.add_argument(
        "--stage",
        help="for a multi-stage workdir: the stage to use, one of those in its stages.json "
        "(default: student if there is one, else the last stage)",
    )
    _add_checkpoint_argument(parser)


def _add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default="best",
        metavar="{best,latest,STEP}",
        help="which checkpoint: best, latest or a step number (default: %(default)s)",
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


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (never the input file)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="do not say on stderr that the input was resampled or downmixed (the paths "
        "written are still printed)",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)


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
    mixture, file_rate = audio.load(args.mixture, mono=False)  # [channels, samples]
    run_dir, config = trained_run(args.workdir, args.stage, "separation")
    check_output_folder(args.output_dir)
    stem = pathlib.Path(args.mixture).stem
    paths = [
        pathlib.Path(args.output_dir) / f"{stem}_s{index}.wav"
        for index in range(1, config.model.n_src + 1)
    ]
    for path in paths:
        check_output_file(path, args.mixture, args.overwrite)
    task, params, _, sample_rate = load_trained_model(str(run_dir), args.checkpoint)
    channels = mixture.shape[0]
    mixture = audio.resample(mixture.mean(axis=0), file_rate, sample_rate)
    report_conversion(args.mixture, channels, file_rate, sample_rate, args.quiet)
    sources = infer.separate_long(task.separate, params, mixture, **_chunking(args, sample_rate))
    sources = np.asarray(infer.rescale_to_mixture(sources, mixture))
    for path, source in zip(paths, sources, strict=True):
        audio.save(path, source, sample_rate)
        print(path, flush=True)


def _add_separate(subparsers) -> None:
    parser = subparsers.add_parser(
        "separate",
        help="split a recording into its speakers",
        description="Separates MIXTURE with a trained separation model into "
        "OUTPUT_DIR/<stem>_s1.wav, _s2.wav, … at the model's sample rate, each at its level "
        "in the mixture. Stereo input is downmixed, other rates are resampled (and said so on "
        "stderr). Existing outputs are refused before the model runs, unless --overwrite.",
    )
    parser.add_argument("mixture", help="audio file (WAV, FLAC or OGG)")
    _add_model_arguments(parser)
    parser.add_argument(
        "-o",
        "--output-dir",
        required=True,
        help="folder for the sources, created if missing (not an existing file)",
    )
    _add_chunk_arguments(parser)
    _add_run_arguments(parser)
    parser.set_defaults(run=_separate)


def _enhance_with_video(args: argparse.Namespace, run_dir: pathlib.Path, video: str) -> None:
    """``jaxspeech enhance`` with an audio-visual (gate) run and the talker's video."""
    from jaxspeech import avfile
    from jaxspeech.data.video import read_video_audio

    output = pathlib.Path(args.output)
    check_output_file(output, args.noisy, args.overwrite)
    if args.plot:
        plot = pathlib.Path(args.plot)
        if plot.suffix.lower() != ".png":
            raise ConfigError(f"--plot={plot}: the picture is written as PNG; name it *.png")
        if plot.exists() and not args.overwrite:
            raise ConfigError(f"{plot} exists; pass --overwrite to replace it")
        check_output_folder(plot.parent)
        avfile.pyplot()  # the plot extra is there before any work
    from jaxspeech.train.restore import restore_run

    run = restore_run(str(run_dir), args.checkpoint, devices=jax.devices()[:1])
    task, params, sample_rate = run.task, run.params, run.task.sample_rate
    if args.noisy == video:
        noisy, file_rate = read_video_audio(video, sample_rate), sample_rate
    else:
        noisy, file_rate = audio.load(args.noisy, mono=False)
        report_conversion(args.noisy, noisy.shape[0], file_rate, sample_rate, args.quiet)
    noisy = task.audio.prepare_waveform(noisy, file_rate, args.noisy)
    enhanced, lips, face = avfile.enhance_with_video(
        task, params, noisy, video, progress=not args.quiet
    )
    peak = float(np.abs(enhanced).max())
    if peak > OUTPUT_PEAK:
        enhanced = enhanced * (OUTPUT_PEAK / peak)
    audio.save(output, enhanced, sample_rate)
    print(output, flush=True)
    if args.plot:
        print(avfile.plot_enhancement(args.plot, task, params, noisy, enhanced, lips, face))


def _enhance(args: argparse.Namespace) -> None:
    from jaxspeech.data.av import VIDEO_EXTENSIONS
    from jaxspeech.train.restore import read_config

    _check_chunk_arguments(args)
    is_video = pathlib.Path(args.noisy).suffix.lower() in VIDEO_EXTENSIONS
    video = args.noisy if is_video else args.video
    stage = args.stage
    config = read_config(stage_workdir(args.workdir, stage))
    if config.task == "av" and config.model.net == "gate" and video is not None:
        _enhance_with_video(args, stage_workdir(args.workdir, stage), video)
        return
    if video is not None:
        raise ConfigError(
            f"--video / a video input needs an audio-visual workdir (configs/av/*.py); "
            f"{args.workdir} is not one (or pick its gate --stage)"
        )
    if args.plot:
        raise ConfigError("--plot draws the audio-visual masks; it needs --video")
    if config.task == "av":  # an AV workdir without video: Net 1 alone
        stage = config.model.audio_stage
    noisy, file_rate = audio.load(args.noisy, mono=False)  # [channels, samples]
    run_dir, _ = trained_run(args.workdir, stage, "enhancement")
    check_output_file(pathlib.Path(args.output), args.noisy, args.overwrite)
    task, params, model_state, sample_rate = load_trained_model(str(run_dir), args.checkpoint)
    channels = noisy.shape[0]
    noisy = task.prepare_waveform(noisy, file_rate, args.noisy)
    report_conversion(args.noisy, channels, file_rate, sample_rate, args.quiet)
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
    print(args.output, flush=True)


def _add_enhance(subparsers) -> None:
    parser = subparsers.add_parser(
        "enhance",
        help="remove background noise from a recording",
        description="Enhances NOISY with a trained mask-based enhancement model into OUTPUT at "
        "the model's sample rate, at the input's level (scaled down only if a sample would "
        f"exceed ±{OUTPUT_PEAK}). Stereo input is downmixed, other rates are resampled; "
        "silence stays silence; clipped input is enhanced as it is (clipping is not repaired). "
        "Files of any length are processed in overlapping chunks. An existing OUTPUT is refused "
        "before the model runs, unless --overwrite.",
    )
    parser.add_argument("noisy", help="audio file (WAV, FLAC or OGG) or a video (.mpg, .mp4, …)")
    _add_model_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help=f"enhanced audio file, {', '.join(audio.OUTPUT_FORMATS)} (the format follows the "
        "extension; its folder is created if missing)",
    )
    parser.add_argument(
        "--video",
        help="audio-visual workdirs: the video of the talker's face (NOISY may also be the "
        "video itself, its sound track enhanced); without it only the audio net runs",
    )
    parser.add_argument(
        "--plot",
        help="with a video: also draw the spectrograms, lip band mask, gate and face flag "
        "into this PNG (needs the plot extra)",
    )
    _add_chunk_arguments(parser)
    _add_run_arguments(parser)
    parser.set_defaults(run=_enhance)


def _match(args: argparse.Namespace) -> None:
    from jaxspeech.library import model_key, update_library
    from jaxspeech.train.restore import restore_run

    if (args.library is None) == (args.music is None):
        raise ConfigError("give either --library MUSIC_DIR (rank it) or --music TRACK (score it)")
    if args.k < 1:
        raise ConfigError(f"-k {args.k}: give how many tracks to list, at least 1")
    recording, file_rate = audio.load(args.recording)
    run_dir, config = trained_run(args.workdir, None, "bgm")
    if args.music is not None:
        audio.load(args.music)  # a bad track is a one-line error before the model loads
    run = restore_run(run_dir, args.checkpoint, devices=jax.devices()[:1])
    task, params, model_state = run.task, run.params, run.model_state
    task.check_layout(model_state)
    embed = jax.jit(task.embed)

    def embed_descriptors(descriptors: np.ndarray) -> np.ndarray:
        return np.asarray(embed(params, model_state, descriptors[None]))[0]

    sample_rate = config.model.features.sample_rate
    wav = audio.resample(recording, file_rate, sample_rate)
    query = embed_descriptors(task.clip_descriptors(wav, args.recording))
    rank = jax.jit(task.rank)
    if args.music is not None:
        music = embed_descriptors(task.file_descriptors(args.music))
        score = float(rank(params, query, music[None])[0])
        print(json.dumps({"path": args.music, "score": score}) if args.json else f"{score:.4f}")
        return
    settings = json.dumps(dataclasses.asdict(config.model), sort_keys=True)
    library = update_library(
        args.library,
        args.cache_dir or pathlib.Path(run_dir) / "library-cache",
        model_key(params, model_state, settings),
        lambda path: embed_descriptors(task.file_descriptors(path)),
        progress=not args.quiet,
    )
    for path, reason in library.skipped:
        print(f"skipped unreadable {path}: {reason}", file=sys.stderr)
    print(f"{args.library}: {library.summary()}", file=sys.stderr, flush=True)
    scores = np.asarray(rank(params, query, library.embeddings))
    best = np.argsort(-scores, kind="stable")[: args.k]
    if args.json:
        print(json.dumps([{"path": library.paths[i], "score": float(scores[i])} for i in best]))
        return
    print("| rank | score | track |\n|---:|---:|---|")
    for place, i in enumerate(best, 1):
        print(f"| {place} | {scores[i]:.4f} | {library.paths[i]} |")


def _add_match(subparsers) -> None:
    parser = subparsers.add_parser(
        "match",
        help="rank a music library (or score one track) as background for a recording",
        description="Scores how well music suits RECORDING (speech, a story, a podcast) with a "
        "trained matcher: --library ranks every audio file below a folder and prints the top "
        "k (the tracks' deep features are cached and updated when files are added, changed "
        "or removed; unreadable files are listed and skipped); --music prints one score.",
    )
    parser.add_argument("recording", help="the spoken recording (WAV, FLAC or OGG)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--library", help="folder of music to rank (searched recursively)")
    which.add_argument("--music", help="one track to score")
    parser.add_argument(
        "--workdir", required=True, help="training workdir of a matcher (configs/bgm/*.py)"
    )
    _add_checkpoint_argument(parser)
    parser.add_argument("-k", type=int, default=5, help="tracks to list (default: %(default)s)")
    parser.add_argument(
        "--json", action="store_true", help='print [{"path": ..., "score": ...}], best first'
    )
    parser.add_argument(
        "--cache-dir", help="where the library cache lives (default: WORKDIR/library-cache)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    parser.set_defaults(run=_match)


def _speaker_recordings(sources: Sequence[str], model_rate: int, quiet: bool) -> tuple:
    """``(paths, waveforms)``: every file of ``sources`` (a folder gives its audio files, sorted)
    read, checked and converted to the model's input (``speaker.prepare_recording``)."""
    from jaxspeech.data.corpus import audio_files
    from jaxspeech.train.tasks.speaker import prepare_recording

    paths = [p for s in sources for p in (audio_files(s) if os.path.isdir(s) else [s])]
    waveforms = []
    for path in paths:
        wav, file_rate = audio.load(path, mono=False)
        report_conversion(path, wav.shape[0], file_rate, model_rate, quiet)
        waveforms.append(prepare_recording(wav, file_rate, model_rate, path))
    return paths, waveforms


def _speaker_embeddings(task, params, model_state, waveforms, batch_size: int, desc=None):
    """``[N, D]`` embeddings of whole recordings, batched by length (``embed_waveforms``)."""
    from jaxspeech.train.tasks.speaker import embed_waveforms

    bucket = round(task.config.eval.bucket_seconds * task.sample_rate)
    embed = jax.jit(lambda wav, lengths: task.embed(params, model_state, wav, lengths))
    budget = batch_size * round(task.config.eval.max_seconds * task.sample_rate)
    return embed_waveforms(embed, waveforms, batch_size, bucket, desc, max_batch_samples=budget)


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
    run_dir, config = trained_run(args.workdir, args.stage, "speaker", "embed")
    paths, waveforms = _speaker_recordings(args.inputs, config.data.sample_rate, args.quiet)
    task, params, model_state, _ = _load_speaker_model(run_dir, args.checkpoint)
    desc = None if args.quiet else "embedding"
    embeddings = _speaker_embeddings(task, params, model_state, waveforms, args.batch_size, desc)
    output.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_output(output) as temporary:
        np.savez(temporary, embeddings=embeddings.astype(np.float32), paths=np.asarray(paths))
    print(output, flush=True)


def _load_speaker_model(run_dir: pathlib.Path, checkpoint: str):
    from jaxspeech.train.restore import restore_run

    run = restore_run(run_dir, checkpoint, devices=jax.devices()[:1])
    return run.task, run.params, run.model_state, run


def _add_embed(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="speaker embeddings of recordings",
        description="Writes the speaker embedding of every recording (files, and the audio "
        "files below each folder, sorted) into OUTPUT.npz: `embeddings` [N, D] float32 and "
        "`paths` [N], one row per file in the order given. Recordings of any length are "
        "embedded whole, batched by length; stereo is downmixed and other rates resampled. A "
        "recording under 0.5 s is refused, as is unreadable, empty or NaN audio, before the "
        "model is loaded.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders")
    _add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="the .npz file to write")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="recordings per model call (default: %(default)s)"
    )
    _add_run_arguments(parser)
    parser.set_defaults(run=_embed)


def _verify(args: argparse.Namespace) -> None:
    from jaxspeech.train.tasks.speaker import VERIFICATION_FILE, cosine_scores

    run_dir, config = trained_run(args.workdir, args.stage, "speaker", "verify")
    record_path = run_dir / VERIFICATION_FILE
    if not record_path.is_file():
        raise ConfigError(
            f"{record_path} not found: the decision threshold is chosen on the validation "
            f"trials when the run is evaluated; run python evaluate.py --workdir {args.workdir}"
        )
    threshold = float(json.loads(record_path.read_text())["threshold"])
    paths, waveforms = _speaker_recordings(
        [args.enrol, args.test], config.data.sample_rate, args.quiet
    )
    task, params, model_state, _ = _load_speaker_model(run_dir, args.checkpoint)
    emb = _speaker_embeddings(task, params, model_state, waveforms, batch_size=2)
    score = float(cosine_scores(emb[:1], emb[1:])[0])
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
    _add_model_arguments(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="do not say on stderr that audio was converted"
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    parser.set_defaults(run=_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxspeech", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {jaxspeech.__version__}")
    subparsers = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="separate, enhance, match, embed or verify",
    )
    _add_separate(subparsers)
    _add_enhance(subparsers)
    _add_match(subparsers)
    _add_embed(subparsers)
    _add_verify(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_command(f"jaxspeech {args.command}", lambda _: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
