"""Choosing the training process's allocator (decision only; the restart is one execve)."""

import os
import subprocess
import sys

import pytest

from jaxspeech.allocator import ENV, HUGETLB, allocator_environment
from jaxspeech.errors import ConfigError

LIBRARY = "libtcmalloc_minimal.so.4"


def found(name):
    return LIBRARY if name == "tcmalloc_minimal" else None


def missing(name):
    return None


def test_auto_prefers_tcmalloc_then_huge_pages():
    env = allocator_environment({"LD_PRELOAD": "libfoo.so"}, found)
    assert env["LD_PRELOAD"] == f"libfoo.so {LIBRARY}" and "GLIBC_TUNABLES" not in env
    env = allocator_environment({"GLIBC_TUNABLES": "glibc.malloc.check=0"}, missing)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.check=0:{HUGETLB}"
    assert "LD_PRELOAD" not in env


def test_nothing_to_do():
    assert allocator_environment({ENV: "system"}, found) is None
    assert allocator_environment({"LD_PRELOAD": f"/usr/lib/{LIBRARY}"}, found) is None
    assert allocator_environment({"GLIBC_TUNABLES": HUGETLB}, missing) is None
    restarted = allocator_environment({}, found)
    assert allocator_environment(restarted, found) is None  # never restarts twice


def test_explicit_choices_and_errors():
    env = allocator_environment({ENV: "hugetlb"}, found)
    assert env["GLIBC_TUNABLES"] == HUGETLB and "LD_PRELOAD" not in env
    with pytest.raises(ConfigError, match="apt install libtcmalloc-minimal4"):
        allocator_environment({ENV: "tcmalloc"}, missing)
    with pytest.raises(ConfigError, match="use one of"):
        allocator_environment({ENV: "jemalloc"}, found)


def test_restart_keeps_arguments_and_applies_the_setting(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(
        "import os, sys\n"
        "from jaxspeech.allocator import restart_with_fast_allocator\n"
        "restart_with_fast_allocator()\n"
        "print(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'))\n"
    )
    env = dict(os.environ, **{ENV: "hugetlb"})
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, str(script), "a", "--b=1"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"['a', '--b=1'] {HUGETLB}"
