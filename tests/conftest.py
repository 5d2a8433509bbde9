"""Test-wide setup: an isolated Prefect home, and the fixture modules by subject."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
os.environ.pop("PREFECT_API_URL", None)
# Task retries without waiting (read when promoter.tasks.policy is imported).
os.environ["QSP_TASK_RETRY_DELAYS"] = "0,0,0"
os.environ.pop("QSP_CONFIG", None)

pytest_plugins = [
    "tests.fixtures.prefect",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.s3",
    "tests.fixtures.deployments",
    "tests.fixtures.stack",
]
