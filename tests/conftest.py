"""Test-wide setup: an isolated Prefect home, and the fixture modules by subject."""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect: never touch the developer's ~/.prefect, never phone home,
# and keep persisted results of one session away from the next (prefect-notes §1.4).
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="qsp-prefect-"))
os.environ.setdefault("PREFECT_HOME", str(_PREFECT_HOME))
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(_PREFECT_HOME / "results"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")
# The test server's task-run recorder and event persister hold SQLite's write lock after each
# task, so the next concurrency-slot request waits ~2 s for it (measured; prefect-notes §7).
# No test reads task-run records or events.
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED", "false")
# As the stack's server (promoter.services.stack.SLOT_WAIT_SETTING): a run denied a slot asks
# again within a second, not after up to 30 s.
os.environ.setdefault("PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS", "1")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("QSP_CONFIG", None)

pytest_plugins = [
    "tests.fixtures.prefect",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.s3",
    "tests.fixtures.deployments",
    "tests.fixtures.stack",
]


def pytest_configure(config: pytest.Config) -> None:
    """Retries as in production, without the waits (stamina's ``set_testing``); here, after the
    environment above, because importing the retries module imports Prefect."""
    from promoter.tasks import retries

    retries.set_testing(True)


@pytest.fixture(autouse=True)
def _ignored_finalizer_warnings_stay_in_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that ignores PytestUnraisableExceptionWarning has its garbage collected before it ends.

    Tests that run flows in this process ignore it (IN_PROCESS_FLOWS, tests/e2e/conftest.py):
    Prefect's engine abandons API clients with an open socket, whose "unclosed socket" warning
    comes when the garbage collector finalises them. In a reference cycle they wait for a full
    collection, which CPython runs rarely on a large heap, so the warning used to fail whichever
    later test was running then (the doctor test after tests/e2e, when the machine was busy).
    """
    yield
    if any(
        str(arg).startswith("ignore") and "PytestUnraisableExceptionWarning" in str(arg)
        for mark in request.node.iter_markers("filterwarnings")
        for arg in mark.args
    ):
        gc.collect()
