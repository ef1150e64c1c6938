"""Other libraries' output goes to a log file; edgezoo's own lines stay on the terminal.

torch, torchao, ExecuTorch (XNNPACK's cpuinfo), LiteRT/TensorFlow, onnxruntime, OpenVINO and NNCF print
warnings and log lines a user cannot act on, partly from Python (``warnings``, ``logging``, ``print``) and
partly from C++ straight to file descriptors 1 and 2. Only an OS-level redirection catches the second kind,
so :func:`third_party_to_log` points fds 1 and 2 at a log file for the duration of a command, and points
edgezoo's rich consoles at duplicates of the original descriptors. ``--verbose`` (or ``EDGEZOO_VERBOSE=1``)
turns all of this off.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

VERBOSE_ENV = "EDGEZOO_VERBOSE"
_KEEP_LOGS = 20  # logs of earlier commands kept in the cache folder


class _State:
    verbose: bool = bool(os.environ.get(VERBOSE_ENV))
    log_path: Optional[Path] = None  # the log of the redirection in force, if any
    log_fd: Optional[int] = None


state = _State()


def set_verbose(on: bool) -> None:
    state.verbose = on


def log_dir() -> Path:
    """Where bench, compare and serve keep other libraries' output (export keeps it in the bundle)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "edgezoo" / "logs"


def _open_log(command: str) -> tuple[Optional[Path], int]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (log_dir(), Path(tempfile.gettempdir()) / "edgezoo-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _prune(folder)
            path = folder / f"{command}-{stamp}-{os.getpid()}.log"
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        except OSError:
            continue
    return None, os.open(os.devnull, os.O_WRONLY)  # nowhere to write: dropped, and the note says so


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-_KEEP_LOGS]:
        with contextlib.suppress(OSError):
            old.unlink()


def _fd_of(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _flush_all() -> None:
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    with contextlib.suppress(Exception):  # C stdio buffers, so that native lines land where they were written
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def third_party_to_log(command: str) -> Iterator[Optional[Path]]:
    """Send fds 1/2, Python warnings and unhandled log records to a log file; yield its path.

    The consoles in :mod:`edgezoo.console` keep writing where they wrote before. On exit, if anything was
    logged, one line on stderr names the file; an empty log is removed. With ``--verbose``, a no-op.
    """
    if state.verbose or state.log_fd is not None:
        yield state.log_path
        return
    from edgezoo import console as consoles

    path, log_fd = _open_log(command)
    _flush_all()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    # edgezoo's own lines: to a duplicate of the terminal where a console wrote to fd 1/2 (a test's captured
    # stream has no such fd and stays as it is)
    terminals, restore = [], []
    for con, fd in ((consoles.console, 1), (consoles.err_console, 2)):
        current = con.file
        restore.append((con, con._file))  # rich has no public getter for "follows sys.stdout/err"
        if _fd_of(current) == fd:
            stream = os.fdopen(os.dup(saved[fd]), "w", encoding=getattr(current, "encoding", None) or "utf-8",
                               errors="replace", buffering=1)
            terminals.append(stream)
            con.file = stream
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    # fd 2 itself, not a copy: it follows move_log
    log_file = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    old_showwarning, old_last_resort = warnings.showwarning, logging.lastResort

    def showwarning(message, category, filename, lineno, file=None, line=None):
        log_file.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = showwarning
    handler = logging.StreamHandler(log_file)
    handler.setLevel(logging.WARNING)
    logging.lastResort = handler
    state.log_path, state.log_fd = path, log_fd
    try:
        yield path
    finally:
        _flush_all()
        with contextlib.suppress(Exception):
            log_file.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        warnings.showwarning, logging.lastResort = old_showwarning, old_last_resort
        for con, original in restore:
            con._file = original
        for stream in terminals:
            with contextlib.suppress(Exception):
                stream.close()
        with contextlib.suppress(Exception):
            log_file.close()
        os.close(state.log_fd)
        final = state.log_path
        state.log_path, state.log_fd = None, None
        _tell(final, path)


def _tell(final: Optional[Path], opened: Optional[Path]) -> None:
    from edgezoo.console import err_console

    if final is None:
        return
    try:
        size = final.stat().st_size
    except OSError:
        return
    if final != opened:  # moved into a bundle: the command names it itself
        return
    if size == 0:
        with contextlib.suppress(OSError):
            final.unlink()
        return
    err_console.print(f"other libraries' messages: {final} (--verbose shows them)", highlight=False,
                      markup=False, soft_wrap=True)


def move_log(dest: Path) -> Optional[Path]:
    """Move the log in force to ``dest`` (e.g. into the bundle just written) and keep logging there.

    Returns ``dest``, or None when nothing is being logged (``--verbose``) or nothing was logged yet.
    """
    if state.log_fd is None or state.log_path is None:
        return None
    _flush_all()
    try:
        if state.log_path.stat().st_size == 0:
            return None  # nothing to keep: no file in the bundle, no line in the summary
    except OSError:
        return None
    try:
        new_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    except OSError:
        return None
    with open(state.log_path, "rb") as src:
        while chunk := src.read(1 << 20):
            os.write(new_fd, chunk)
    for fd in (1, 2):
        os.dup2(new_fd, fd)
    os.close(state.log_fd)
    with contextlib.suppress(OSError):
        state.log_path.unlink()
    state.log_path, state.log_fd = dest, new_fd
    return dest
