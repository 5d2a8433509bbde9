"""Scale-out as deployments/README.md describes it: one Prefect server on PostgreSQL, two executors
("two machines", each with its own Prefect home) sharing the promotions, one ledger on
PostgreSQL, and the task results on storage both reach. The whole loop runs: QRS notification,
webhook, outbox, flow runs, either executor, the target sites.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest
from pydantic import SecretStr

from promoter.approval import approval_key
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from promoter.settings import PrefectSettings
from promoter.store.ledger import Ledger
from tests.e2e.conftest import IN_PROCESS_FLOWS
from tests.fixtures.postgres import postgres_url, throwaway_database
from tests.fixtures.stack import LiveStack, StartStack, run

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

pytestmark = [pytest.mark.slow, pytest.mark.e2e, IN_PROCESS_FLOWS]

APPROVALS = 12
RUNS_PER_WORKER = 3  # settings prefect.worker_limit: an executor with its fill leaves runs to the other
SECOND = "machine-b"


@pytest.fixture
def two_executors(
    start_stack: StartStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveStack]:
    # The share both machines mount for results (an SMB or NFS path in production).
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "shared-results"))
    with throwaway_database("qsp_ledger") as ledger_database:
        assert ledger_database is not None, "PostgreSQL at 127.0.0.1:5432 does not answer"
        with start_stack(
            LiveStack,
            postgres_required=True,
            ledger_url=SecretStr(postgres_url(ledger_database)),
            prefect=PrefectSettings(site_concurrency=8, worker_limit=RUNS_PER_WORKER),
        ) as live:
            live.stack.start_worker(SECOND, {"PREFECT_HOME": str(tmp_path / SECOND / "prefect")})
            yield live


async def who_ran(client: PrefectClient, run_ids: set[str]) -> dict[str, str]:
    """flow run id -> the executor that took it: each marks its runs' infrastructure_pid
    "<name>:<pid>"."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in run_ids]))
    )
    return {str(r.id): (r.infrastructure_pid or "?").rsplit(":", 1)[0] for r in runs}


def claim_owners(ledger: Ledger, keys: list[str]) -> set[str]:
    """The flow runs that hold the ledger's claims of ``keys`` (the runs that promoted)."""
    import sqlalchemy as sa

    from promoter.store.ledger import handled

    with ledger.engine.connect() as conn:
        return {row.owner for row in conn.execute(sa.select(handled.c.owner).where(handled.c.key.in_(keys)))}


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_two_executors_share_the_promotions_and_each_approval_is_promoted_once(
    two_executors: LiveStack,
) -> None:
    """Twelve approvals through the webhook with two executors on the pool (3 runs at once each):
    both run promotions, each approval is promoted once, every result lands in the shared folder."""
    live = two_executors
    settings, world = live.settings, live.world
    assert live.database == "PostgreSQL"
    live.wait_subscribed()

    approved = []
    for number in range(APPROVALS):
        name = f"Scale {number:02d} Sales"
        file = make_app_file(live.root / "apps" / f"{number}.qvf", 32 * 1024, seed=name)
        app = run(publish_as(settings, REP, file, name, world.sales_stream_id))
        values = {
            "PromoteToServer": ["test - Overwrite", "prod - Duplicate"],
            "PromoteToStream": ["Everyone"],
            "PromotionApproval": ["Approve"],
        }
        app = run(set_properties(settings, MANAGER, app.id, world, values))
        approved.append((app, approval_key(app, settings)))

    deadline = time.monotonic() + 300
    with Ledger(settings.ledger_url.get_secret_value()) as ledger:
        while any(ledger.outcome(key) != "promoted" for _, key in approved):
            assert time.monotonic() < deadline, [ledger.outcome(key) for _, key in approved]
            time.sleep(1.0)
        owners = claim_owners(ledger, [key for _, key in approved])

    # Each approval promoted once: one app of its name in Everyone on each target.
    for site in ("test", "prod"):
        everyone = world.target_streams[site]["Everyone"]
        names = Counter(a.name for a in live.apps(site) if a.stream and a.stream.id == everyone)
        assert [names[app.name] for app, _ in approved] == [1] * APPROVALS, site

    # Both executors ran promotions, and no run was started twice.
    ran = live.prefect(lambda client: who_ran(client, owners))
    by_worker = Counter(ran[run_id] for run_id in owners)
    assert len(owners) == APPROVALS
    assert len(by_worker) == 2 and min(by_worker.values()) >= 1, by_worker
    assert SECOND in by_worker

    # The steps' results went to the shared storage, none to either machine's own Prefect home.
    assert len(files_under(live.root / "shared-results")) >= APPROVALS
    assert files_under(live.stack.options.prefect_home / "storage") == []
    assert files_under(live.root / SECOND / "prefect" / "storage") == []
