"""``jaxspeech export``: write a trained model as an ONNX graph (``jaxspeech.export``)."""

from __future__ import annotations

import argparse
import pathlib

import jaxspeech
from jaxspeech.commands.outputs import check_output_folder
from jaxspeech.commands.runs import add_model_arguments
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError


def check_graph_path(path: pathlib.Path, overwrite: bool) -> None:
    """Raises ConfigError before any work unless ``path`` is a ``.onnx`` file name that can be
    written (an existing file only with ``overwrite``)."""
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{path}: give the graph a .onnx file name")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the graph a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose another name")
    check_output_folder(path.parent)


def describe(path: pathlib.Path, graph) -> list[str]:
    """The lines printed for a written graph: path, inputs and outputs with their shapes,
    sample rate, hop, and for a streaming graph its state and delay."""
    from jaxspeech.export.graph import read_metadata

    info = read_metadata(graph)

    def shapes(kind: str) -> str:
        return ", ".join(
            f"{name} [{', '.join(map(str, shape))}]" for name, shape in info[kind].items()
        )

    lines = [
        f"wrote {path} ({info['system']}, {info['graph']} graph, opset "
        f"{graph.opset_import[0].version})",
        f"  inputs:  {shapes('inputs')}",
        f"  outputs: {shapes('outputs')}",
        f"  sample rate: {info['sample_rate']} Hz"
        + (f", hop: {info['hop']} samples" if "hop" in info else ""),
    ]
    if "state_shape" in info:
        parts = list(info["state_layout"])
        shown = ", ".join(parts[:4]) + (f", … {len(parts)} parts" if len(parts) > 4 else "")
        lines.append(
            f"  state: [{', '.join(map(str, info['state_shape']))}] float32, zeros at the "
            f"start ({shown}: metadata_props state_layout); output delay "
            f"{info['delay_samples']} samples"
        )
    if "separation" in info:
        lines.append(f"  separation: {info['separation']}")
    return lines


def _export(args: argparse.Namespace) -> None:
    from jaxspeech.export import export_graph
    from jaxspeech.export.graph import require_onnx

    path = pathlib.Path(args.output)
    check_graph_path(path, args.overwrite)
    onnx = require_onnx()
    model = jaxspeech.load(args.workdir, stage=args.stage, checkpoint=args.checkpoint)
    graph = export_graph(model, streaming=args.streaming)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(graph, path)
    onnx.checker.check_model(str(path), full_check=True)
    print(path if args.quiet else "\n".join(describe(path, graph)), flush=True)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained model as an ONNX graph",
        description="Writes the trained model of WORKDIR as an ONNX graph (opset 17; the "
        '"export" extra: pip install "jaxspeech[export]") and prints its inputs and outputs. '
        "Graphs map waveforms [batch, samples] at the model's rate to the system's output "
        "(deep clustering: to its bin embeddings, k-means outside; the music matcher: "
        "descriptors to deep features and scores; the audio-visual system: with each STFT frame's "
        "mouth crop and face flag); --streaming writes the one-hop graph of "
        "a causal model, with its state as an explicit input and output. Names, shapes, "
        "sample rate, hop and state layout are in the graph's metadata_props. An existing "
        "file is refused unless --overwrite.",
    )
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="the graph to write (.onnx)")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="the one-hop streaming graph (causal LSTM enhancement, causal audio-visual "
        "enhancement, causal Conv-TasNet)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--quiet", action="store_true", help="print only the path written")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    parser.set_defaults(run=_export)
