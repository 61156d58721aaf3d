"""Writing results so that nothing is half-written or silently replaced.

Every file jaxspeech writes (audio, metric tables, ``config.json``) goes to a temporary name in
the same folder and is renamed into place when complete (``os.replace``, atomic on POSIX), so an
interrupted write leaves the earlier file, or none, never a truncated one. The temporary name
keeps the extension, so writers that pick a format from it (soundfile) still can.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

from jaxspeech.errors import JaxspeechError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside ``path``; on success it is renamed to ``path``, on an
    exception it is removed and ``path`` is left as it was. An ``OSError`` (a full disk, no
    permission) becomes a one-line :class:`JaxspeechError` naming ``path``."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        with reported_write_errors(path):
            yield temporary
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def reported_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turns an ``OSError`` while writing ``path`` into a one-line JaxspeechError."""
    try:
        yield
    except OSError as err:
        raise JaxspeechError(
            f"could not write {path}: {err.strerror or err}; the earlier file, if any, is "
            "unchanged (free disk space or fix the permissions, then rerun)"
        ) from err


def write_text(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(text)
