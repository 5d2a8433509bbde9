"""`qs-promoter executor`: the work pool's flow runs run in one process, several at once, and the
UI's Retry and Cancel, a stop and a killed executor all end as an admin expects.

A real Prefect server (the session's); the flows are small ones of tests/fixtures/executor.py,
registered as deployments of a work pool of each test's own. Runs wait for a file the test
creates, so the test decides when each one ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import AwaitingRetry, Cancelling, Running, Scheduled

from promoter.cli.up import stop_on_signals
from promoter.outcome import named_by_us
from promoter.prefect_api import HANDLE_CHANGE, first_run_name, with_prefect
from promoter.services.executor import Executor, ExecutorOptions, Outcome, Stop, load_pool_flows
from promoter.services.orchestration import worker_seen
from promoter.services.stack import project_dir
from promoter.settings import PrefectSettings, Settings, SiteSettings, write_settings
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.fixtures.deployments import Registration, child_environment, cli_command
from tests.fixtures.executor import GATED, TWO_STEPS, BusyApi, register
from tests.fixtures.stack import run

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

pytestmark = [pytest.mark.e2e, IN_PROCESS_FLOWS]

T = TypeVar("T")
WITHIN = 60.0  # seconds for anything to happen on a busy 2-core machine

# The requests Prefect 3.9.1's UI sends (server/ui/assets: retryFlowRun, and the Cancel dialog's
# setFlowRunState, whose force defaults to true): POST /flow_runs/{id}/set_state with these.
UI_RETRY = ({"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, False)
UI_CANCEL = ({"type": "CANCELLING", "name": "Cancelling"}, True)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {WITHIN:.0f} s"
        time.sleep(0.05)


@dataclass
class Pool:
    """A work pool of this test with the test flows' deployments, and the folder their runs mark."""

    api_url: str
    name: str
    folder: Path
    deployments: dict[str, UUID]

    def prefect(self, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
        return run(with_prefect(self.api_url, call))

    def options(self, **changes: Any) -> ExecutorOptions:
        return ExecutorOptions(**{"pool": self.name, "name": f"{self.name}-executor", **changes})

    def start(self, label: str, flow: str = GATED) -> UUID:
        """A run of ``flow``'s deployment, as the webhook or the UI's Run creates one."""

        async def create(client: PrefectClient) -> UUID:
            parameters = {"folder": str(self.folder), "label": label}
            return (
                await client.create_flow_run_from_deployment(self.deployments[flow], parameters=parameters)
            ).id

        return self.prefect(create)

    def ui(self, run_id: UUID, action: tuple[dict[str, str], bool]) -> str:
        """Send a UI button's request for ``run_id``; the server's answer (ACCEPT, REJECT ...)."""
        state, force = action
        url = f"{self.api_url}/flow_runs/{run_id}/set_state"
        answer = httpx.post(url, json={"state": state, "force": force}, timeout=WITHIN)
        answer.raise_for_status()
        return str(answer.json()["status"])

    def flow_run(self, run_id: UUID) -> FlowRun:
        return self.prefect(lambda client: client.read_flow_run(run_id))

    def wait_state(self, run_id: UUID, *types: str) -> FlowRun:
        """The run once its state type is one of ``types`` (e.g. "COMPLETED")."""
        deadline = time.monotonic() + WITHIN
        while True:
            found = self.flow_run(run_id)
            if found.state_type is not None and found.state_type.value in types:
                return found
            assert time.monotonic() < deadline, f"{found.name} is {found.state_name}, not {types}"
            time.sleep(0.1)

    def history(self, run_id: UUID) -> list[str]:
        """The names of every state the run went through, oldest first."""
        states = self.prefect(lambda client: client.read_flow_run_states(run_id))
        return [state.name or "" for state in states]

    def path(self, label: str, what: str) -> Path:
        return self.folder / f"{label}.{what}"

    def go(self, label: str) -> None:
        self.path(label, "go").touch()

    def wait_mark(self, label: str, what: str) -> str:
        wait_until(self.path(label, what).exists, f"{label}.{what}")
        return self.path(label, what).read_text(encoding="utf-8")

    def lines(self, label: str, what: str) -> list[str]:
        path = self.path(label, what)
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def settings_file(self) -> Path:
        """A settings file naming this pool (the executor reads prefect.work_pool from it)."""
        settings = Settings(
            source_site=SiteSettings(host="qlik-dev.invalid"), prefect=PrefectSettings(work_pool=self.name)
        )
        return write_settings(settings, self.folder / "qs-promoter.toml")


@pytest.fixture
def pool(prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pool:
    # The executor's pull step changes this process's folder: it is given back afterwards.
    monkeypatch.chdir(project_dir())
    name = f"executor-{uuid4().hex[:8]}"
    folder = tmp_path / "marks"
    folder.mkdir()
    return Pool(prefect_api, name, folder, run(with_prefect(prefect_api, lambda c: register(c, name))))


@contextmanager
def executing(options: ExecutorOptions) -> Iterator[Executor]:
    """An executor running in a thread of this process, ready (listening and polled once);
    stopped at once afterwards."""
    executor = Executor(options)
    thread = executor.run_in_thread()
    try:
        while not executor.ready.wait(0.1):
            if not thread.is_alive():
                raise AssertionError(f"the executor ended before it was ready: {executor.error!r}")
        yield executor
    finally:
        executor.request_stop()
        executor.request_stop()
        thread.join(WITHIN)
    assert not thread.is_alive(), "the executor did not stop"
    assert executor.error is None, executor.error


class Output:
    """The lines a child process writes (stdout and stderr), collected by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str) -> None:
        wait_until(lambda: any(text in line for line in list(self.lines)), f"{text!r} in the output")

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


@contextmanager
def cli_executor(pool: Pool, name: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """`qs-promoter executor` as its service manager starts it, ready to take runs; killed afterwards."""
    with subprocess.Popen(
        cli_command("executor", "--config", str(pool.settings_file()), "--name", name, *args),
        cwd=pool.folder,
        env=child_environment(PREFECT_API_URL=pool.api_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    ) as process:
        output = Output(process)
        try:
            output.wait_for(f"taking runs of work pool {pool.name!r}")
            yield process, output
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(WITHIN)
            output.text()  # the reader has seen the end of the output before the pipe is closed


def test_runs_of_the_pool_run_in_this_process_and_complete(pool: Pool) -> None:
    """Runs of a registered deployment are claimed and run by the executor's own process (no
    process per run), end Completed, carry the executor's name, and the pool lists the executor
    as a worker (its heartbeat)."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    labels = ["one", "two", "three"]
    for label in labels:
        pool.go(label)
    runs = [pool.start(label) for label in labels]
    options = pool.options()

    with executing(options):
        finished = [pool.wait_state(run_id, "COMPLETED") for run_id in runs]
        online = pool.prefect(lambda c: worker_seen(c, pool.name, options.name, since))

    assert {pool.wait_mark(label, "started").split()[0] for label in labels} == {str(os.getpid())}
    assert all(run.infrastructure_pid == options.marker for run in finished)
    assert online


def test_runs_run_several_at_once_up_to_the_limit(pool: Pool) -> None:
    """With a limit of 2, two runs run at the same time and a third starts only when one of them
    has ended."""
    labels = ["a", "b", "c"]
    runs = [pool.start(label) for label in labels]

    with executing(pool.options(limit=2)):
        wait_until(lambda: sum(pool.path(label, "started").exists() for label in labels) == 2, "two started")
        first = next(label for label in labels if pool.path(label, "started").exists())
        waiting = [label for label in labels if not pool.path(label, "started").exists()]
        pool.go(first)
        pool.wait_state(runs[labels.index(first)], "COMPLETED")
        for label in labels:
            pool.go(label)
        for run_id in runs:
            pool.wait_state(run_id, "COMPLETED")

    spans = [
        (float(pool.wait_mark(label, "started").split()[1]), float(pool.wait_mark(label, "ended")))
        for label in labels
    ]
    at_once = [sum(start <= moment < end for start, end in spans) for moment, _ in spans]
    assert max(at_once) == 2
    assert len(waiting) == 1
    third_started = spans[labels.index(waiting[0])][0]
    assert third_started >= spans[labels.index(first)][1]


def test_a_new_run_starts_on_the_servers_event_not_at_the_next_poll(pool: Pool) -> None:
    """A run created while the executor waits is started by the server's Scheduled event: with
    polls ten minutes apart it still completes within a minute."""
    with executing(pool.options(poll_seconds=600.0)):
        pool.go("prompt")
        run_id = pool.start("prompt")
        pool.wait_state(run_id, "COMPLETED")


def test_runs_prefect_named_get_our_names_while_still_scheduled_for_later(pool: Pool) -> None:
    """Runs created an hour ahead with a name Prefect made up (as its scheduler creates the
    every-minute and every-10-minutes ticks, or the UI a Custom run for later) are named by their
    flow and parameters by the executor at its start, still Scheduled; a run we named keeps its name."""
    later = datetime.now(UTC) + timedelta(hours=1)
    parameters = {"folder": str(pool.folder), "label": "later"}

    async def create(client: PrefectClient) -> tuple[UUID, UUID]:
        made_up = await client.create_flow_run_from_deployment(
            pool.deployments[GATED], parameters=parameters, state=Scheduled(scheduled_time=later)
        )
        ours = await client.create_flow_run_from_deployment(
            pool.deployments[TWO_STEPS],
            parameters=parameters,
            state=Scheduled(scheduled_time=later),
            name="promote 'Sales' (x)",
        )
        return made_up.id, ours.id

    made_up, ours = pool.prefect(create)
    slug = pool.flow_run(made_up).name

    with executing(pool.options()):
        wait_until(lambda: named_by_us(pool.flow_run(made_up).name), f"new name for {slug}")
        renamed, kept = pool.flow_run(made_up), pool.flow_run(ours)

    assert not named_by_us(slug)
    assert (renamed.name, renamed.state_name) == (first_run_name(GATED, parameters), "Scheduled")
    assert (kept.name, kept.state_name) == ("promote 'Sales' (x)", "Scheduled")


def test_a_busy_server_when_naming_scheduled_runs_only_delays_the_names(pool: Pool) -> None:
    """The Prefect API answers 503 (SQLite's "database is locked"), with the client's retries spent,
    to the executor's read of the Scheduled runs to name, then to the rename of a run: the executor
    goes on (a due run completes, it stops without an error) and a later round names the run."""
    later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
    parameters = {"folder": str(pool.folder), "label": "later"}
    waiting = pool.prefect(
        lambda client: client.create_flow_run_from_deployment(
            pool.deployments[GATED], parameters=parameters, state=later
        )
    ).id
    pool.go("due")
    due = pool.start("due")

    with BusyApi(pool.api_url).running() as api:
        refusals = [
            api.refuse("POST", "/flow_runs/filter", "SCHEDULED"),
            api.refuse("PATCH", f"/flow_runs/{waiting}", '"name"'),
        ]
        with (
            temporary_settings({PREFECT_API_URL: api.url, PREFECT_CLIENT_MAX_RETRIES: 0}),
            executing(pool.options(naming_seconds=0.5)),
        ):
            pool.wait_state(due, "COMPLETED")
            wait_until(lambda: named_by_us(pool.flow_run(waiting).name), "a name for the waiting run")

    assert [refusal.answered for refusal in refusals] == [1, 1]
    named = pool.flow_run(waiting)
    assert (named.name, named.state_name) == (first_run_name(GATED, parameters), "Scheduled")


def test_ui_retry_runs_the_same_run_again_with_finished_steps_cached(pool: Pool) -> None:
    """Retry in the UI (set_state AwaitingRetry, not forced, as the UI sends it) schedules the
    failed run again: the executor runs it a second time, the step that had finished comes back
    Cached (its body runs once), the failed one runs again, and the run completes."""
    pool.path("retry", "fail").touch()
    run_id = pool.start("retry", TWO_STEPS)

    with executing(pool.options()):
        pool.wait_state(run_id, "FAILED")
        pool.path("retry", "fail").unlink()
        answer = pool.prefect(lambda c: c.set_flow_run_state(run_id, AwaitingRetry(), force=False))
        assert answer.status.value == "ACCEPT"
        retried = pool.wait_state(run_id, "COMPLETED")

    assert retried.run_count == 2
    assert pool.lines("retry", "log") == ["prepare", "finish", "finish"]
    assert pool.lines("retry", "states") == ["Completed", "Cached"]


def test_ui_cancel_ends_cancelled_while_another_run_completes(pool: Pool) -> None:
    """Cancel in the UI (Cancelling, as the UI sends it) stops that run's flow and it ends
    Cancelled, never Crashed; another run of the same executor goes on and completes."""
    cancelled, other = pool.start("cancelled"), pool.start("other")

    with executing(pool.options()):
        pool.wait_mark("cancelled", "started")
        pool.wait_mark("other", "started")
        pool.prefect(lambda c: c.set_flow_run_state(cancelled, Cancelling(), force=False))
        pool.wait_state(cancelled, "CANCELLED")
        pool.go("other")
        pool.wait_state(other, "COMPLETED")

    assert "Crashed" not in pool.history(cancelled)
    assert not pool.path("cancelled", "ended").exists()
    assert Stop.CANCEL.value == pool.flow_run(cancelled).state.message  # type: ignore[union-attr]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_sigterm_drains_the_executor(pool: Pool) -> None:
    """SIGTERM: the executor takes no new run, lets a running one finish within the grace
    period, cancels the one still running after it (Cancelled, so it can be run again, never
    Crashed) and exits with code 0."""
    with cli_executor(pool, "drained", "--stop-grace", "8") as (process, output):
        finishing, stuck = pool.start("finishing"), pool.start("stuck")
        pool.wait_mark("finishing", "started")
        pool.wait_mark("stuck", "started")

        process.send_signal(signal.SIGTERM)
        output.wait_for("stopping: waiting up to 8 s for 2 flow run(s) to finish")
        late = pool.start("late")
        pool.go("finishing")
        code = process.wait(WITHIN)

    assert code == 0, output.text()
    assert pool.flow_run(finishing).state_name == "Completed"
    ended = pool.flow_run(stuck)
    assert (ended.state_name, ended.state.message) == ("Cancelled", Stop.SHUTDOWN.value)  # type: ignore[union-attr]
    assert "Crashed" not in pool.history(stuck)
    assert pool.flow_run(late).state_name == "Scheduled"
    assert not pool.path("late", "started").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_sigterm_with_eight_runs_active_loses_none_and_runs_none_twice(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM (to this process, through the CLI's signal handling) while 8 runs run: the 4 that
    finish within the grace period end Completed (drained), the 4 still running after it end
    Cancelled, never Crashed. Retry in the UI and a new executor of the same name run those 4
    again to Completed. Every run completes, and each flow's body ends exactly once."""
    caplog.set_level(logging.INFO, logger="promoter.services.executor")
    labels = [f"run-{n}" for n in range(8)]
    drained, stuck = labels[:4], labels[4:]
    executor = Executor(pool.options(name="eight", limit=8, stop_grace=10.0))
    with stop_on_signals(executor.request_stop):
        thread = executor.run_in_thread()
        wait_until(lambda: executor.ready.is_set() or not thread.is_alive(), "executor ready")
        assert executor.ready.is_set(), executor.error
        runs = {label: pool.start(label) for label in labels}
        for label in labels:
            pool.wait_mark(label, "started")

        # Only the main thread's handler catches it; anywhere else it would end the test runner.
        assert threading.current_thread() is threading.main_thread()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: "stopping: waiting up to 10 s for 8 flow run(s)" in caplog.text, "draining")
        for label in drained:
            pool.go(label)
        thread.join(WITHIN)

    assert not thread.is_alive(), "the executor did not stop"
    assert (executor.error, executor.outcome) == (None, Outcome.STOPPED)
    stopped = {label: pool.flow_run(runs[label]).state_name for label in labels}
    assert stopped == {**dict.fromkeys(drained, "Completed"), **dict.fromkeys(stuck, "Cancelled")}
    for label in stuck:
        pool.go(label)
        assert pool.ui(runs[label], UI_RETRY) == "ACCEPT"
    with executing(pool.options(name="eight")):
        for label in stuck:
            pool.wait_state(runs[label], "COMPLETED")

    assert [pool.flow_run(runs[label]).run_count for label in labels] == [1] * 4 + [2] * 4
    assert [len(pool.lines(label, "started")) for label in labels] == [1] * 4 + [2] * 4
    assert [len(pool.lines(label, "ended")) for label in labels] == [1] * 8
    assert not [label for label in labels if "Crashed" in pool.history(runs[label])]


def test_ui_retry_reruns_a_failed_run_beside_running_ones_and_leaves_them_alone(pool: Pool) -> None:
    """The UI's Retry of a failed run while three others run in the same executor: the same run is
    taken again and completes, its finished step comes back Cached (its body ran once), and the
    three others keep running undisturbed, then complete, each run once."""
    others = ["busy-1", "busy-2", "busy-3"]
    other_runs = [pool.start(label) for label in others]
    pool.path("retried", "fail").touch()
    retried = pool.start("retried", TWO_STEPS)

    with executing(pool.options()):
        for label in others:
            pool.wait_mark(label, "started")
        pool.wait_state(retried, "FAILED")
        pool.path("retried", "fail").unlink()
        answer = pool.ui(retried, UI_RETRY)
        again = pool.wait_state(retried, "COMPLETED")
        meanwhile = [pool.flow_run(run_id).state_name for run_id in other_runs]
        for label in others:
            pool.go(label)
        finished = [pool.wait_state(run_id, "COMPLETED") for run_id in other_runs]

    assert answer == "ACCEPT"
    assert (again.id, again.run_count) == (retried, 2)
    assert pool.lines("retried", "log") == ["prepare", "finish", "finish"]
    assert pool.lines("retried", "states") == ["Completed", "Cached"]
    assert meanwhile == ["Running"] * 3
    assert [run.run_count for run in finished] == [1] * 3
    once = ["Scheduled", "Pending", "Running", "Completed"]
    assert [pool.history(run_id) for run_id in other_runs] == [once] * 3


def test_ui_cancel_of_one_run_ends_it_cancelled_while_the_others_complete(pool: Pool) -> None:
    """The UI's Cancel of one of four runs of the same executor: that run ends Cancelled (never
    Crashed) before its flow's body ends, and the three others keep running, then complete."""
    others = ["kept-1", "kept-2", "kept-3"]
    cancelled = pool.start("cancelled")
    other_runs = [pool.start(label) for label in others]

    with executing(pool.options()):
        for label in ["cancelled", *others]:
            pool.wait_mark(label, "started")
        answer = pool.ui(cancelled, UI_CANCEL)
        ended = pool.wait_state(cancelled, "CANCELLED")
        meanwhile = [pool.flow_run(run_id).state_name for run_id in other_runs]
        for label in ["cancelled", *others]:
            pool.go(label)
        for run_id in other_runs:
            pool.wait_state(run_id, "COMPLETED")

    assert answer == "ACCEPT"
    assert ended.state.message == Stop.CANCEL.value  # type: ignore[union-attr]
    assert "Crashed" not in pool.history(cancelled)
    assert pool.lines("cancelled", "ended") == []
    assert meanwhile == ["Running"] * 3
    assert [len(pool.lines(label, "ended")) for label in others] == [1] * 3


def test_a_busy_server_at_a_runs_claim_or_start_delays_the_run_and_never_crashes_it(pool: Pool) -> None:
    """The Prefect API answers 503 (SQLite's "database is locked") once, with the client's own
    retries spent (none here; five over about a minute by default), to a run's claim (Pending), to
    marking it with the executor's name, and to the engine's Running. Each run stays or goes back
    to Scheduled and is taken again: all three complete, none Crashed, each body run once."""
    labels = ["claim", "mark", "begin"]
    runs = {label: pool.start(label) for label in labels}
    for label in labels:
        pool.go(label)

    with BusyApi(pool.api_url).running() as api:
        refusals = [
            api.refuse("POST", f"/flow_runs/{runs['claim']}/set_state", "PENDING"),
            api.refuse("PATCH", f"/flow_runs/{runs['mark']}", "infrastructure_pid"),
            api.refuse("POST", f"/flow_runs/{runs['begin']}/set_state", "RUNNING"),
        ]
        with (
            temporary_settings({PREFECT_API_URL: api.url, PREFECT_CLIENT_MAX_RETRIES: 0}),
            executing(pool.options()),
        ):
            finished = [pool.wait_state(runs[label], "COMPLETED") for label in labels]

    assert [refusal.answered for refusal in refusals] == [1, 1, 1]
    assert [run.run_count for run in finished] == [1, 1, 1]
    assert [len(pool.lines(label, "ended")) for label in labels] == [1, 1, 1]
    assert not [label for label in labels if "Crashed" in pool.history(runs[label])]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_runs_a_killed_executor_left_are_marked_crashed_when_it_starts_again(pool: Pool) -> None:
    """After a kill -9 the run it was running stays Running; the executor of the same name marks
    it Crashed when it starts again (so reconcile retries it), and leaves another executor's
    running run alone."""
    with cli_executor(pool, "killed") as (process, _):
        orphan = pool.start("orphan")
        pool.wait_mark("orphan", "started")
        process.kill()
        process.wait(WITHIN)
    assert pool.flow_run(orphan).state_name == "Running"
    elsewhere = pool.start("elsewhere")

    async def running_elsewhere(client: PrefectClient) -> None:
        await client.set_flow_run_state(elsewhere, Running(), force=True)
        await client.update_flow_run(elsewhere, infrastructure_pid="another-executor:1")

    pool.prefect(running_elsewhere)

    with executing(pool.options(name="killed")):
        crashed = pool.wait_state(orphan, "CRASHED")

    assert "killed stopped or died" in (crashed.state.message or "")  # type: ignore[union-attr]
    assert pool.flow_run(elsewhere).state_name == "Running"


def test_a_deployment_whose_flow_cannot_be_imported_does_not_stop_the_others(pool: Pool) -> None:
    """A deployment whose entrypoint names no flow (a flow removed in an upgrade): the executor
    starts anyway, that deployment's run ends Crashed saying why, and the other runs go on."""

    async def broken_run(client: PrefectClient) -> UUID:
        flow_id = await client.create_flow_from_name("executor-test-removed")
        deployment = await client.create_deployment(
            flow_id=flow_id,
            name=pool.name,
            work_pool_name=pool.name,
            entrypoint="tests.fixtures.executor:removed",
        )
        return (await client.create_flow_run_from_deployment(deployment)).id

    broken = pool.prefect(broken_run)
    pool.go("fine")
    fine = pool.start("fine")

    with executing(pool.options()):
        crashed = pool.wait_state(broken, "CRASHED")
        pool.wait_state(fine, "COMPLETED")

    assert "cannot load the flow: cannot import tests.fixtures.executor:removed" in (
        crashed.state.message or ""
    )  # type: ignore[union-attr]


def test_it_exits_for_a_restart_after_its_number_of_runs(pool: Pool) -> None:
    """With restart_after_runs=2 the executor takes two runs, lets them end, and stops with
    Outcome.RESTART (exit code 75 for its service manager); the third run waits for the next one."""
    labels = ["first", "second", "third"]
    for label in labels:
        pool.go(label)
    runs = [pool.start(label) for label in labels]
    executor = Executor(pool.options(restart_after_runs=2))

    thread = executor.run_in_thread()
    thread.join(WITHIN)

    assert not thread.is_alive(), "the executor did not end by itself"
    assert executor.error is None and executor.outcome is Outcome.RESTART
    states = sorted(pool.flow_run(run_id).state_name or "" for run_id in runs)
    assert states == ["Completed", "Completed", "Scheduled"]


def test_it_exits_for_a_restart_above_its_memory_ceiling(pool: Pool) -> None:
    """Above its memory ceiling the executor finishes the run it has, takes no other, and stops
    with Outcome.RESTART."""
    for label in ("first", "second"):
        pool.go(label)
    runs = [pool.start(label) for label in ("first", "second")]
    executor = Executor(pool.options(limit=1, restart_above_bytes=1))

    thread = executor.run_in_thread()
    thread.join(WITHIN)

    assert not thread.is_alive(), "the executor did not end by itself"
    assert executor.error is None and executor.outcome is Outcome.RESTART
    assert "memory" in executor.restart_reason
    assert sorted(pool.flow_run(run_id).state_name or "" for run_id in runs) == ["Completed", "Scheduled"]


def test_prefect_yaml_deployments_load_into_the_executor(
    registered_deployments: Registration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every deployment prefect.yaml registers is imported by the executor from its entrypoint,
    after prefect.yaml's pull step changed into the project folder."""
    monkeypatch.chdir(project_dir().parent)

    async def load(client: PrefectClient) -> list[str]:
        return sorted(flow.name for flow in (await load_pool_flows(client, "qs-promoter")).values())

    names = run(with_prefect(registered_deployments.api_url, load))

    assert Path.cwd() == project_dir()
    assert names == [
        "alert-on-publish",
        "handle-app-change",
        "keep-subscriptions",
        "plan-promotion",
        "promote-app",
        "reconcile",
        "rollback-app",
    ]


def test_an_approval_is_promoted_by_the_executor(
    stage: Stage, pool: Pool, registered_deployments: Registration
) -> None:
    """End to end: prefect.yaml's handle-app-change deployment (its entrypoint and pull step, in a
    pool of this test's own) runs an approval in the executor, and the app lands on the target."""
    app = run(stage.publish("Executor Sales"))
    run(stage.approve(app.id, ["test - Overwrite"], ["Everyone"]))

    async def change_run(client: PrefectClient) -> UUID:
        original = await client.read_deployment_by_name(HANDLE_CHANGE)
        deployment = await client.create_deployment(
            flow_id=original.flow_id,
            name=pool.name,
            work_pool_name=pool.name,
            entrypoint=original.entrypoint,
            pull_steps=original.pull_steps,
            parameter_openapi_schema=original.parameter_openapi_schema,
        )
        parameters = {"app_id": str(app.id), "trigger": "updated"}
        return (await client.create_flow_run_from_deployment(deployment, parameters=parameters)).id

    with executing(pool.options()):
        change = pool.prefect(change_run)
        pool.wait_state(change, "COMPLETED")

    everyone = stage.world.target_streams["test"]["Everyone"]
    promoted = [(a.name, a.stream.id if a.stream else None) for a in run(stage.apps("test"))]
    assert promoted == [("Executor Sales", everyone)]
