"""The machine a benchmark run measured, and its section of bench/RESULTS.md.

A run appends one dated section; the file's earlier text is kept byte for byte. The new file is
written to a temporary name beside it and renamed, so an interrupted run leaves it as it was.
"""

import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess

import jax

HEADING = "# Benchmark results\n"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return "memory unknown"
    return f"{pages * page_size / 2**30:.0f} GiB"


def gpu_description(device: jax.Device) -> str:
    """The GPU's name and memory (from `nvidia-smi` where it is installed)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        result = subprocess.run(query, capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return f"{result.stdout.splitlines()[0].strip()} (name, memory, driver)"
    return f"{device.device_kind} (nvidia-smi not found: memory not read)"


def machine_lines(allocator: str) -> list[str]:
    """What a reader needs to compare figures across machines: CPU, GPU, versions, backend."""
    device = jax.devices()[0]
    backend = jax.default_backend()
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib()}; "
        f"allocator {allocator}",
        f"- backend: {backend} ({jax.device_count()} device(s), {device.device_kind}; "
        f"{device.client.platform_version.strip()})",
    ]
    if backend == "gpu":
        lines.append(
            f"- GPU: {gpu_description(device)}; float32 matmul precision in JAX: "
            f"{jax.config.jax_default_matmul_precision or 'default (TF32 where the GPU has it)'}"
        )
    lines.append(
        f"- Python {platform.python_version()}, jax {version('jax')}, jaxlib {version('jaxlib')}, "
        f"flax {version('flax')}, torch {version('torch')}, asteroid {version('asteroid')}"
    )
    return lines


def render_section(
    title: str, summary: list[str], parts: list[tuple[str, list[str]]], command: str
) -> str:
    """Markdown of one run: `## title`, the command, `summary` lines, then `### heading` and
    its lines for each part."""
    text = [f"## {title}", "", f"`{command}`", "", *summary]
    for heading, lines in parts:
        text += ["", f"### {heading}", "", *lines]
    return "\n".join(text) + "\n"


def append_section(path: pathlib.Path, section: str) -> None:
    """Appends `section` to the results file at `path` (created with a heading if absent),
    through a temporary file and a rename; the existing text is not changed."""
    old = path.read_text() if path.exists() else HEADING
    separator = "" if old.endswith("\n\n") else "\n" if old.endswith("\n") else "\n\n"
    write_atomically(path, old + separator + section)


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path` and renames it to `path`."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
