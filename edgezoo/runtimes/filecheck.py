"""Cheap looks at a model file's bytes before a backend sees them.

Some backends abort the whole process on a malformed file instead of raising (ExecuTorch's program loader
ends a random 64 KB .pte with SIGABRT), so a file that cannot be of its kind is refused here in one line:
its header, identifier and the sizes the header declares. A file that passes may still be refused by the
backend, with the backend's own (caught) error. No backend is imported here.
"""

from __future__ import annotations

import struct
from pathlib import Path

from edgezoo.errors import InputError

HEAD = 64  # bytes read: every header checked here fits


def _head(path: Path) -> tuple[bytes, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        return f.read(HEAD), size


def _refuse(path: Path, what: str, why: str) -> None:
    raise InputError(f"{path} is not {what}: {why}", "is the file complete, and of the kind its suffix says?")


def flatbuffer_root(path: Path, what: str, identifier: bytes | None, size_limit: int | None = None) -> bytes:
    """A FlatBuffers file: a root table offset inside the file (and the 4-byte file identifier when the
    schema declares one). Returns the header bytes."""
    head, size = _head(path)
    limit = size if size_limit is None else size_limit
    if size < 8:
        _refuse(path, what, f"{size} bytes is too short")
    root = struct.unpack_from("<I", head, 0)[0]
    if identifier is not None and head[4:8] != identifier:
        _refuse(path, what, f"no '{identifier.decode()}' identifier at byte 4")
    if not 8 <= root < limit - 4:
        _refuse(path, what, f"its root table offset {root} lies outside the file ({size} bytes)")
    return head


def check_pte(path: Path) -> None:
    """ExecuTorch .pte: FlatBuffers identifier 'ET' + two digits, an optional extended header ('eh00', its
    length, the program size and the segment base offset) whose sizes must lie inside the file."""
    what = "an ExecuTorch .pte program"
    head, size = _head(path)
    if size < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        _refuse(path, what, "no 'ETnn' identifier at byte 4")
    program_size = size
    if head[8:12] == b"eh00":
        if len(head) < 32:
            _refuse(path, what, "its extended header is cut short")
        header_len, program_size, segment_base = struct.unpack_from("<IQQ", head, 12)
        if header_len < 24 or header_len > size:
            _refuse(path, what, f"its extended header declares {header_len} bytes")
        if not 8 < program_size <= size:
            _refuse(path, what, f"it declares a {program_size}-byte program in a {size}-byte file")
        if segment_base and not program_size <= segment_base <= size:
            _refuse(path, what, f"its data segments start at byte {segment_base}, outside the file ({size} bytes)")
    flatbuffer_root(path, what, None, size_limit=program_size)


def check_tflite(path: Path) -> None:
    """TFLite: FlatBuffers with the 'TFL3' identifier."""
    flatbuffer_root(path, "a .tflite model", b"TFL3")


__all__ = ["check_pte", "check_tflite", "flatbuffer_root"]
