"""Who retries what: every task's retry options, the QRS client's policy for tasks, and the test mode.

Seven layers repeat work after a failure, from the innermost out. Each repeats only what is safe
to repeat at its level, so they are stacked, not alternatives:

==  ============================  ==============================  ====================================
#   who (where)                   what is repeated, and when      how often, and why
==  ============================  ==============================  ====================================
1   the QRS client (qrs/client    one QRS call that is safe to    3 attempts, 0.5 s doubling to 10 s,
    .py with qrs/retry.py's       repeat (an upload only once it  half of it jitter: a dropped
    RetryPolicy; the tasks'       is known not to have landed),   connection, a node busy for seconds
    clients: ``client_retry``)    on ``QrsError.transient``
2   Prefect task retries          a whole step: a QRS step, an    3 retries, after 2, 10 and 30 s
    (TRANSIENT_RETRIES, in the    app file, a site's delivery,    (+/-50 %): waits out a QRS node
    option sets built on it)      an S3 call, an email            restarting (about a minute), an
                                                                  SMTP 4xx, S3 throttling
3   ``retry_if_transient``        the condition of layer 2: the   -
                                  error's ``transient``, or a 409
                                  (the retried step re-reads)
4   ``retries: 0`` (UPLOAD_ONCE,  nothing: a blind repeat could   the layer around repeats: the
    COPY_ONCE, KEEPER_STEP)       leave a second app, and the     client (upload), a new run (copy),
                                  keeper probes again itself      the keeper's own loop
5   concurrency slots (tasks/     taking a run's slots            6 attempts, 0.1 s x attempt: a
    run.py ``holding``)                                           SQLite Prefect server's 503
6   the webhook's submitter       creating the flow run for a     doubling 1 s to 60 s, half jitter,
    (webhook/submitter.py         notification kept in the        until it exists: Prefect down or
    SubmitPolicy, is_transient)   outbox                          overloaded pauses every submission
7   reconcile (reconcile.py       a request's whole run that      at its next tick (10 min), up to
    decide_retry, RETRY_LIMIT)    stopped: Crashed, Failed or     RETRY_LIMIT (5) times; then an
                                  Cancelled                       admin retries it in the UI
==  ============================  ==============================  ====================================

Beside layer 2, two option sets repeat a fixed number of times whatever the error, as the calls
they wrap fail only for a busy server: PREFECT_CALL (reconcile's reads and re-runs through the
Prefect API: 3 after 2 s) and LEDGER_RECORD (reconcile's ledger reads and marks: 2 after 1 s).

``transient`` has one definition for our errors: the property of PromoterError (promoter/
errors.py), which layers 1, 2 and 6 ask. httpx's and Prefect's errors have no such property;
the submitter judges those itself (a 5xx, 408, 429, a timeout or no connection).

Test mode (``set_testing``): tests run the same attempts as production without the waits. A
task decorator binds its options at import, and Prefect 3.9.1's Task keeps the very list given as
``retry_delay_seconds`` (``with_options`` hands on the same object), reading the item for the
retry due each time one is (a callable is called once, in the decorator, so it cannot change
later). So every option set here holds one list, TASK_RETRY_DELAYS, and the test mode rewrites
that list in place; Prefect adds jitter only to a delay above 0. The tasks' QRS clients take
``client_retry()`` when they open, so they repeat at once too. Nothing reads the environment:
the test session calls ``set_testing(True)`` (tests/conftest.py), and an executor started by
the tests' stack gets ``--instant-retries`` (promoter/services/stack.py, StackOptions).
Layers 5 to 7, PREFECT_CALL and LEDGER_RECORD keep their waits: they wait for a Prefect server or
a database, which takes as long in a test.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from promoter.errors import PromoterError, QrsConflict
from promoter.qrs.retry import RetryPolicy

# Seconds between a step's attempts (layer 2); they grow so a QRS node that is restarting
# (about a minute) is waited out. One list, held by every task's decorator: see set_testing.
PRODUCTION_DELAYS = (2.0, 10.0, 30.0)
TASK_RETRY_DELAYS: list[float] = list(PRODUCTION_DELAYS)

_testing = False


def set_testing(on: bool) -> None:
    """Turn the test mode on or off: task retries and the tasks' QRS clients repeat without waiting.

    The number of attempts stays as in production, so a test sees every repeat it would see
    there. The list is changed in place because the task decorators hold it (module docstring).
    """
    global _testing
    _testing = on
    TASK_RETRY_DELAYS[:] = [0.0] * len(PRODUCTION_DELAYS) if on else PRODUCTION_DELAYS


def is_testing() -> bool:
    """Whether the test mode is on in this process (a test stack hands it to its executor)."""
    return _testing


def client_retry() -> RetryPolicy:
    """How a task's QRS client repeats a call (layer 1): with backoff, or at once in the test mode."""
    return RetryPolicy.immediate() if _testing else RetryPolicy()


async def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a step whose error may pass (our errors' ``transient``) or was a 409 (the retried step
    re-reads modifiedDate); never another 4xx, a bug or a refusal.

    Async on purpose: for an async task, ``state.result()`` hands back an un-awaited coroutine
    and the documented sync form never retries (STYLE, "Checked while writing").
    """
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, PromoterError) and (exc.transient or isinstance(exc, QrsConflict))


# Layer 2: the retries every step that may meet a passing failure is built on.
TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": len(PRODUCTION_DELAYS),
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_jitter_factor": 0.5,  # Prefect applies it only to a delay above 0 (the test mode's 0 stays 0)
    "retry_condition_fn": retry_if_transient,
}

# One QRS step on a site (read an app, replace, delete, set a tag): persisted, so a retried run
# skips it when done.
QRS_STEP: dict[str, Any] = {"persist_result": True, "timeout_seconds": 600, **TRANSIENT_RETRIES}

# A step that moves an app file (the export, an S3 version or backup, a whole site's delivery
# with its upload): as QRS_STEP, allowed hours, since the limit is bandwidth, not memory.
APP_FILE_STEP: dict[str, Any] = {**QRS_STEP, "timeout_seconds": 4 * 3600}

# Uploads are never retried as a step: the client repeats a failed upload only after checking
# that it did not land, which a blind task-level repeat could not do.
UPLOAD_ONCE: dict[str, Any] = {**APP_FILE_STEP, "retries": 0}

# A copy is a POST that QRS does not deduplicate, and the copy is recorded (lineage) only after
# the step: a blind repeat could leave two. A new run passes the recorded copy in instead.
COPY_ONCE: dict[str, Any] = {**QRS_STEP, "retries": 0}

# Sending an email: never cached (the ledger's claim, not Prefect, keeps it to once per kind).
EMAIL_SEND: dict[str, Any] = {"cache_policy": NO_CACHE, "timeout_seconds": 300, **TRANSIENT_RETRIES}

# Reconcile's reads of a site: never cached, each tick must see the site as it is now.
SITE_SURVEY: dict[str, Any] = {"cache_policy": NO_CACHE, "timeout_seconds": 600, **TRANSIENT_RETRIES}

# Reconcile's reads and marks in the ledger: a database that is busy answers within a second.
LEDGER_RECORD: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "timeout_seconds": 120,
    "retries": 2,
    "retry_delay_seconds": 1,
}

# Tasks that call the Prefect API (reconcile's reads and re-runs): a few quick repeats, never cached.
PREFECT_CALL: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "timeout_seconds": 60,
    "retries": 3,
    "retry_delay_seconds": 2,
}

# The subscription keeper's steps: no task-level retries, as the keeper's own loop probes again
# within seconds, and a renewal that failed is repeated as soon as a probe succeeds.
KEEPER_STEP: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 0}
