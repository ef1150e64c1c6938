"""Writing outputs so that a failure never leaves a partial file or destroys an earlier good one.

Every file or folder edgezoo writes goes to a temporary name beside the target and is renamed into place
only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgezoo.errors import InputError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before slow work, when ``path`` could not be written (its folder is made if missing)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write {path}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: folder {parent} is not writable")


def check_writable_folder(path: str | os.PathLike, hint: str | None = None) -> Path:
    """Fail early, before slow work, when folder ``path`` could not be made or replaced (as
    ``atomic_directory`` does at the end); nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write {path}: a file with that name exists", hint)
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: folder {probe} is not writable", hint)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON: non-finite floats (an SQNR of identical outputs is inf) are written as null."""
    text = json.dumps(_finite(json.loads(json.dumps(obj, default=_jsonable))), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole, on failure it is removed.

    An existing ``path`` is kept until the new one is complete, then swapped out.
    """
    path = Path(path)
    _check_parent(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write bundle {path}: a file with that name exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a bundle is for sharing
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
