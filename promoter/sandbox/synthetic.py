"""Synthetic Qlik apps (QVF files) for the sandbox: a metadata part, then a data part after a marker.

A real QVF is opaque to us; the sandbox only needs to know where "the data" starts so that an
export with ``skipData=true`` and an upload with ``keepdata=false`` can drop it. Files without the
marker are all metadata (as an app that was never reloaded).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DATA_MARKER = b"\n--QS-SANDBOX-APP-DATA--\n"
_CHUNK = 1024 * 1024


def make_app_file(path: Path, size: int, *, metadata_bytes: int = 4096, seed: str = "app") -> Path:
    """Write a synthetic app of exactly ``size`` bytes (metadata, marker, pseudo-random data).

    Sizes too small for the marker give a metadata-only file. Content depends only on (size, seed),
    so two calls give identical files, and writing never holds more than one chunk in memory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"QS-SANDBOX-APP {seed}\n".encode()
    metadata = min(max(metadata_bytes, len(header)), size)
    with path.open("wb") as out:
        out.write(_pattern(header, metadata, b"m"))
        rest = size - metadata
        if rest >= len(DATA_MARKER):
            out.write(DATA_MARKER)
            rest -= len(DATA_MARKER)
            block = hashlib.sha256(seed.encode()).digest() * (_CHUNK // 32)
            while rest > 0:
                piece = block[: min(rest, len(block))]
                out.write(piece)
                rest -= len(piece)
        else:
            out.write(b"m" * rest)
    return path


def _pattern(header: bytes, size: int, filler: bytes) -> bytes:
    return (header + filler * size)[:size]


def metadata_length(path: Path) -> int:
    """Bytes before the data marker, or the whole size when there is none; reads in chunks."""
    overlap = len(DATA_MARKER) - 1
    offset, tail = 0, b""
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            window = tail + chunk
            found = window.find(DATA_MARKER)
            if found >= 0:
                return offset - len(tail) + found
            tail = window[-overlap:]
            offset += len(chunk)
    return offset


def copy_without_data(src: Path, dst: Path) -> int:
    """Copy only the metadata part of an app file; returns the bytes written."""
    keep = metadata_length(src)
    written = 0
    with src.open("rb") as source, dst.open("wb") as out:
        while written < keep:
            chunk = source.read(min(_CHUNK, keep - written))
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
    return written


def drop_data_in_place(path: Path) -> None:
    """Cut the data part off an app file (upload with keepdata=false)."""
    keep = metadata_length(path)
    if keep < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
