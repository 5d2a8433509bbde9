"""The Prefect API a benchmark talks to: a temporary server of its own, or one it is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.testing.utilities import prefect_test_harness

GIVEN = "QSP_BENCH_PREFECT_API_URL"


@contextmanager
def prefect_server() -> Iterator[str]:
    """QSP_BENCH_PREFECT_API_URL when set (the CI smoke run shares the test session's server, which
    saves a 15 s start), else a temporary server on SQLite, as prefect_test_harness starts it."""
    given = os.environ.get(GIVEN)
    if given:
        with temporary_settings({PREFECT_API_URL: given}):
            yield given
        return
    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())
