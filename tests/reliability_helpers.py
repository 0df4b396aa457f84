"""What the reliability tests share: real small file systems, commands in a real process,
and the shape of an answer a person should get (one `error:` line, exit status 2)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (needs root, as in CI and here)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small file system needs root here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` until fewer than ``leave`` bytes are free."""
    block = b"\0" * 65536
    with open(disk / "filler.bin", "wb") as fh:
        try:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave + len(block):
                fh.write(block)
                fh.flush()
        except OSError:
            pass


def fewshot(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=env)


def assert_user_error(done: subprocess.CompletedProcess, *phrases: str) -> str:
    """Exit status 2, one `error:` line on stderr that holds every phrase, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])
    assert len(errors[0]) < 2000
    return errors[0]
