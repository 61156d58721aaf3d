"""The ``jaxspeech`` command: run trained models on audio files (:data:`DESCRIPTION`).

Each subcommand lives in :mod:`jaxspeech.commands`: one module per system, whose
``register(subparsers)`` declares its arguments and sets ``run`` to the function doing the work.
What can be checked without the model is checked before it is loaded: the input file, the task of
the workdir's run, and the output paths (never the input; an existing file only with
``--overwrite``; a format ``audio.save`` writes; a folder that can be created). ``main`` runs
through ``errors.run_command``: bad input (a :class:`JaxspeechError`) is one line on stderr with
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jaxspeech
from jaxspeech.commands import data, enhance, export, match, separate, speaker
from jaxspeech.errors import run_command

DESCRIPTION = """\
Run trained models on audio files. WORKDIR is a training workdir of train.py.

  jaxspeech separate MIX.wav --workdir DIR -o OUTDIR
  jaxspeech enhance NOISY.wav --workdir DIR -o OUT.wav
  jaxspeech enhance NOISY.wav --video CLIP.mpg --workdir AVDIR -o OUT.wav [--plot OUT.png]
  jaxspeech enhance NOISY_VIDEO.mpg --workdir AVDIR -o OUT.wav
  jaxspeech match RECORDING (--library MUSIC_DIR | --music TRACK) --workdir DIR [-k 5] [--json]
  jaxspeech embed FILES_OR_DIRS... --workdir DIR -o EMBEDDINGS.npz
  jaxspeech verify A.wav B.wav --workdir DIR
  jaxspeech export --workdir DIR -o MODEL.onnx [--streaming]

Every command takes --checkpoint best|latest|STEP, --quiet and --debug; those that write files
refuse to replace one unless --overwrite. 'jaxspeech COMMAND --help' lists its options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxspeech",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {jaxspeech.__version__}")
    subparsers = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="separate, enhance, match, embed, verify or export",
    )
    for command in (separate, enhance, match, speaker, data, export):  # speaker: embed and verify
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_command(f"jaxspeech {args.command}", lambda _: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
