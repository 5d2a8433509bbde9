"""App files between disk and the wire: uploads read and downloads written one chunk at a time.

Memory stays at about one chunk whatever the app size, and file I/O runs off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO
from uuid import uuid4

# Called with the number of bytes moved so far, after each chunk.
Progress = Callable[[int], None]

# Big enough that a 200 MB app is a few hundred file and socket operations, small enough
# that memory does not notice.
CHUNK_BYTES = 1 << 20


class UploadBody:
    """An app file as an async byte stream for an httpx request body.

    ``sent`` counts what was handed to the connection, so a failed upload knows whether QRS
    may have received the whole file.
    """

    def __init__(self, path: Path, progress: Progress | None = None) -> None:
        self.path = path
        self.progress = progress
        self.sent = 0
        self._handle: BinaryIO | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._handle = handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                self.sent += len(chunk)
                if self.progress is not None:
                    self.progress(self.sent)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Close the file now, even if the request stopped reading half-way."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def save_stream(chunks: AsyncIterable[bytes], dest: Path, progress: Progress | None = None) -> int:
    """Write a byte stream to ``dest``; returns the bytes written.

    The bytes go to a hidden temporary name next to ``dest`` that is renamed only when the
    stream ended well, so ``dest`` is never a half-written app; on failure it is removed.
    """
    partial = dest.with_name(f".{dest.name}.{uuid4().hex}.part")
    written = 0
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    try:
        handle = await asyncio.to_thread(partial.open, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
                written += len(chunk)
                if progress is not None:
                    progress(written)
        finally:
            handle.close()
        await asyncio.to_thread(partial.replace, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written
