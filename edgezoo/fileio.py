"""Writing outputs so that a failure never leaves a partial file or destroys an earlier good one.

Every file or folder edgezoo writes goes to a temporary name beside the target and is renamed into place
only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from edgezoo.errors import InputError


def check_model_path(path: str | os.PathLike, what: str = "a model file") -> Path:
    """The one check before any model file is opened by path: it exists, is a regular file, is not empty.

    A FIFO, socket or device passes ``exists()`` and reading it blocks for ever (a FIFO waits for a writer)
    or never ends (/dev/zero), so anything that is not a regular file is refused in one line; ``stat`` does
    not open the file, so the check itself cannot hang. A folder is refused too, except where ``what``'s
    format is one (callers with folder formats check before calling this).
    """
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a folder, not {what}")
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"{path} is {kind}, not {what}", "give a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty, not {what}")
    return path


def check_writable(path: str | os.PathLike, option: str = "") -> Path:
    """Fail early, before slow work, when the file ``path`` could not be written. Creates nothing.

    ``option`` (e.g. "--json") starts the message, so the user knows which argument is meant.
    """
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise InputError(f"cannot write {label}: it is a folder, not a file", "give a file name")
    _check_can_create(path, label)
    return path


def check_writable_dir(path: str | os.PathLike, option: str = "") -> Path:
    """Fail early when the folder ``path`` could not be written (replaced whole). Creates nothing."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write {label}: a file with that name exists, not a folder",
                         "give another folder, or remove the file")
    _check_can_create(path, label)
    return path


# What an earlier run of the same command wrote into a folder it may now replace whole: the names of those
# entries, or None when the folder is not such an output at all. Everything else in the folder is the user's.
Owned = Callable[[Path], Optional[Iterable[str]]]


def check_replaceable_dir(path: str | os.PathLike, option: str = "", owned: Owned | None = None) -> Path:
    """Fail early unless the folder ``path`` may be replaced whole: it does not exist, is empty, or holds
    only entries that ``owned(path)`` names (what edgezoo wrote there before). Creates nothing.

    A folder replaced whole loses everything in it, so a folder holding anything edgezoo did not write is
    refused, and so are the current folder and the folders above it (``-o .``, ``-o ''``, ``-o "$PWD"``):
    replacing them would empty the folder the user works in.
    """
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    here = Path.cwd().resolve()
    where = path.resolve()
    if where == here or where in here.parents:
        raise InputError(f"cannot write {label}: it is the current folder{'' if where == here else ' or holds it'}, "
                         "and an output folder is replaced whole", "give a new folder, e.g. -o ./out")
    check_writable_dir(path, option)
    if path.is_dir():
        foreign = sorted(set(_entries(path, label)) - set(owned(path) or () if owned else ()))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise InputError(f"cannot write {label}: the folder holds {foreign[0]!r}{more}, which edgezoo did not "
                             "write; an output folder is replaced whole, and edgezoo deletes only its own files",
                             "give a new or empty folder, or an earlier output of this command")
    return path


def _entries(folder: Path, label: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError as e:
        raise InputError(f"cannot write {label}: {_refusal(folder, e)}", "choose another location") from None


def _check_can_create(path: Path, label: str) -> None:
    """The nearest existing folder above ``path`` is a folder that really takes new entries.

    os.access is not enough: root passes it on read-only mounts, /proc and /sys; so a probe file is made
    and removed.
    """
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {label}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".edgezoo-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(f"cannot write {label}: {_refusal(probe, e)}", "choose another location") from None


def _refusal(folder: Path, e: OSError) -> str:
    if e.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"folder {folder} is not writable (permission denied)"
    # /proc and /sys answer ENOENT or EINVAL for a new file: the folder exists, it just takes none
    return f"folder {folder} does not accept new files" + ("" if e.errno in (errno.ENOENT, errno.EINVAL)
                                                          else f" ({e.strerror})")


def _check_parent(path: Path) -> None:
    _check_can_create(path, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)


class Terminated(SystemExit):
    """SIGTERM, raised as an exception so that partial outputs are removed; exits with 128 + 15."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises ``Terminated`` (in the main thread), so cleanup code runs.

    Python handles SIGINT as KeyboardInterrupt already; SIGTERM (what `kill`, timeouts and process managers
    send) would end the process at once and leave temporary folders behind. A handler someone else
    installed (or SIG_IGN) is left alone, and so is a block entered from another thread.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    _check_parent(path)
    with sigterm_raises():
        return _write_bytes(path, data)


def _write_bytes(path: Path, data: bytes) -> Path:
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
def atomic_directory(path: str | os.PathLike, owned: Owned | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole, on failure it is removed.

    An existing ``path`` is kept until the new one is complete, then swapped out; nothing beside it is
    touched, so ``path`` may be one sub-folder of a larger tree (a Triton model's version folder). An
    existing ``path`` must be empty or hold only what ``owned`` names (see ``check_replaceable_dir``).
    """
    with atomic_directories(path, owned=owned) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_directories(*paths: str | os.PathLike, owned: Owned | None = None) -> Iterator[list[Path]]:
    """``atomic_directory`` for several folders that succeed or fail together.

    Yields one temporary folder per path. Only when the block succeeds are they swapped in, one after the
    other; if a swap fails, the ones already swapped are undone, so every target holds either all of the new
    outputs or all of the old ones. On failure (an exception, Ctrl-C, SIGTERM) the temporary folders and any
    parent folders made for them are removed.

    ``owned(path)`` names what an earlier run wrote in an existing ``path``; anything else there (checked
    before and again just before the swap) refuses the whole operation, so nothing the user put there is
    deleted (``check_replaceable_dir``).
    """
    targets = [Path(p) for p in paths]
    with sigterm_raises():
        tmps: list[Path] = []
        made: list[Path] = []
        try:
            for target in targets:
                check_replaceable_dir(target, owned=owned)
                made += _make_parents(target.parent)
                tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
                tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a bundle is for sharing
                tmps.append(tmp)
            yield tmps
            with _swap_uninterrupted():
                for target in targets:  # minutes may have passed: something may have been put there meanwhile
                    check_replaceable_dir(target, owned=owned)
                try:
                    _swap_in(targets, tmps)
                except OSError as e:  # a mount point, a busy folder: every target is as it was
                    raise InputError(f"cannot replace {e.filename or targets[0]}: {e.strerror or e}",
                                     "choose another output folder") from None
        except BaseException:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: something else may have been put there meanwhile
            raise


@contextlib.contextmanager
def _swap_uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the outputs are swapped in (milliseconds), and one that arrived then is
    dropped: the swap is the point of no return, after which the run has succeeded and must not end as
    interrupted (or with the earlier outputs half swapped back). One that came before is raised before it."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        arrived = signal.sigpending() & held
        handlers = {s: signal.getsignal(s) for s in arrived}
        for s in arrived:
            signal.signal(s, signal.SIG_IGN)  # a pending signal set to ignored is discarded (POSIX)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, h in handlers.items():
            signal.signal(s, h)


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it made (outermost first)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(f"cannot create folder {f}: {_refusal(f.parent, e)}") from None
        made.append(f)
    return made


def _swap_in(targets: list[Path], tmps: list[Path]) -> None:
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for target, tmp in zip(targets, tmps):
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.rmdir(old)  # a fresh unused name, for os.replace
                os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                if old is not None:
                    os.replace(old, target)
                raise
            done.append((target, tmp, old))
    except BaseException:
        for target, tmp, old in reversed(done):  # put the new folder back where cleanup removes it
            os.replace(target, tmp)
            if old is not None:
                os.replace(old, target)
        raise
    for _, _, old in done:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
