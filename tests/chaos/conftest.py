"""The chaos world: the whole stack (tests/fixtures/stack.py) and the levers to pull on it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from promoter.child_processes import Child, start_child
from promoter.qrs.client import QrsClient
from promoter.services.stack import is_worker
from promoter.settings import Settings
from tests.fixtures.stack import LiveStack, StartStack, descendants, run

__all__ = ["Chaos", "run"]


@dataclass
class Chaos(LiveStack):
    """The running world and the stack; the faults that need process control."""

    def stop_prefect_server(self) -> tuple[list[str], dict[str, str], Path]:
        """Stop the Prefect server as a service manager would; returns what starts it again."""
        server = self.child("prefect-server")
        command = [str(part) for part in server.process.args]  # type: ignore[union-attr]
        server.stop(15.0)
        self.stack.children.remove(server)
        return command, self.stack.server_environment(), server.log_file

    def start_prefect_server(self, command: list[str], env: dict[str, str], log_file: Path) -> None:
        child = start_child("prefect-server", command, env=env, cwd=Path.cwd(), log_file=log_file)
        self.stack.children.append(child)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert child.alive(), child.log_tail()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.stack.api_url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"the Prefect server did not come back:\n{child.log_tail()}")

    orphans: set[int] = field(default_factory=set)  # flow processes of a killed process worker

    def worker(self) -> Child:
        """The stack's executor (or process worker): the child that runs the flow runs."""
        return next(child for child in self.stack.children if is_worker(child))

    def kill_worker(self) -> None:
        """kill -9 of the executor process (every run in it ends with it; a process worker's
        flow-run processes are orphaned instead, as on a real crash)."""
        worker = self.worker()
        self.orphans |= descendants(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(10)
        self.stack.children.remove(worker)

    def start_worker(self) -> None:
        """A new executor of the same name, as the service manager restarts a dead one."""
        self.stack.start_worker()


async def review_stream(settings: Settings, site: str) -> UUID:
    """The stream "Review" on a site that lacks it (the world has it on test only)."""
    async with QrsClient.for_site(settings, site) as qrs:
        found = await qrs.stream_by_name("Review")
        if found is not None:
            return found.id
        return UUID((await qrs.create_entity("stream", {"name": "Review", "customProperties": []}))["id"])


@pytest.fixture
def chaos(start_stack: StartStack) -> Iterator[Chaos]:
    """dev/test/prod, SMTP, S3 (versioned bucket) and the stack: Prefect server, deployments, executor,
    webhook, keep-subscriptions; everything stopped and the database dropped afterwards."""
    with start_stack(Chaos) as world:
        world.world.target_streams["prod"]["Review"] = run(review_stream(world.settings, "prod"))
        try:
            yield world
        finally:
            # An orphaned flow process can hang at exit for good (RELIABILITY.md); none outlives the test.
            for pid in world.orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
