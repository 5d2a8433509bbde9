"""App files between disk and the wire: downloads written and uploads read one chunk at a time.

Memory stays at a few chunks whatever the app size, and file I/O runs off the event loop. An
export lands in its file while uploads already read it: a ``LandingFile`` tells them how far the
download has come, so every target site starts as soon as the first bytes are on disk, and a
failed or repeated upload starts again from the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from uuid import uuid4

from promoter.errors import QrsError

# Called with the number of bytes moved so far, after each chunk.
Progress = Callable[[int], None]

# Big enough that a 200 MB app is a few hundred file and socket operations (each hop to a thread
# costs tens of microseconds), small enough that memory does not notice.
CHUNK_BYTES = 1 << 20
# A reader that found nothing new looks again after this long even without a wake-up (one from
# another thread's event loop could be missed between its check and its wait).
_FOLLOW_PATIENCE = 0.5


class ExportInterrupted(QrsError):
    """The export an upload was reading from failed (not transient) or started over (transient).

    The upload is cut before its last byte, so QRS never makes an app of it.
    """

    def __init__(
        self, site: str, method: str, path: str, status: int | None, body: str = "", restarted: bool = False
    ) -> None:
        super().__init__(site, method, path, status, body)
        self.restarted = restarted

    def __reduce__(self) -> tuple[type[QrsError], tuple[str, str, str, int | None, str, bool]]:  # type: ignore[override]
        return type(self), (self.site, self.method, self.path, self.status, self.body_excerpt, self.restarted)

    @property
    def transient(self) -> bool:
        return self.restarted


class LandingFile:
    """An export being written to ``path``, which uploads follow while it grows.

    The writer calls ``begin`` (with the download's Content-Length), ``grew`` after each write
    and ``finish`` or ``fail``; a download that starts over calls ``begin`` again, which tells
    readers of the earlier attempt to start over too. Readers only ever read bytes already
    written, and never past ``size``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size: int | None = None  # the export's Content-Length, once its answer began
        self.written = 0
        self.attempt = 0
        self.finished = False
        self.failure: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- the writer ---------------------------------------------------------------------------

    def begin(self, size: int | None) -> None:
        self.attempt += 1
        self.size, self.written = size, 0
        self._wake()

    def grew(self, count: int) -> None:
        self.written += count
        self._wake()

    def finish(self, size: int) -> None:
        self.size = self.written = size
        self.finished = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.finished and self.failure is None:
            self.failure = exc
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if loop is asyncio.get_running_loop():
                if not future.done():
                    future.set_result(None)
            else:
                loop.call_soon_threadsafe(_settle, future)

    # -- the readers --------------------------------------------------------------------------

    async def changed(self) -> None:
        """Return after the writer's next step (or after a short while, whichever comes first)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, _FOLLOW_PATIENCE)

    async def expected_size(self) -> int:
        """The complete file's size: the export's Content-Length (the bytes written, without one)."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self.finished or (self.attempt and self.size is not None):
                return self.size if self.size is not None else self.written
            await self.changed()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Exports landing in this process, by file: an upload of such a file follows it instead of
# reading it whole. In-process on purpose: the sites' deliveries run in the export's event loop,
# and a delivery in another process (a retried run) finds the file complete on disk.
_LANDING: dict[Path, LandingFile] = {}


@contextlib.contextmanager
def landing(path: Path) -> Iterator[LandingFile]:
    """Announce that an export is being written to ``path`` while the block runs."""
    file = LandingFile(path)
    _LANDING[path] = file
    try:
        yield file
    finally:
        if _LANDING.get(path) is file:
            del _LANDING[path]


def landing_at(path: Path) -> LandingFile | None:
    return _LANDING.get(path)


async def file_size(path: Path, site: str) -> int:
    """The app file's size once complete: the export's Content-Length while it is still landing.

    ``site`` is where the file goes: an export that failed is reported as that site's upload
    failing for good (ExportInterrupted), not as a failure of that site's QRS.
    """
    file = landing_at(path)
    if file is None:
        return (await asyncio.to_thread(path.stat)).st_size
    try:
        return await file.expected_size()
    except Exception as exc:
        raise ExportInterrupted(site, "POST", "/qrs/app/upload", None, f"the export failed: {exc}") from exc


class UploadBody:
    """An app file as an async byte stream for an httpx request body; follows it while it lands.

    ``sent`` counts what was handed to the connection, so a failed upload knows whether QRS may
    have received the whole file. ``site`` names the upload's site in the errors it raises.
    """

    def __init__(self, path: Path, size: int, site: str, progress: Progress | None = None) -> None:
        self.path = path
        self.size = size
        self.site = site
        self.progress = progress
        self.sent = 0
        self._handle: BinaryIO | None = None
        self._landing = landing_at(path)
        self._attempt = self._landing.attempt if self._landing is not None else 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._handle = handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            while self.sent < self.size:
                want = min(CHUNK_BYTES, self.size - self.sent, await self._available())
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    raise self._interrupted("the app file ended early")
                self.sent += len(chunk)
                if self.progress is not None:
                    self.progress(self.sent)
                yield chunk
        finally:
            self.close()

    async def _available(self) -> int:
        """Bytes on disk not sent yet; waits while the export has written no more."""
        file = self._landing
        if file is None:
            return self.size - self.sent
        while True:
            if file.failure is not None:
                raise self._interrupted(f"the export failed: {file.failure}")
            if file.attempt != self._attempt:
                raise self._interrupted("the export started over; so does the upload", restarted=True)
            if file.written > self.sent:
                return file.written - self.sent
            if file.finished:
                raise self._interrupted("the export ended before the size it announced")
            await file.changed()

    def _interrupted(self, reason: str, *, restarted: bool = False) -> ExportInterrupted:
        return ExportInterrupted(self.site, "POST", "/qrs/app/upload", None, reason, restarted=restarted)

    def close(self) -> None:
        """Close the file now, even if the request stopped reading half-way."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Batches:
    """Socket reads gathered into writes of about CHUNK_BYTES, so the thread hop is paid per MB."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        self.parts.append(chunk)
        self.size += len(chunk)
        return self.size >= CHUNK_BYTES

    def take(self) -> list[bytes]:
        parts, self.parts, self.size = self.parts, [], 0
        return parts


async def save_stream(chunks: AsyncIterable[bytes], dest: Path, progress: Progress | None = None) -> int:
    """Write a byte stream to ``dest``; returns the bytes written.

    The bytes go to a hidden temporary name next to ``dest`` that is renamed only when the
    stream ended well, so ``dest`` is never a half-written app; on failure it is removed.
    """
    partial = dest.with_name(f".{dest.name}.{uuid4().hex}.part")
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    try:
        written = await _write(chunks, partial, progress, None)
        await asyncio.to_thread(partial.replace, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


async def land_stream(
    chunks: AsyncIterable[bytes], file: LandingFile, size: int | None, progress: Progress | None = None
) -> int:
    """Write a download into its landing file, telling the uploads that follow it how far it came.

    Written in place (uploads read it while it grows): ``file.finish`` marks it complete, and only
    once exactly ``size`` bytes (the Content-Length; any count without one) arrived.
    """
    await asyncio.to_thread(file.path.parent.mkdir, parents=True, exist_ok=True)
    file.begin(size)
    written = await _write(chunks, file.path, progress, file)
    if size is not None and written != size:
        raise ValueError(f"the download ended after {written} of {size} bytes")
    file.finish(written)
    return written


async def _write(
    chunks: AsyncIterable[bytes], path: Path, progress: Progress | None, file: LandingFile | None
) -> int:
    written = 0
    # Unbuffered: a byte counted as written is in the file, where a following upload reads it.
    handle = await asyncio.to_thread(path.open, "wb", buffering=0)
    batch = _Batches()

    async def flush() -> None:
        nonlocal written
        parts = batch.take()
        await asyncio.to_thread(_write_all, handle, parts)
        count = sum(len(part) for part in parts)
        written += count
        if file is not None:
            file.grew(count)
        if progress is not None:
            progress(written)

    try:
        async for chunk in chunks:
            if batch.add(chunk):
                await flush()
        if batch.parts:
            await flush()
    finally:
        handle.close()
    return written


def _write_all(handle: BinaryIO, parts: list[bytes]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[handle.write(view) or 0 :]
