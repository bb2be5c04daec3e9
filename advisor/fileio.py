"""Reading and writing advisor's files safely: bounded reads of regular files only, JSON that cannot break the
parser, atomic writes, and locks around artefacts built in the cache.

A leaf module (it imports no other advisor module): sources, state files and engines all read through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A config.json is a few kB (a few hundred kB with a tokenizer's id2label); anything past this is not one.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# advisor's own state files (hardware profile, Hub metadata cache): a few kB each.
MAX_STATE_BYTES = 16 * 1024 * 1024


class NotRegularFile(OSError):
    """A FIFO, socket, device or folder where a file was expected: reading it could block forever."""


def open_regular(path: str | os.PathLike, *, mode: str = "rb"):
    """Open `path` for reading, refusing anything but a regular file (a FIFO is refused at once, never waited
    on). Returns a file object; OSError (NotRegularFile among them) when it cannot be had."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a file"
            raise NotRegularFile(f"{os.fspath(path)} is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, *, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; ValueError when it holds more (checked before reading)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise ValueError(f"it is {size:,} bytes, more than the {limit:,} such a file can hold")
        raw = fh.read(limit + 1)
    if len(raw) > limit:  # grew while being read
        raise ValueError(f"it is over {limit:,} bytes, more than such a file can hold")
    return raw


def decode_json(raw: bytes | str) -> Any:
    """`json.loads`, with every way a hostile file can break it as a ValueError whose message is one short line:
    invalid JSON or UTF-8 (a leading BOM is allowed), nesting past the recursion limit, an integer past
    Python's digit limit."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, (bytes, bytearray)) else raw.removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start:,} is {raw[exc.start : exc.start + 1]!r})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be a model file") from None
    except ValueError as exc:  # JSONDecodeError, or "Exceeds the limit (4300 digits) for integer string conversion"
        from advisor.textutil import first_line

        raise ValueError(first_line(exc, 400).split("; use sys.set_int_max_str_digits")[0][:160]) from None


def read_json_file(path: str | os.PathLike, *, limit: int = MAX_CONFIG_BYTES) -> Any:
    """A JSON file's value; OSError when it cannot be read (or is not a regular file), ValueError (one line)
    when it is larger than `limit` or not sane JSON."""
    return decode_json(read_bytes(path, limit=limit))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename: readers see the old
    file or the new one, never half of one, and two writers never share a temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path, *, timeout: float = 600.0) -> Iterator[None]:
    """Hold an inter-process lock named after `path` (`<path>.lock`) while the block runs: one process builds
    an artefact in the cache while the others wait for it, then find it done."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise TimeoutError(
            f"another advisor process has held {path.name}.lock for {timeout:.0f} s; if none is running, delete "
            f"{path}.lock"
        ) from None
    try:
        yield
    finally:
        lock.release()
