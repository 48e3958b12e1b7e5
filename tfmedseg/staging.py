"""Atomic file writes under visible staging names: the base-layer half of :mod:`tfmedseg.io._atomic`.

A file appears under its final name only when complete: it is written as
``<name>.tfmedseg-partial-<host>-<pid>-<random>`` beside it (visible, never a hidden file that could
keep patient data unnoticed) and renamed; staging left by a killed process of this host (SIGKILL,
power loss) is removed by the next write into the same folder. This module imports nothing of
tfmedseg, so every layer can use it, :mod:`tfmedseg.config` included (``save_config``);
:mod:`tfmedseg.io._atomic` re-exports it beside the directory writer ``atomic_dir``, the output
marker and the input checks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator

__all__ = ["STAGING_TAG", "staging_path", "clean_stale_staging", "atomic_file"]

#: Infix of staging names: ``<final name>.tfmedseg-partial-<host>-<pid>-<random>``.
STAGING_TAG = ".tfmedseg-partial-"


def _host() -> str:
    name = "".join(c for c in socket.gethostname() if c.isalnum())[:24]
    return name or "host"


def staging_path(final: str | os.PathLike) -> Path:
    """A fresh, unused staging name beside ``final`` (visible; names this host and process)."""
    final = Path(final)
    return final.with_name(f"{final.name}{STAGING_TAG}{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def clean_stale_staging(directory: str | os.PathLike) -> list[Path]:
    """Remove staging entries in ``directory`` left by dead processes of this host.

    Only names with :data:`STAGING_TAG` written by this host are considered, and only when the
    process that made them no longer runs; everything else is left alone.

    Returns:
        The removed paths.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    prefix = f"{STAGING_TAG}{_host()}-"
    for entry in entries:
        name = entry.name
        at = name.rfind(prefix)
        if at <= 0:
            continue
        pid_text = name[at + len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a staging name beside ``path``; rename it to ``path`` when the block succeeds.

    The staged file is created with mode ``0o666 & ~umask``.

    Args:
        path: Final file path; its parent directories are created.
        suffix: Suffix of the staging name (``".nii.gz"``: some writers choose the format by it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(path.parent)
    tmp = Path(f"{staging_path(path)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield str(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
