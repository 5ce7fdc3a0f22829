"""Checkpoint files with integrity: a header with a content hash, atomic writes, stale-file cleanup.

Layout: ``MAGIC`` (a fixed line), the SHA-256 digest of the payload (32 bytes), the payload's
length (8 bytes, little-endian), then the payload, which is ``torch.save`` of the state. Loading
checks each part in turn, so an empty, truncated, foreign or bit-flipped file is refused with a
:class:`~research_ext.errors.CheckpointError` that names the file and what is wrong, before any
state is touched. SHA-256 detects any accidental change (a flipped byte, a partial write); it is
not a signature against deliberate tampering, since whoever can rewrite the file can rewrite the
digest too.

A save writes ``.dpsgd-<pid>-<random>.tmp`` next to the target and renames it over the target
(``os.replace``), so a reader never sees a half-written checkpoint. A save that is killed leaves
its temporary file behind; the next save in that directory removes every such file whose process
no longer runs (and any older ``.dpsgd-*.tmp`` without a pid).
"""

import hashlib
import io
import os
import re
import tempfile
from typing import Any

import torch

from research_ext.errors import CheckpointError

__all__ = ["read_checkpoint", "write_checkpoint"]

MAGIC = b"research_ext DPSGD checkpoint v1\n"
_DIGEST = 32
_LENGTH = 8
_HEADER = len(MAGIC) + _DIGEST + _LENGTH
_TEMP = re.compile(r"^\.dpsgd-(?:(\d+)-)?.*\.tmp$")


def write_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically, with a header carrying its SHA-256."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(directory)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(_LENGTH, "little")
    fd, tmp = tempfile.mkstemp(prefix=f".dpsgd-{os.getpid()}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(fn: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state saved by :func:`write_checkpoint` at ``path``, after checking its integrity."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{fn}: checkpoint {path!r} {what}")

    if not data:
        raise refuse("is empty (0 bytes); it was probably never finished")
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise refuse(f"is truncated: {len(data)} bytes, shorter than its header")
        raise refuse(
            "is not a DPSGD checkpoint (no research_ext header): write it with `DPSGD.save`"
        )
    if len(data) < _HEADER:
        raise refuse(f"is truncated: {len(data)} bytes, shorter than its {_HEADER}-byte header")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    length = int.from_bytes(data[len(MAGIC) + _DIGEST : _HEADER], "little")
    payload = memoryview(data)[_HEADER:]
    if len(payload) < length:
        raise refuse(f"is truncated: {len(payload)} of {length} payload bytes present")
    if len(payload) > length:
        raise refuse(
            f"is corrupt: {len(payload) - length} bytes follow the {length}-byte payload "
            "(header damaged or data appended)"
        )
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
        raise refuse(
            f"is corrupt: content hash mismatch (sha256 {actual.hex()[:16]}..., header says "
            f"{digest.hex()[:16]}...)"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # the hash matched: a payload saved by another version or tool
        raise refuse(f"has an unreadable payload ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "config" not in state:
        raise refuse("is not a DPSGD checkpoint (its payload has no `config`)")
    return state


def _remove_stale_temporaries(directory: str) -> None:
    """Remove ``.dpsgd-*.tmp`` files left by saves whose process is gone."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMP.match(name)
        if match is None:
            continue
        pid = match.group(1)
        if pid is not None and (int(pid) == os.getpid() or _is_running(int(pid))):
            continue  # a save in progress (another thread, or another process) owns it
        try:
            os.remove(os.path.join(directory, name))
        except OSError:
            pass  # already removed by a concurrent save


def _is_running(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap liveness check: keep the file rather than risk a live save's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
