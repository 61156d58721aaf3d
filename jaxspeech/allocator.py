"""The memory allocator of a training process: restart once under a faster one.

With glibc's malloc, every allocation above 32 MB is a fresh ``mmap`` that is unmapped when
freed, so on CPU each training step page-faults its whole working set in again (XLA's buffers
for a paper-size Conv-TasNet step: about 0.8 million faults, 7.8 s per step instead of 4.0–4.2 s
under tcmalloc; ``bench/RESULTS.md``). An allocator that keeps freed pages (gperftools'
tcmalloc), or glibc with transparent huge pages for its mmapped blocks, avoids most of that.
Both must be chosen before the process starts, so ``restart_with_fast_allocator`` re-executes
the program once.

``JAXSPEECH_MALLOC`` picks: ``auto`` (default: tcmalloc when its library is installed, e.g.
Debian's libtcmalloc-minimal4, else glibc huge pages), ``tcmalloc``, ``hugetlb`` or ``system``
(leave the process as it is).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping

from jaxspeech.errors import ConfigError

ENV = "JAXSPEECH_MALLOC"
CHOICES = ("auto", "tcmalloc", "hugetlb", "system")
TCMALLOC = "tcmalloc_minimal"
HUGETLB = "glibc.malloc.hugetlb=1"
_RESTARTED = "JAXSPEECH_MALLOC_RESTARTED"


def allocator_environment(
    env: Mapping[str, str], find_library: Callable[[str], str | None] = ctypes.util.find_library
) -> dict[str, str] | None:
    """The environment to restart with, or None when the process should stay as it is.

    Raises:
      ConfigError: an unknown ``JAXSPEECH_MALLOC``, or ``tcmalloc`` asked for but not installed.
    """
    choice = env.get(ENV, "auto")
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}={choice!r}; use one of {CHOICES}")
    preload = env.get("LD_PRELOAD", "")
    if choice == "system" or env.get(_RESTARTED) or TCMALLOC in preload:
        return None
    library = find_library(TCMALLOC) if choice in ("auto", "tcmalloc") else None
    if choice == "tcmalloc" and library is None:
        raise ConfigError(
            f"{ENV}=tcmalloc but lib{TCMALLOC} is not installed (Debian/Ubuntu: "
            "apt install libtcmalloc-minimal4); use auto, hugetlb or system"
        )
    new = dict(env, **{_RESTARTED: "1"})
    if library is not None:
        new["LD_PRELOAD"] = f"{preload} {library}".strip()
    elif HUGETLB in env.get("GLIBC_TUNABLES", ""):
        return None
    else:
        new["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HUGETLB]))
    return new


def restart_with_fast_allocator() -> None:
    """Re-executes this Python program (same arguments) under the allocator that
    ``JAXSPEECH_MALLOC`` picks; returns without doing anything when there is nothing to change.
    Call it first thing in an entry-point script, before anything large is allocated."""
    env = allocator_environment(os.environ)
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def allocator_in_use(env: Mapping[str, str] = os.environ) -> str:
    """What allocator this process runs under, in words (for a log line)."""
    if TCMALLOC in env.get("LD_PRELOAD", ""):
        return "tcmalloc"
    if HUGETLB in env.get("GLIBC_TUNABLES", ""):
        return "glibc malloc with huge pages"
    return "glibc malloc"
