"""`qs-promoter up`: the Prefect server, work pool, deployments, zombie-run automation, executor and webhook.

``Stack.start()`` starts what is missing, in order, each as a child process in its own process
group (``promoter.child_processes``), and waits until each answers; ``Stack.stop()`` stops what it
started, the executor first. The flow runs are run by ``qs-promoter executor`` (all runs in one
long-lived process), or by Prefect's process worker (a process per run) with
``StackOptions.executor="process"``: the same pool and deployments serve both.

Deployments are registered by running ``prefect --no-prompt deploy --all`` on ``prefect.yaml``:
the same file an admin deploys by hand, so the names, schedules and concurrency limits cannot
drift apart. Prefect is imported only inside the functions that talk
to its API (the core stays free of it, and the CLI starts fast).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import httpx

import promoter
from promoter.child_processes import (
    Child,
    python_command,
    restore_interrupt,
    run_command,
    start_child,
    wait_for,
)
from promoter.errors import PromoterError
from promoter.prefect_api import DEPLOYMENTS, KEEP_SUBSCRIPTIONS, UP_TAGS, start_run, with_prefect
from promoter.services.orchestration import (
    HEARTBEAT_SECONDS,
    ZOMBIE_AFTER,
    ZOMBIE_AUTOMATION,
    active_runs,
    cancel_maintenance_runs,
    crash_active_runs,
    deployment_names,
    ensure_work_pool,
    ensure_zombie_automation,
    retire_deployments,
    worker_seen,
)
from promoter.settings import Settings
from promoter.webhook.address import WebhookAddress, local_address, unreachable_reason

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

T = TypeVar("T")

PROJECT_FILE = "prefect.yaml"
WORK_POOL = "qs-promoter"  # the pool prefect.yaml deploys to
# Flow runs older than this are removed from the Prefect database (a 60 s schedule makes 1,440 a day).
RETENTION_SECONDS = 30 * 24 * 3600
# The longest a run waits before asking again for a concurrency slot it was denied (Prefect 3.9.1's
# ServerConcurrencySettings.maximum_concurrency_slot_wait_seconds); our slots are held for seconds.
SLOT_WAIT_SETTING = "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"
SLOT_WAIT_SECONDS = 1.0
# Concurrency-slot leases on disk (under PREFECT_HOME), so they outlive a server restart.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
# In the state folder while `up` runs: which Prefect server it uses (doctor reads it).
UP_RECORD = "up.json"
RESULTS_STORAGE = "PREFECT_RESULTS_LOCAL_STORAGE_PATH"

STALE_MESSAGE = "Found running when `qs-promoter up` started: the previous stop did not end it."
STOPPING_MESSAGE = "qs-promoter up is stopping; the next scheduled run does this again."
STOPPED_MESSAGE = "`qs-promoter up` stopped the executor before this run ended; retry it from the UI."

SERVER_START_TIMEOUT = 180.0  # a fresh SQLite database runs every migration: 10-15 s idle, more when busy
DEPLOY_TIMEOUT = 180.0
WORKER_START_TIMEOUT = 90.0
WEBHOOK_START_TIMEOUT = 60.0
WORKER_STOP_GRACE = 30.0


ExecutorKind = Literal["in-process", "process"]
IN_PROCESS: ExecutorKind = "in-process"  # `qs-promoter executor`: every run in one process
PROCESS: ExecutorKind = "process"  # `prefect worker start --type process`: a process per run
# The child that runs the flow runs, and the start of another one's name (as on a second machine).
WORKER_CHILD: dict[ExecutorKind, str] = {IN_PROCESS: "executor", PROCESS: "worker"}


def is_worker(child: Child) -> bool:
    """The child runs flow runs: an executor or a process worker."""
    return any(child.name == n or child.name.startswith(f"{n}-") for n in WORKER_CHILD.values())


class StackError(PromoterError):
    """A part of the stack could not be started; the message says which and why."""


class Interrupted(PromoterError):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


@dataclass(frozen=True, slots=True)
class StackOptions:
    """Where the stack keeps its state and how it reaches Prefect (absolute paths)."""

    config: Path
    state_dir: Path
    project_dir: Path
    prefect_host: str = "127.0.0.1"
    prefect_port: int = 4200
    api_url: str | None = None  # an existing Prefect server (PREFECT_API_URL): none is started
    reuse_running_server: bool = True  # a Prefect server already answering on host:port is used
    executor: ExecutorKind = IN_PROCESS  # what runs the flow runs
    worker_query_seconds: float = 1.0  # the process worker's poll (the executor is woken by events)
    # Tests: the executor retries without waiting (promoter.tasks.retries.set_testing). A process
    # worker's runs are Prefect's processes, which it cannot reach: they wait as in production.
    instant_retries: bool = False

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def record_file(self) -> Path:
        return self.state_dir / UP_RECORD


@dataclass(frozen=True, slots=True)
class UpRecord:
    """What a running `qs-promoter up` wrote into its state folder: its Prefect server and state."""

    api_url: str
    started_server: bool  # False: a server that was already running, or PREFECT_API_URL
    pid: int
    config: str
    results: str  # where its executor keeps Prefect's persisted task results

    @classmethod
    def read(cls, state_dir: Path) -> UpRecord | None:
        """The record in ``state_dir``, or None when there is none (or it cannot be read)."""
        try:
            data = json.loads((state_dir / UP_RECORD).read_text(encoding="utf-8"))
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError, KeyError):
            return None


@dataclass
class Stack:
    """The running parts of one installation; ``start()``, then ``stop()`` (also after a failed start)."""

    settings: Settings
    options: StackOptions
    echo: Callable[[str], None] = print
    stop_requested: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)
    api_url: str = ""
    owns_server: bool = False  # we started the Prefect server: its flow runs are ours
    webhook_problem: str = ""  # why the last webhook health check failed
    wrote_record: bool = False  # the state folder's up.json is ours, removed on stop
    # How each executor/worker child was started (name, environment): started again the same way.
    worker_starts: dict[int, tuple[str | None, Mapping[str, str] | None]] = field(default_factory=dict)

    # -- what an admin is told -----------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @functools.cached_property
    def webhook_address(self) -> WebhookAddress:
        """Where this machine reaches the webhook, and how its certificate is checked (HTTPS)."""
        return local_address(self.settings.webhook)

    @property
    def webhook_local_url(self) -> str:
        """Where this machine reaches the webhook (a wildcard bind is reached on loopback)."""
        return self.webhook_address.base_url

    def environment(self) -> dict[str, str]:
        """The environment every child gets: our Prefect home and API, the settings file, UTF-8."""
        env = dict(os.environ)
        if env.get(RESULTS_STORAGE):  # children change folders: a relative path would move with them
            env[RESULTS_STORAGE] = os.path.abspath(env[RESULTS_STORAGE])
        env.update(
            {
                "PREFECT_HOME": str(self.options.prefect_home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "QSP_CONFIG": str(self.options.config),
                "QSP_HOME": str(self.options.project_dir),
                # Windows code pages otherwise break Prefect's subprocess output (prefect #15330).
                "PYTHONIOENCODING": "UTF-8",
                "PYTHONUTF8": "1",
            }
        )
        return env

    def server_environment(self) -> dict[str, str]:
        """The environment of the Prefect server this stack starts (also when it is started again)."""
        env = self.environment()
        env.update(
            {
                "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
                "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(RETENTION_SECONDS),
                # Leases kept in memory are lost when the server restarts, and the slots they held
                # (a qsp-app-* lock, the keeper's limit of 1) are then never given back.
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
                # A run denied a slot (its app's lock, a site's limit) is told to ask again after
                # the limit's average hold times the queue, up to 30 s by default: in a burst the
                # slots stood free while the waiting runs slept (100 approvals: 437 s, CPU idle).
                SLOT_WAIT_SETTING: f"{SLOT_WAIT_SECONDS:g}",
            }
        )
        env.pop("PREFECT_API_URL")  # the server must not think it is a client of another one
        return env

    # -- start -----------------------------------------------------------------------------

    def start(self, *, register_only: bool = False) -> None:
        """Start what is missing; on any failure stop what was started and raise StackError."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            restore_interrupt()  # an ignored SIGINT would be inherited by the executor
        try:
            self._start_server()
            self._write_record()
            self._check_interrupt()
            self._ensure_work_pool()
            self._register_deployments()
            self._ensure_zombie_automation()
            if register_only:
                return
            self._check_interrupt()
            self.start_worker()
            self._check_interrupt()
            self._start_webhook()
            self._start_keeper()
        except BaseException:
            self.stop()
            raise

    def _check_interrupt(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted("stopped while starting")

    def _start_server(self) -> None:
        if self.options.api_url:
            self.api_url = self.options.api_url.rstrip("/")
            if not self._wait_healthy(30.0):
                raise StackError(f"Prefect API {self.api_url} (PREFECT_API_URL) does not answer /health")
            self.echo(f"Prefect server: using {self.ui_url} (PREFECT_API_URL)")
            return
        host, port = self.options.prefect_host, self.options.prefect_port
        self.api_url = f"http://{url_host(host)}:{port}/api"
        if self.options.reuse_running_server and self._wait_healthy(0.0):
            self.echo(f"Prefect server: already running at {self.ui_url}")
            return
        if not port_free(host, port):
            raise StackError(
                f"port {port} on {host} is taken by something that is not a Prefect server; "
                "stop it, or choose another port with --prefect-port"
            )
        env = self.server_environment()
        self.options.prefect_home.mkdir(parents=True, exist_ok=True)
        command = python_command(
            "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"
        )
        self.echo(f"Prefect server: starting at {self.ui_url} (database in {self.options.prefect_home})")
        child = self._spawn("prefect-server", command, env)
        began = time.monotonic()
        if not self._wait_healthy(SERVER_START_TIMEOUT, child):
            raise StackError(self._failed(child, f"did not answer {self.api_url}/health"))
        self.echo(f"Prefect server: ready in {time.monotonic() - began:.1f} s")
        self.owns_server = True
        # Runs left Running by an earlier `up` that was killed hold their concurrency slots (the
        # keeper's limit of 1 would skip every tick); no worker can be running them now.
        stale = self._prefect(lambda c: crash_active_runs(c, self.settings.prefect.work_pool, STALE_MESSAGE))
        if stale:
            self.echo(
                f"{len(stale)} flow run(s) left running by an earlier stop marked Crashed: {', '.join(stale)}"
            )

    @property
    def results_dir(self) -> Path:
        """Where the flow runs' persisted results land (Prefect's default: PREFECT_HOME/storage)."""
        return Path(self.environment().get(RESULTS_STORAGE) or self.options.prefect_home / "storage")

    def _write_record(self) -> None:
        record = UpRecord(
            api_url=self.api_url,
            started_server=self.owns_server,
            pid=os.getpid(),
            config=str(self.options.config),
            results=str(self.results_dir),
        )
        self.options.record_file.write_text(json.dumps(asdict(record)), encoding="utf-8")
        self.wrote_record = True

    def _ensure_work_pool(self) -> None:
        name = self.settings.prefect.work_pool
        if name != WORK_POOL:
            raise StackError(
                f"settings prefect.work_pool is {name!r} but prefect.yaml deploys to {WORK_POOL!r}; "
                "use the same name in both"
            )
        created = self._prefect(lambda c: ensure_work_pool(c, name))
        self.echo(f"work pool {name!r}: {'created' if created else 'present'}")

    def _register_deployments(self) -> None:
        project = self.options.project_dir
        if not (project / PROJECT_FILE).is_file():
            raise StackError(f"{project / PROJECT_FILE} not found: run from a checkout of qs-promoter")
        began = time.monotonic()
        code, tail = run_command(
            python_command("-m", "prefect", "--no-prompt", "deploy", "--all"),
            env=self.environment(),
            cwd=project,
            log_file=self.options.log_dir / "deploy.log",
            timeout=DEPLOY_TIMEOUT,
        )
        if code != 0:
            raise StackError(f"registering the deployments failed (exit {code}):\n{tail}")
        pool = self.settings.prefect.work_pool
        names = self._prefect(lambda c: deployment_names(c, pool))
        missing = [name for name in DEPLOYMENTS if name not in names]
        if missing:
            raise StackError(
                f"{project / PROJECT_FILE} did not register {', '.join(missing)}: is it this version's?"
            )
        deleted, kept = self._prefect(lambda c: retire_deployments(c, pool))
        names = [name for name in names if name not in deleted]
        self.echo(f"deployments: {', '.join(names)} ({time.monotonic() - began:.1f} s)")
        if deleted:
            self.echo(f"deployments of an earlier version deleted: {', '.join(deleted)}")
        if kept:
            self.echo(f"deployments of an earlier version kept while their runs finish: {', '.join(kept)}")

    def _ensure_zombie_automation(self) -> None:
        created = self._prefect(ensure_zombie_automation)
        if created:
            self.echo(f"automation {ZOMBIE_AUTOMATION!r}: created (runs silent for {ZOMBIE_AFTER} crash)")

    def start_worker(self, name: str | None = None, environment: Mapping[str, str] | None = None) -> Child:
        """Start an executor (or process worker) on the work pool and wait until it is online: the
        stack's own, a new one for a dead one, or another one as on a second machine (``name``,
        and ``environment`` over ours)."""
        kind = self.options.executor
        worker = name or f"qs-promoter-{socket.gethostname()}"
        env = self.environment()
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
        if kind == PROCESS:
            # Pick up new flow runs within a second or two instead of ten (prefect-notes §3.2).
            env["PREFECT_WORKER_QUERY_SECONDS"] = f"{self.options.worker_query_seconds:g}"
        env.update(environment or {})
        pool = self.settings.prefect.work_pool
        command = self._worker_command(worker)
        since = datetime.now(UTC) - timedelta(seconds=5)
        role = WORKER_CHILD[kind]
        child = self._spawn(role if name is None else f"{role}-{name}", command, env)
        self.worker_starts[child.pid] = (name, environment)
        began = time.monotonic()

        def online() -> bool:
            return not child.alive() or self._prefect(lambda c: worker_seen(c, pool, worker, since))

        if (
            not wait_for(online, WORKER_START_TIMEOUT, interval=0.5, stop=self.stop_requested)
            or not child.alive()
        ):
            self._check_interrupt()
            raise StackError(self._failed(child, "did not come online in the work pool"))
        doing = "taking runs of" if kind == IN_PROCESS else "polling"
        self.echo(f"{role} {worker!r}: {doing} pool {pool!r} ({time.monotonic() - began:.1f} s)")
        return child

    def _worker_command(self, worker: str) -> list[str]:
        """The command line of an executor or process worker named ``worker``."""
        if self.options.executor == IN_PROCESS:
            # The executor reads prefect.work_pool and prefect.worker_limit from the settings file.
            config = str(self.options.config)
            command = python_command("-m", "promoter.cli", "executor", "--config", config, "--name", worker)
            return [*command, "--instant-retries"] if self.options.instant_retries else command
        pool = self.settings.prefect.work_pool
        command = python_command(
            "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", worker
        )
        if self.settings.prefect.worker_limit is not None:
            command += ["--limit", str(self.settings.prefect.worker_limit)]
        return command

    def _start_webhook(self) -> None:
        url = self.webhook_local_url
        if self.webhook_healthy():
            self.echo(f"webhook: already running at {url}")
            return
        webhook = self.settings.webhook
        if not port_free(webhook.host, webhook.port):
            raise StackError(
                f"webhook port {webhook.port} on {webhook.host} is taken by another program "
                f"({self.webhook_address.health_url}: {self.webhook_problem})"
            )
        command = python_command(
            "-m", "promoter.cli", "webhook", "serve", "--config", str(self.options.config)
        )
        child = self._spawn("webhook", command, self.environment())
        began = time.monotonic()

        def healthy() -> bool:
            return not child.alive() or self.webhook_healthy()

        if (
            not wait_for(healthy, WEBHOOK_START_TIMEOUT, interval=0.25, stop=self.stop_requested)
            or not child.alive()
        ):
            self._check_interrupt()
            answer = f"did not answer {self.webhook_address.health_url} ({self.webhook_problem})"
            raise StackError(self._failed(child, answer))
        self.echo(f"webhook: listening at {url} ({time.monotonic() - began:.1f} s)")

    def _start_keeper(self) -> None:
        """Run keep-subscriptions now: notifications flow at once, not only at the first 60 s tick."""
        run = self._prefect(lambda c: start_run(c, KEEP_SUBSCRIPTIONS, tags=UP_TAGS)).name
        self.echo(f"{KEEP_SUBSCRIPTIONS}: first run {run!r} requested (then every 60 s)")

    # -- run and stop ----------------------------------------------------------------------

    def watch(self) -> Child | None:
        """Block until stop is requested (None) or a child exits on its own (that child).

        An executor that exits for its planned restart (run count or memory reached, after its
        last run ended) is started again, as a service manager would; that is no death."""
        while not self.stop_requested.wait(0.5):  # a timed wait stays interruptible on Windows
            for child in list(self.children):
                if child.alive():
                    continue
                if not self._planned_restart(child):
                    return child
                try:
                    self._restart_worker(child)
                except Interrupted:
                    return None
                except StackError:
                    return self.children[-1]  # the new one, which did not come online
        return None

    def _planned_restart(self, child: Child) -> bool:
        """The child is an executor we started that exited to be started again."""
        from promoter.services.executor import RESTART_EXIT_CODE  # imports Prefect: only now

        return (
            self.options.executor == IN_PROCESS
            and child.pid in self.worker_starts
            and child.returncode == RESTART_EXIT_CODE
        )

    def _restart_worker(self, child: Child) -> Child:
        """Start an executor again the way it was started, in place of one that exited to be restarted."""
        self.echo(f"{child.name} (pid {child.pid}) exited for its planned restart; starting it again")
        self.children.remove(child)
        name, environment = self.worker_starts.pop(child.pid)
        return self.start_worker(name, environment)

    def stop(self) -> None:
        """Stop every child this stack started: the executor first, the Prefect server last.

        With our own Prefect server, maintenance runs are cancelled and promotions get
        WORKER_STOP_GRACE seconds to finish before the executor is interrupted (it drains: no new
        runs, then cancels what is left; the SIGTERM that follows cancels at once); runs it had to
        abandon are marked Crashed, so none stays Running (and holds a concurrency slot) until the
        next start.
        """
        workers = [child for child in self.children if is_worker(child)]
        if self.owns_server and any(worker.alive() for worker in workers):
            self._drain_runs()
        for worker in workers:  # all of them before runs are marked: each may run some
            self._stop_child(worker, WORKER_STOP_GRACE)
        if workers and self.owns_server:
            self._try(lambda c: crash_active_runs(c, self.settings.prefect.work_pool, STOPPED_MESSAGE))
        others = {"webhook": 0, "prefect-server": 2}
        for child in sorted(
            (c for c in self.children if not is_worker(c)), key=lambda c: others.get(c.name, 1)
        ):
            self._stop_child(child, 15.0)
        self.children.clear()
        if self.wrote_record:
            self.options.record_file.unlink(missing_ok=True)
            self.wrote_record = False

    def _stop_child(self, child: Child, grace: float) -> None:
        if child.alive():
            self.echo(f"stopping {child.name} (pid {child.pid})")
        child.stop(grace)

    def _drain_runs(self) -> None:
        pool = self.settings.prefect.work_pool
        cancelled = self._try(lambda c: cancel_maintenance_runs(c, pool, STOPPING_MESSAGE)) or []
        if cancelled:
            self.echo(f"cancelling maintenance run(s): {', '.join(cancelled)}")
        deadline = time.monotonic() + WORKER_STOP_GRACE
        told = False
        while (running := self._try(lambda c: active_runs(c, pool))) and time.monotonic() < deadline:
            waiting = [r.name for r in running if r.name not in cancelled]
            if waiting and not told:
                self.echo(
                    f"waiting up to {WORKER_STOP_GRACE:.0f} s for flow run(s) to finish: {', '.join(waiting)}"
                )
                told = True
            time.sleep(1.0)

    def _try(self, call: Callable[[PrefectClient], Awaitable[T]]) -> T | None:
        """A Prefect call made while stopping: a failure is reported, never raised."""
        try:
            return self._prefect(call)
        except Exception as exc:  # the server may already be gone; stopping goes on regardless
            self.echo(f"note: Prefect API not usable while stopping ({type(exc).__name__})")
            return None

    # -- helpers ---------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Child:
        child = start_child(
            name, command, env=env, cwd=Path.cwd(), log_file=self.options.log_dir / f"{name}.log"
        )
        self.children.append(child)
        return child

    def _failed(self, child: Child, what: str) -> str:
        state = "exited with code " + str(child.returncode) if not child.alive() else what
        return f"{child.name} {state} (log: {child.log_file}):\n{child.log_tail()}"

    def _wait_healthy(self, timeout: float, child: Child | None = None) -> bool:
        def healthy() -> bool:
            if child is not None and not child.alive():
                return True  # stop waiting; the caller reports the exit
            try:
                answer = httpx.get(f"{self.api_url}/health", timeout=2.0, trust_env=False)
                return answer.status_code == 200 and answer.json() is True
            except (httpx.HTTPError, ValueError):
                return False

        ok = wait_for(healthy, timeout, interval=0.25, stop=self.stop_requested)
        if ok and child is not None and not child.alive():
            return False
        if not ok:
            self._check_interrupt()
        return ok

    def webhook_healthy(self) -> bool:
        """The webhook answers /healthz with 200 at its local address; else webhook_problem says why."""
        try:
            status = self.webhook_address.health(timeout=2.0).status_code
        except httpx.HTTPError as exc:
            self.webhook_problem = unreachable_reason(exc)
            return False
        self.webhook_problem = f"answered {status}"
        return status == 200

    def _prefect(self, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
        return asyncio.run(with_prefect(self.api_url, call))


# -- places and ports ------------------------------------------------------------------------


def project_dir() -> Path:
    """The folder with prefect.yaml: the checkout qs-promoter runs from (an editable install)."""
    return Path(promoter.__file__).resolve().parent.parent


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    """True if a server could listen on host:port now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":  # as uvicorn does; on Windows SO_REUSEADDR would share a used port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
