"""Atomic file writes and the workdir's JSON-lines metric log."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterable


class WorkdirLock:
    """One writer per workdir: an exclusive ``flock`` on ``<workdir>/.lock``, held while the
    context is open. The kernel drops it when the holder dies, so a killed run never leaves the
    workdir locked. A second writer fails at once with ``RuntimeError``."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = ""
                try:
                    with open(self.path) as f:
                        holder = f.read().strip()
                except OSError:
                    pass
                raise RuntimeError(
                    f"{os.path.dirname(self.path)} is in use by another run ({
                        holder or 'a live process'
                    }); wait for it to finish or use another --workdir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it to ``path``.

    A crash leaves either the old file or the new one, never a half-written file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_file(path: str, write: Callable[[object], None]) -> None:
    """Like :func:`atomic_write`, handing ``write`` an open binary file object (numpy, scipy and
    matplotlib append suffixes to bare paths, not to file objects)."""

    def write_path(tmp):
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, write_path)


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (killed writer) is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def write_jsonl(path: str, records: Iterable[dict]) -> None:
    """Replaces ``path`` atomically with ``records``, one JSON object a line."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_jsonl(path: str, record: dict) -> None:
    """Appends one record and flushes it."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
