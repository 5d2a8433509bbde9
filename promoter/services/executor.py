"""`qs-promoter executor`: run the work pool's flow runs in this process, several at once.

The process worker starts two Python processes for every flow run; the executor runs each run as
a task in its own event loop instead, with the calls a worker makes (Prefect 3.9.1):

- due runs come from ``get_scheduled_flow_runs_for_work_pool`` (the server applies the pool's
  and queues' concurrency limits), asked for when the server announces a run Scheduled or
  AwaitingRetry in the pool (its event stream) and every ``poll_seconds`` besides;
- each is claimed with ``propose_state(Pending())``, as a worker does (one claimer wins), marked
  with this executor's name (``infrastructure_pid``), and run by Prefect's async flow engine:
  Retry in the UI schedules the same run again and finished steps come back Cached. A run whose
  claim or start fails on an API error (SQLite's 503 "database is locked" after the client's own
  retries) is not Crashed: nothing of it ran, so it stays or goes back to Scheduled and is taken
  again;
- Cancel in the UI (Cancelling) cancels that run's task alone, and the run ends Cancelled. The
  engine would take a cancelled task for a crash unless a process-wide flag says otherwise (a
  flag that would speak for every run), so ``RunEngine`` is told by the executor which run it
  cancelled, and why;
- a run suspended through the API (Suspended) is told so by the executor, from the same event
  stream and poll, and stops at its next step as under a worker; Prefect's engine would start an
  observer for every run instead (a thread with its own event loop, API client and event stream
  subscription, which the run waits for before it starts: measured ~8 % of the executor's CPU);
- it sends worker heartbeats (the pool shows it online); flow runs send their own heartbeats,
  so the zombie-run automation still crashes a run whose executor died;
- the pool's Scheduled runs that Prefect named itself (the scheduler's ticks, created hours
  ahead, and Custom runs for later: ``malachite-mongrel``) get their names by action and app
  (``first_run_name``) at start and then every ``naming_seconds`` (a minute), long before they
  start: one read of the pool's Scheduled runs, and one update for each run that needs a name;
- on start, runs that an earlier executor of the same name left Running or Pending are marked
  Crashed (reconcile retries them on its next round, not after the zombie timeout), Cancelling
  ones Cancelled;
- SIGINT/SIGTERM (Ctrl-Break on Windows) stop it by draining: no new claims, running runs get
  ``stop_grace`` seconds to finish, the rest are cancelled (Cancelled, so reconcile or the UI's
  Retry runs them again); a second signal skips the wait. The engine's own SIGTERM handler is
  never installed (the loop runs outside the main thread), so a signal never crashes a run;
- it stops taking runs after ``restart_after_runs`` runs or above ``restart_above_bytes`` of
  memory, and ends with Outcome.RESTART once the last one ended (the CLI exits with
  RESTART_EXIT_CODE), for its service manager (or `up`) to start a fresh one: slow leaks never
  accumulate. Its default thread pool has ``threads`` threads, for the runs' ``to_thread`` file I/O.

What differs from the process worker, for the docs: the deployments' pull steps run once, at
start (one working folder for all deployments), and the flows are imported once, from the
deployments' entrypoints: a code change needs a restart (a deployment registered later, or one
whose import failed at start, is imported at its first run, from the same folder). Per-run
``env`` job variables and ``os.chdir`` do not apply; ``log_prints`` is turned off (it replaces
``print`` for the whole process); the flows must be ``async def``. A run that blocks the event
loop slows every run of the executor, and a crash of the executor stops all of its runs (they
are marked Crashed at its next start, or by the zombie-run automation). The flows themselves do
not know which executor runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

import anyio
import httpx
from prefect._flow_run_suspension import (
    FlowRunSuspensionRequest,
    is_suspended_flow_run_state,
    mark_flow_run_suspension_requested,
    register_flow_run_suspension_request,
)
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import AsyncClientContext
from prefect.deployments.steps.core import run_steps
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flow_engine import AsyncFlowRunEngine
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.states import Cancelled, Cancelling, Crashed, Pending, Scheduled, State
from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs
from prefect.utilities.engine import propose_state

from promoter.errors import PromoterError
from promoter.prefect_api import names_to_give
from promoter.services.orchestration import active_runs

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 8  # runs at once when neither --limit nor prefect.worker_limit says
POLL_SECONDS = 2.0  # the events bring new runs at once; the poll catches what they missed
WORKER_HEARTBEAT_SECONDS = 30.0
NAMING_SECONDS = 60.0  # one read of the Scheduled runs a minute: cheap on SQLite, soon enough for the UI
NAMING_LIMIT = 200  # the soonest; the scheduler keeps ~100 runs ahead per schedule
NAMING_TIMEOUT = 10.0  # a late rename could undo the name a run gave itself once started
STOP_GRACE_SECONDS = 30.0
CANCEL_WAIT_SECONDS = 15.0  # for cancelled runs to record how they ended
THREADS = 32  # the loop's default thread pool: asyncio.to_thread file I/O of several runs at once
RESTART_AFTER_RUNS = 5000
RESTART_ABOVE_BYTES = 512 * 1024 * 1024
RESTART_EXIT_CODE = 75  # "temporary failure": start me again (systemd Restart=, NSSM's default)
CLOCK_SKEW = timedelta(seconds=1)  # a run due this soon by our clock is due now by the server's
LISTEN_TIMEOUT = 10.0  # for the event stream at start; without it the polls still find every run
EVENTS_RETRY_SECONDS = 5.0
START_AGAIN_AFTER = timedelta(seconds=2)  # a run whose start failed: not at once, the server is busy

WAKE_EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry")
CANCEL_EVENT = "prefect.flow-run.Cancelling"
SUSPEND_EVENT = "prefect.flow-run.Suspended"


class ExecutorError(PromoterError):
    """The executor cannot start: the pool is missing, or a deployment's flow cannot be loaded."""


class Stop(Enum):
    """Why the executor cancels a run; the value is the message the run ends with."""

    CANCEL = "Cancelled from the Prefect UI (or API)."
    SHUTDOWN = "The executor stopped before this run ended; Retry in the UI runs it again."


class Outcome(Enum):
    STOPPED = "stopped"  # by a signal or request_stop()
    RESTART = "restart"  # run count or memory reached: start a fresh executor


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    pool: str
    name: str
    limit: int = DEFAULT_LIMIT
    stop_grace: float = STOP_GRACE_SECONDS
    restart_after_runs: int | None = RESTART_AFTER_RUNS
    restart_above_bytes: int | None = RESTART_ABOVE_BYTES
    poll_seconds: float = POLL_SECONDS
    naming_seconds: float = NAMING_SECONDS
    threads: int = THREADS

    @property
    def marker(self) -> str:
        """What this executor writes into the infrastructure_pid of the runs it takes."""
        return f"{self.name}:{os.getpid()}"

    def owns(self, run: FlowRun) -> bool:
        """The run was taken by an executor of this name (this one, or an earlier process)."""
        return (run.infrastructure_pid or "").startswith(f"{self.name}:")


@dataclass(eq=False)
class ActiveRun:
    """A run this executor has taken: claimed, then executing, until it ends."""

    flow_run: FlowRun
    task: asyncio.Task[None] | None = None  # claim, run, record: ends when the run is over
    execution: asyncio.Task[State | None] | None = None  # the engine; cancelled to stop the run
    stop: Stop | None = None

    def cancel(self, why: Stop) -> None:
        if self.stop is None:
            self.stop = why
        if self.execution is not None:
            self.execution.cancel()


@dataclass
class RunEngine(AsyncFlowRunEngine[Any, Any]):
    """Prefect's async engine, told by the executor which run it cancelled and why.

    Prefect reads a cancellation from a process-wide flag: without it a cancelled run is reported
    Crashed (and on_crashed hooks fire) before anything could mark it Cancelled.
    """

    stop_reason: Callable[[], Stop | None] = lambda: None

    async def handle_crash(self, exc: BaseException) -> None:
        reason = self.stop_reason()
        if reason is None or not isinstance(exc, asyncio.CancelledError):
            await super().handle_crash(exc)
            return
        with anyio.CancelScope(shield=True):  # the state must reach the server
            self.logger.info(reason.value)
            await self.set_state(Cancelling(message=reason.value), force=True)
            await self.set_state(Cancelled(message=reason.value), force=True)

    @contextlib.contextmanager
    def setup_flow_run_suspension_request(self) -> Iterator[FlowRunSuspensionRequest]:
        """As Prefect's, without the observer it starts for each run: the executor watches for
        Suspended runs once, for all of its runs (``Executor._follow_requests``)."""
        assert self.flow_run is not None
        request = self._get_flow_run_suspension_request()
        with register_flow_run_suspension_request(self.flow_run.id, request):
            request.raise_if_requested()
            yield request


class Executor:
    """Takes the runs of one work pool and runs them in its event loop; ``run()`` until stopped."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.active: dict[UUID, ActiveRun] = {}
        self.flows: dict[UUID, Flow[..., Any]] = {}  # by deployment id
        self.taken = 0  # runs claimed since start
        self.restart_reason = ""
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()  # listening to the server's events, and polled once
        self._stops = 0  # stop requests: the first drains, the second cancels at once
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # look for due runs now
        self._changed = asyncio.Event()  # a run ended, or a stop was requested
        self._check_requests = False  # a run of ours may have been set Cancelling or Suspended
        self._listening = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    # -- control, from any thread ----------------------------------------------------------

    def request_stop(self) -> None:
        """Drain (the first call) or stop at once (the second); safe from a signal handler."""
        with self._lock:
            self._stops += 1
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        self._wake.set()
        self._changed.set()

    @property
    def stopping(self) -> bool:
        return self._stops > 0

    def run_in_thread(self) -> threading.Thread:
        """Run in a new thread (keeps Prefect's per-run SIGTERM handler out: it needs the main
        thread); ``outcome`` or ``error`` is set when the thread ends."""
        context = contextvars.copy_context()  # the caller's Prefect settings (API URL) go along
        thread = threading.Thread(
            target=context.run, args=(self._run_to_end,), name="qs-promoter-executor", daemon=True
        )
        thread.start()
        return thread

    def _run_to_end(self) -> None:
        try:
            self.outcome = asyncio.run(self.run())
        except BaseException as exc:  # reported by whoever started the thread
            self.error = exc

    # -- the life of the executor ----------------------------------------------------------

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(self.options.threads, thread_name_prefix="qsp-io"))
        with self._lock:
            self._loop = loop
        async with AsyncClientContext() as context:  # one API client, shared by every run's engine
            client = context.client
            try:
                pool = await client.read_work_pool(self.options.pool)
            except ObjectNotFound:
                raise ExecutorError(
                    f"work pool {self.options.pool!r} not found: register the deployments first "
                    "(qs-promoter up --register-only)"
                ) from None
            self.flows = await load_pool_flows(client, self.options.pool)
            await self._end_leftovers(client)
            await self._heartbeat(client)
            self._spawn(self._heartbeats(client))
            self._spawn(self._name_runs_every_minute(client))
            self._spawn(self._watch_events(pool.id))
            # Listen before the first poll: a run created in between would wait for the next one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), LISTEN_TIMEOUT)
            log.info(
                "executor %s: taking runs of work pool %r, up to %d at once",
                self.options.name,
                self.options.pool,
                self.options.limit,
            )
            try:
                await self._serve(client)
            finally:  # also after an error of our own: runs still get their grace period
                await self._drain(client)
                for task in self._background:
                    task.cancel()
                await asyncio.gather(*self._background, return_exceptions=True)
        if self.stopping:
            return Outcome.STOPPED
        log.info("executor %s: restarting (%s)", self.options.name, self.restart_reason)
        return Outcome.RESTART

    async def _flow_for(self, client: PrefectClient, run: FlowRun) -> Flow[..., Any]:
        """The run's flow; a deployment registered after the start is imported now, once."""
        if run.deployment_id is None:
            raise ExecutorError(f"flow run {run.name} has no deployment")
        if run.deployment_id not in self.flows:
            deployment = await client.read_deployment(run.deployment_id)
            self.flows[run.deployment_id] = load_flow(deployment.entrypoint, deployment.name)
        return self.flows[run.deployment_id]

    async def _end_leftovers(self, client: PrefectClient) -> None:
        """Runs an earlier executor of this name did not finish: nobody runs them now."""
        for run in await active_runs(client, self.options.pool):
            if not self.options.owns(run):
                continue
            message = f"executor {self.options.name} stopped or died before this run ended"
            if run.state_type == StateType.CANCELLING:
                state: State = Cancelled(message=message)
            else:
                state = Crashed(message=message + "; reconcile (or Retry in the UI) runs it again")
            await client.set_flow_run_state(run.id, state, force=True)
            log.warning("flow run %s left %s: marked %s", run.name, run.state_name, state.name)

    async def _serve(self, client: PrefectClient) -> None:
        """Take due runs until a stop is requested, or a restart is due and the last run ended."""
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not self.stopping and not (self.restart_reason and not self.active):
            self._wake.clear()
            tick = loop.time() >= next_poll
            if tick:
                next_poll = loop.time() + self.options.poll_seconds
            wake_at = next_poll
            try:
                if tick or self._check_requests:
                    await self._follow_requests(client)
                due_in = await self._take_due(client)
                if due_in is not None:
                    wake_at = min(wake_at, loop.time() + due_in)
            except Exception as exc:  # the server may be restarting: keep polling
                log.warning("looking for flow runs failed: %s", exc)
            self.ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))

    async def _take_due(self, client: PrefectClient) -> float | None:
        """Claim the due runs there is room for; returns seconds until the next one is due."""
        free = self.options.limit - len(self.active)
        if free <= 0 or self.restart_reason:
            return None
        now = datetime.now(UTC)
        found = await client.get_scheduled_flow_runs_for_work_pool(
            self.options.pool, scheduled_before=now + timedelta(seconds=self.options.poll_seconds)
        )
        runs = sorted((f.flow_run for f in found), key=lambda r: r.next_scheduled_start_time or now)
        due_in: float | None = None
        for run in runs:
            if run.id in self.active:
                continue
            due = run.next_scheduled_start_time or now
            if due - now > CLOCK_SKEW:
                wait = (due - now - CLOCK_SKEW).total_seconds()
                due_in = wait if due_in is None else min(due_in, wait)
                continue
            if free == 0 or self.taken_enough:
                break
            free -= 1
            self.taken += 1
            active = ActiveRun(run)
            self.active[run.id] = active
            active.task = asyncio.create_task(self._take(client, active), name=f"flow run {run.name}")
        return due_in

    async def _take(self, client: PrefectClient, active: ActiveRun) -> None:
        """Claim one run, run it, and tell how it ended; never raises."""
        run = active.flow_run
        try:
            if not await self._claim(client, run):
                self.taken -= 1
                return
            try:
                flow = await self._flow_for(client, run)
            except (ExecutorError, ObjectNotFound) as exc:
                await client.set_flow_run_state(
                    run.id, Crashed(message=f"cannot load the flow: {exc}"), force=True
                )
                log.error("flow run %s: cannot load its flow: %s", run.name, exc)
                return
            except Exception as exc:  # reading its deployment failed: the server is busy
                self.taken -= 1
                await self._start_again(client, run, exc)
                return
            if active.stop is not None:  # cancelled or stopping while it was being claimed
                await client.set_flow_run_state(run.id, Cancelled(message=active.stop.value), force=True)
                return
            active.execution = asyncio.create_task(self._execute(active, flow))
            state = await self._outcome(client, active)
            log.info("flow run %s (%s): %s", run.name, flow.name, state.name if state else "ended")
        except Exception as exc:
            log.error("flow run %s: %s", run.name, exc, exc_info=exc)
        finally:
            del self.active[run.id]
            self._after_run()

    async def _claim(self, client: PrefectClient, run: FlowRun) -> bool:
        """Pending, as a worker claims a run: only one claimer wins."""
        try:
            state = await propose_state(client, Pending(), flow_run_id=run.id)
        except (Abort, ObjectNotFound):
            return False
        except Exception as exc:  # 503 or unreachable: still Scheduled, the next look takes it
            log.warning("flow run %s: claiming it failed (%s); it is taken at the next look", run.name, exc)
            return False
        if not state.is_pending():
            return False
        run.state = state
        try:
            await client.update_flow_run(run.id, infrastructure_pid=self.options.marker)
        except Exception as exc:  # left Pending, no one would ever take it
            await self._start_again(client, run, exc)
            return False
        return True

    async def _start_again(self, client: PrefectClient, run: FlowRun, exc: Exception) -> None:
        """A run claimed (Pending) whose start failed on an API error, before any of it ran:
        Scheduled again, for this executor's next look (or another's), instead of Crashed."""
        log.warning("flow run %s: could not start it (%s); scheduled again", run.name, exc)
        again = Scheduled(
            scheduled_time=datetime.now(UTC) + START_AGAIN_AFTER,
            message=f"the executor could not start it ({type(exc).__name__}); it is taken again",
        )
        await client.set_flow_run_state(run.id, again, force=True)

    async def _execute(self, active: ActiveRun, flow: Flow[..., Any]) -> State | None:
        """Prefect's run_flow_async, with our engine."""
        run = active.flow_run
        args, kwargs = parameters_to_args_kwargs(flow.fn, run.parameters)
        engine = RunEngine(
            flow=flow,
            flow_run=run,
            parameters=get_call_parameters(flow.fn, args, kwargs),
            stop_reason=lambda: active.stop,
        )
        async with engine.start():
            while engine.is_running():
                async with engine.run_context():
                    await engine.call_flow_fn()
        return engine.state

    async def _outcome(self, client: PrefectClient, active: ActiveRun) -> State | None:
        """Wait for the engine; a run it could not end (an error outside the flow) is marked here."""
        assert active.execution is not None
        run = active.flow_run
        try:
            return await active.execution
        except asyncio.CancelledError:
            # RunEngine recorded Cancelled, unless the cancel came before its bookkeeping began.
            state: State = Cancelled(message=(active.stop or Stop.SHUTDOWN).value)
        except Abort as exc:  # the server took the run away (e.g. cancelled before it started)
            log.info("flow run %s: aborted by the server: %s", run.name, exc)
            return None
        except Exception as exc:
            current = (await client.read_flow_run(run.id)).state
            if current is not None and current.is_pending():  # the engine failed before Running
                self.taken -= 1
                await self._start_again(client, run, exc)
                return None
            state = Crashed(message=f"the executor could not run it: {type(exc).__name__}: {exc}")
        current = (await client.read_flow_run(run.id)).state
        if current is not None and current.is_final():
            return current
        await client.set_flow_run_state(run.id, state, force=True)
        return state

    @property
    def taken_enough(self) -> bool:
        """As many runs taken as one executor process should run."""
        limit = self.options.restart_after_runs
        return limit is not None and self.taken >= limit

    def _after_run(self) -> None:
        """A run ended: room for another, and time to check whether a restart is due."""
        if not self.restart_reason and self.taken_enough:
            self.restart_reason = f"{self.taken} runs taken"
        memory, ceiling = resident_bytes(), self.options.restart_above_bytes
        if not self.restart_reason and memory and ceiling and memory > ceiling:
            self.restart_reason = f"memory {memory // 2**20} MB above {ceiling // 2**20} MB"
        self._wake.set()
        self._changed.set()

    async def _follow_requests(self, client: PrefectClient) -> None:
        """Cancel the runs of ours that someone set to Cancelling, and tell those set to Suspended
        to stop at their next step (the state is read: events may be old)."""
        self._check_requests = False
        ids = [run_id for run_id, active in self.active.items() if active.stop is None]
        if not ids:
            return
        asked = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.CANCELLING, StateType.PAUSED])
                ),
            )
        )
        for run in asked:
            active = self.active.get(run.id)
            if active is None:
                continue
            if run.state_type == StateType.CANCELLING:
                log.info("flow run %s: cancelling, as asked", run.name)
                active.cancel(Stop.CANCEL)
            elif run.state is not None and is_suspended_flow_run_state(run.state):
                mark_flow_run_suspension_requested(run.id, run.state)

    async def _drain(self, client: PrefectClient) -> None:
        """No new claims; running runs get stop_grace seconds, then they are cancelled."""
        if not self.active:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.stop_grace
        if self.stopping:
            log.info(
                "stopping: waiting up to %.0f s for %d flow run(s) to finish",
                self.options.stop_grace,
                len(self.active),
            )
        while self.active and self._stops < 2 and loop.time() < deadline:
            self._changed.clear()
            if self._check_requests:
                with contextlib.suppress(Exception):
                    await self._follow_requests(client)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        tasks = [active.task for active in self.active.values() if active.task is not None]
        for active in list(self.active.values()):
            log.warning("flow run %s: cancelled, the executor is stopping", active.flow_run.name)
            active.cancel(Stop.SHUTDOWN)
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_SECONDS)

    # -- background: server events, worker heartbeats and run names ------------------------

    def _spawn(self, coroutine: Any) -> None:
        self._background.add(asyncio.create_task(coroutine))

    async def _watch_events(self, pool_id: UUID) -> None:
        """Wake up when the server schedules a run in the pool; check at once on a Cancelling or
        a Suspended run of ours."""
        while True:
            event_filter = EventFilter(
                event=EventNameFilter(name=[*WAKE_EVENTS, CANCEL_EVENT, SUSPEND_EVENT]),
                any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool_id}"]),
            )
            try:
                async with get_events_subscriber(filter=event_filter, reconnection_attempts=2) as events:
                    self._listening.set()
                    async for event in events:
                        if event.event in (CANCEL_EVENT, SUSPEND_EVENT):
                            run_id = event.resource.id.removeprefix("prefect.flow-run.")
                            if run_id in {str(known) for known in self.active}:
                                self._check_requests = True
                                self._changed.set()
                        self._wake.set()
            except Exception as exc:  # the server restarts, or a proxy refuses websockets: polls go on
                log.info("the server's event stream is unavailable (%s); polling", exc)
            await asyncio.sleep(EVENTS_RETRY_SECONDS)

    async def _heartbeats(self, client: PrefectClient) -> None:
        while True:
            await asyncio.sleep(WORKER_HEARTBEAT_SECONDS)
            await self._heartbeat(client)

    async def _heartbeat(self, client: PrefectClient) -> None:
        try:
            await client.send_worker_heartbeat(
                self.options.pool, self.options.name, heartbeat_interval_seconds=WORKER_HEARTBEAT_SECONDS
            )
        except Exception as exc:
            log.warning("worker heartbeat failed: %s", exc)

    async def _name_runs_every_minute(self, client: PrefectClient) -> None:
        while True:
            await self._name_scheduled_runs(client)
            await asyncio.sleep(self.options.naming_seconds)

    async def _name_scheduled_runs(self, client: PrefectClient) -> None:
        """Name the pool's Scheduled runs that Prefect named itself; never raises."""
        try:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.options.pool])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=NAMING_LIMIT,
            )
        except Exception as exc:  # the server restarts or is busy: the next round names them
            log.warning("reading the scheduled flow runs to name them failed: %s", exc)
            return
        flows = {deployment: flow.name for deployment, flow in self.flows.items()}
        for run_id, name in names_to_give(runs, flows).items():
            if run_id in self.active:  # being taken: its flow names it as it starts
                continue
            try:
                await asyncio.wait_for(client.update_flow_run(run_id, name=name), NAMING_TIMEOUT)
            except Exception as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 404:
                    continue  # deleted since it was read
                log.debug("naming the scheduled flow runs stopped at %s: %s", run_id, exc)
                return  # the server is busy or away: the rest wait for the next round


async def load_pool_flows(client: PrefectClient, pool: str) -> dict[UUID, Flow[..., Any]]:
    """The flow of each deployment of ``pool``, by deployment id: the deployments' pull steps run
    once (prefect.yaml's changes into the project folder), then each entrypoint is imported."""
    deployments = await client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    )
    folders: set[str] = set()
    done: list[list[dict[str, Any]]] = []
    for deployment in deployments:
        if deployment.pull_steps and deployment.pull_steps not in done:
            done.append(deployment.pull_steps)
            output = await run_steps(deployment.pull_steps, print_function=log.debug)
            folders.add(str(output.get("directory") or os.getcwd()))
    if len(folders) > 1:
        raise ExecutorError(
            f"the deployments of work pool {pool!r} change into different folders "
            f"({', '.join(sorted(folders))}); one executor runs in one folder"
        )
    flows: dict[UUID, Flow[..., Any]] = {}
    for deployment in deployments:
        try:
            flows[deployment.id] = load_flow(deployment.entrypoint, deployment.name)
        except ExecutorError as exc:  # one broken deployment must not stop all the others
            log.error("%s; its runs will end Crashed", exc)
    log.info("flows loaded from %s: %s", os.getcwd(), ", ".join(sorted({f.name for f in flows.values()})))
    return flows


def load_flow(entrypoint: str | None, deployment: str) -> Flow[..., Any]:
    """Import a deployment's flow from its entrypoint (relative to the working folder)."""
    if not entrypoint:
        raise ExecutorError(f"deployment {deployment!r} has no entrypoint")
    try:
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except Exception as exc:
        raise ExecutorError(f"cannot import {entrypoint} (deployment {deployment!r}): {exc}") from exc
    if not flow.isasync or flow.isgenerator:
        raise ExecutorError(f"{entrypoint}: the executor runs `async def` flows only")
    if flow.log_prints:
        log.warning(
            "%s: log_prints is off in the executor (it would redirect print for every run)", entrypoint
        )
        flow = flow.with_options(log_prints=False)
    return flow


def serve(executor: Executor, *, hard_stop_after: float = 60.0) -> Outcome:
    """Run ``executor`` until it stops; call from the main thread, with signals routed to
    ``executor.request_stop`` (timed joins keep them deliverable, also on Windows).

    A run that ignores its cancellation (a blocking call) cannot hold the process for ever: once a
    stop was requested, ``stop_grace + hard_stop_after`` seconds end it with exit code 1.
    """
    thread = executor.run_in_thread()
    deadline: float | None = None
    while thread.is_alive():
        thread.join(0.5)
        if executor.stopping and deadline is None:
            deadline = time.monotonic() + executor.options.stop_grace + hard_stop_after
        if deadline is not None and time.monotonic() > deadline and thread.is_alive():
            log.error("executor did not stop in time; exiting with runs still active")
            logging.shutdown()
            os._exit(1)
    if executor.error is not None:
        raise executor.error
    assert executor.outcome is not None
    return executor.outcome


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux, Windows); None where it cannot be read."""
    if sys.platform == "win32":
        return _windows_working_set()
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _windows_working_set() -> int | None:
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        ]

    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.POINTER(Counters), wintypes.DWORD]
    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    if not kernel32.K32GetProcessMemoryInfo(
        kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb
    ):
        return None
    return int(counters.WorkingSetSize)
