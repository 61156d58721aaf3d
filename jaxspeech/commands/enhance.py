"""``jaxspeech enhance``: remove background noise with an enhancement run, or with an
audio-visual run and the talker's video (``--video``, or a video as the input)."""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

import jaxspeech
from jaxspeech import audio
from jaxspeech.commands.chunks import add_chunk_arguments, chunk_samples
from jaxspeech.commands.outputs import (
    OUTPUT_PEAK,
    add_run_arguments,
    check_output_file,
    check_output_folder,
    fit_to_full_scale,
    report_conversion,
)
from jaxspeech.commands.runs import add_model_arguments, trained_run
from jaxspeech.errors import ConfigError
from jaxspeech.inference.runs import read_config, stage_workdir


def _enhance_with_video(args: argparse.Namespace, video: str) -> None:
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
    model = jaxspeech.load(args.workdir, stage=args.stage, checkpoint=args.checkpoint)
    rate = model.sample_rate
    if args.noisy == video:
        noisy, file_rate = read_video_audio(video, rate), rate
    else:
        noisy, file_rate = audio.load(args.noisy, mono=False)
        report_conversion(args.noisy, noisy.shape[0], file_rate, rate, args.quiet)
    noisy = model.audio.prepare_waveform(noisy, file_rate, args.noisy)
    track = avfile.video_track(model, video)
    spans = avfile.faceless_spans(track)
    if spans and not args.quiet:
        where = ", ".join(f"{i}–{j} ({start:.2f}–{end:.2f} s)" for i, j, start, end in spans)
        print(
            f"{video}: no face in video frames {where} of {len(track.face_present)}; the audio "
            "net alone enhances those parts",
            file=sys.stderr,
            flush=True,
        )
    enhanced, lips, face = avfile.enhance_with_video(model, noisy, video, progress=not args.quiet)
    enhanced = fit_to_full_scale(enhanced, args.noisy, float(np.abs(noisy).max()), args.quiet)
    audio.save(output, enhanced, rate)
    print(output, flush=True)
    if args.plot:
        print(avfile.plot_enhancement(args.plot, model, noisy, enhanced, lips, face))


def _enhance(args: argparse.Namespace) -> None:
    from jaxspeech.data.av_clips import VIDEO_EXTENSIONS

    is_video = pathlib.Path(args.noisy).suffix.lower() in VIDEO_EXTENSIONS
    video = args.noisy if is_video else args.video
    stage = args.stage
    config = read_config(stage_workdir(args.workdir, stage))
    if config.task == "av" and config.model.net == "gate" and video is not None:
        _enhance_with_video(args, video)
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
    trained_run(args.workdir, stage, "enhancement")
    check_output_file(pathlib.Path(args.output), args.noisy, args.overwrite)
    model = jaxspeech.load(args.workdir, stage=stage, checkpoint=args.checkpoint)
    chunking = chunk_samples(args, model)
    channels = noisy.shape[0]
    noisy = model.core.prepare_waveform(noisy, file_rate, args.noisy)
    enhanced = model.enhance(noisy, **chunking)
    report_conversion(args.noisy, channels, file_rate, model.sample_rate, args.quiet)
    enhanced = fit_to_full_scale(enhanced, args.noisy, float(np.abs(noisy).max()), args.quiet)
    audio.save(args.output, enhanced, model.sample_rate)
    print(args.output, flush=True)


def register(subparsers) -> None:
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
    add_model_arguments(parser)
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
    add_chunk_arguments(parser)
    add_run_arguments(parser)
    parser.set_defaults(run=_enhance)
