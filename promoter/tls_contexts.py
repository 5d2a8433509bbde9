"""TLS contexts built once per process and reused while their certificate files stay the same.

Building an ``ssl.SSLContext`` that loads a CA file costs ~14 ms of CPU (OpenSSL parses every
certificate in it): a promotion used to build about a dozen (one per QRS client, one per email),
and Prefect builds one for each of its API clients (~8 per promotion in the executor). A context
is safe to share between connections and threads once it is set up, so each is built once; a
certificate file that changes (a new QMC export, a renewed CA) is seen by its size, modification
time and inode, and the next connection gets a context built from the new file.

Only contexts that nobody changes after they are built may be shared: the callers here finish
setting a context up inside ``build`` (a change made by a caller afterwards would reach every
other holder of the same context).
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

# Distinct contexts a process keeps: a few sites, the SMTP server, Prefect's API. A change of
# certificate files makes a new key; the oldest entries go first.
KEPT = 32

_kept: dict[Hashable, ssl.SSLContext] = {}
_lock = threading.Lock()


def reused(files: Iterable[Path], options: Hashable, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """The context ``build()`` makes from ``files`` with ``options``, built once per version of the files."""
    key = (options, tuple(_version(path) for path in files))
    with _lock:
        kept = _kept.get(key)
    if kept is not None:
        return kept
    # Built outside the lock: two threads may both build the first one; either result is right.
    context = build()
    with _lock:
        if len(_kept) >= KEPT:
            del _kept[next(iter(_kept))]
        return _kept.setdefault(key, context)


def _version(path: Path) -> tuple[str, int, int, int] | tuple[str]:
    """Which version of the file this is; a missing file is left for ``build`` to report."""
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(absolute)
    except OSError:
        return (absolute,)
    return (absolute, stat.st_size, stat.st_mtime_ns, stat.st_ino)
