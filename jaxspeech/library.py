"""An on-disk cache of a music library's deep features, for ranking it against a recording.

The cache of one folder under one model is ``CACHE_DIR/<key>.npz``, where the key is a hash of
the model's params, its model state (descriptor statistics and layout) and its config (the
descriptor settings), and of the folder's absolute path. It holds, per audio file, the path,
size, modification time, SHA-256 of the content and the tower's deep feature. An update
rescans the folder: a file whose size and modification time are unchanged keeps its entry;
any other is hashed, and its deep feature is reused when its content is already in the cache
(a file copied, renamed or touched) and computed otherwise. Files that cannot be read are
listed and left out (and tried again next time). The cache is written to a temporary name
and renamed, so an interrupted update leaves the previous one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable

import jax
import numpy as np
from tqdm import tqdm

from jaxspeech import files
from jaxspeech.data.corpus import AUDIO_EXTENSIONS
from jaxspeech.errors import AudioError, ConfigError

_CHUNK = 1 << 20


def model_key(params, model_state, settings: str) -> str:
    """SHA-256 (hex) of every array of ``params`` and ``model_state`` and of ``settings``."""
    digest = hashlib.sha256(settings.encode())
    for tree in (params, model_state):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            array = np.asarray(leaf)
            digest.update(f"{jax.tree_util.keystr(path)}{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def library_files(folder: str | os.PathLike) -> list[str]:
    """Audio files (``AUDIO_EXTENSIONS``) below ``folder``, sorted; ConfigError when it is not
    a folder or holds none."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--library {folder}: no such folder; give the folder of music")
    found = sorted(
        str(p.absolute())
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )
    if not found:
        raise ConfigError(
            f"--library {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) below it"
        )
    return found


@dataclasses.dataclass(frozen=True)
class Library:
    """A library after an update: its readable tracks and what the update found.

    Attributes:
      paths: absolute paths ``[N]``, sorted; embeddings: their deep features ``[N, D]``.
      new, changed, removed: readable files new to the cache, readable files whose content
        changed, and cached files no longer there (the first update: all new).
      skipped: ``(path, reason)`` of the files that could not be read.
    """

    paths: list[str]
    embeddings: np.ndarray
    new: int
    changed: int
    removed: int
    skipped: list[tuple[str, str]]

    def summary(self) -> str:
        """``"12 new, 1 changed, 0 removed"`` (and the unreadable count, if any)."""
        line = f"{self.new} new, {self.changed} changed, {self.removed} removed"
        return line + (f", {len(self.skipped)} unreadable (skipped)" if self.skipped else "")


def _read_cache(path: pathlib.Path) -> dict[str, tuple[int, int, str, np.ndarray]]:
    """``{path: (size, mtime_ns, sha256, embedding)}`` of a cache file ({} when absent)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as cache:
            rows = zip(
                cache["paths"], cache["sizes"], cache["mtimes"], cache["hashes"],
                cache["embeddings"], strict=True,
            )  # fmt: skip
            return {str(p): (int(s), int(m), str(h), e) for p, s, m, h, e in rows}
    except (OSError, ValueError, KeyError):
        return {}  # a damaged cache is rebuilt


def update_library(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike,
    key: str,
    embed_file: Callable[[str], np.ndarray],
    progress: bool = True,
) -> Library:
    """Brings the cache of ``folder`` under model ``key`` up to date and returns it.

    Args:
      folder: the music folder (searched recursively).
      cache_dir: where caches live (created when missing).
      key: ``model_key`` of the model.
      embed_file: path -> deep feature ``[D]``; raises ``AudioError`` for an unreadable file.
      progress: show a progress bar over the files to compute.
    """
    paths = library_files(folder)
    folder_hash = hashlib.sha256(os.fspath(pathlib.Path(folder).absolute()).encode()).hexdigest()
    cache_path = pathlib.Path(cache_dir) / f"{key[:24]}-{folder_hash[:12]}.npz"
    old = _read_cache(cache_path)
    by_content = {entry[2]: entry[3] for entry in old.values()}
    entries, skipped, todo = {}, [], []
    counts = {"new": 0, "changed": 0}
    for path in paths:
        stat = os.stat(path)
        previous = old.get(path)
        if previous is not None and previous[:2] == (stat.st_size, stat.st_mtime_ns):
            entries[path] = previous
            continue
        digest = content_hash(path)
        status = "new" if previous is None else "changed" if previous[2] != digest else None
        if digest in by_content:
            entries[path] = (stat.st_size, stat.st_mtime_ns, digest, by_content[digest])
            counts[status] = counts.get(status, 0) + 1
        else:
            todo.append((path, stat, digest, status))
    for path, stat, digest, status in tqdm(todo, desc="library", disable=not progress or not todo):
        try:
            embedding = np.asarray(embed_file(path), np.float32)
        except AudioError as err:
            skipped.append((path, str(err)))
            continue
        by_content[digest] = embedding
        entries[path] = (stat.st_size, stat.st_mtime_ns, digest, embedding)
        counts[status] = counts.get(status, 0) + 1
    removed = len(set(old) - set(paths))
    kept = sorted(entries)
    if not kept:
        raise ConfigError(f"--library {folder}: none of its {len(paths)} audio files is readable")
    arrays = {
        "paths": np.array(kept),
        "sizes": np.array([entries[p][0] for p in kept], np.int64),
        "mtimes": np.array([entries[p][1] for p in kept], np.int64),
        "hashes": np.array([entries[p][2] for p in kept]),
        "embeddings": np.stack([entries[p][3] for p in kept]),
    }
    with files.reported_write_errors(cache_path):
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_output(cache_path) as temporary:
        np.savez(temporary, **arrays)
    embeddings = arrays["embeddings"]
    return Library(kept, embeddings, counts["new"], counts["changed"], removed, skipped)
