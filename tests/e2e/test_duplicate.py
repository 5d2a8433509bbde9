"""Duplicate end to end: one upload per site, server-side copies for more streams, missing streams told."""

from __future__ import annotations

import json
import time
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact

from promoter.approval import Mode, Target
from promoter.flows.delivery import Delivery, deliver_to_site
from promoter.flows.handle import handle_app_change
from promoter.outcome import SiteOutcome
from promoter.tasks import run
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads

pytestmark = IN_PROCESS_FLOWS


async def artifact(key: str) -> Artifact:
    """The newest version of the artifact ``key``, as the Prefect UI shows it."""
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return found[0]


async def artifact_rows(key: str) -> list[dict[str, str]]:
    data = (await artifact(key)).data
    return json.loads(data) if isinstance(data, str) else data


async def test_duplicate_to_two_sites_uploads_once_per_site_and_reports_the_missing_stream(
    stage: Stage,
) -> None:
    """Duplicate to test (Everyone, Review) and prod (Everyone; no Review there): one upload per site,
    a server-side copy for the second stream, and the missing Review reported by email, artifact, ledger."""
    file = stage.app_file(512 * 1024, seed="dup")
    app = await stage.publish("Pipeline", file)
    await stage.approve(app.id, ["test - Duplicate", "prod - Duplicate"], ["Everyone", "Review"])
    uploads = counting_uploads(stage, "test", "prod")

    started = time.perf_counter()
    await handle_app_change(app.id, "updated")
    elapsed = time.perf_counter() - started

    test_apps, prod_apps = await stage.apps("test"), await stage.apps("prod")
    streams = stage.world.target_streams
    assert sorted((a.name, a.stream.id if a.stream else None) for a in test_apps) == sorted(
        [("Pipeline", streams["test"]["Everyone"]), ("Pipeline", streams["test"]["Review"])]
    )
    assert [(a.name, a.stream.id if a.stream else None) for a in prod_apps] == [
        ("Pipeline", streams["prod"]["Everyone"])
    ]
    size = file.stat().st_size
    assert {name: counter.uploads for name, counter in uploads.items()} == {"test": 1, "prod": 1}
    # Bytes received: the app once per site, plus the small JSON bodies of publish and describe.
    assert all(size <= counter.bytes_in < size + 16 * 1024 for counter in uploads.values())
    copies = [a for a in test_apps if a.source_app_id not in (None, UUID(int=0))]
    assert len(copies) == 1, "the second stream on test gets a server-side copy of the upload"
    assert {a.file_size for a in [*test_apps, *prod_apps]} == {size}

    results = next(m for m in stage.mails() if str(m["Subject"]).startswith("[qs-promoter] Promoted"))
    text = results.get_body(("plain",)).get_content()
    assert "Stream Review does not exist on this site" in text
    rows = await artifact_rows(f"promotion-{app.id}")
    assert {"site": "prod", "stream": "Review", "result": "stream missing"}.items() <= next(
        r for r in rows if r["result"] == "stream missing"
    ).items()
    links = {
        stage.settings.site(site).hub_link(a.id)
        for site, apps in (("test", test_apps), ("prod", prod_apps))
        for a in apps
    }
    assert {f"[open in hub]({link})" for link in links} == {r["open"] for r in rows if r["open"]}
    # The results email links each promoted app on its own site, not the source app it unpublished.
    assert all(link in text for link in links)
    assert stage.settings.source_site.hub_link(app.id) not in text
    # The artifacts say which app went where, whose it is, who approved it and its S3 version.
    table, summary = await artifact(f"promotion-{app.id}"), await artifact(f"promotion-{app.id}-summary")
    assert table.description == summary.description
    assert table.description == "Promotion of 'Pipeline' to test and prod, approved by ACME\\\\manager."
    assert str(summary.data).startswith("### 'Pipeline' to test and prod\n")
    assert "* owner: " in str(summary.data) and "* S3 version: " in str(summary.data)
    assert all(f"]({link})" in str(summary.data) for link in links)
    with stage.ledger() as ledger:
        prod = next(r for r in ledger.site_results() if r.site == "prod")
    assert (prod.status, prod.streams) == ("done", ("Everyone",))
    assert "Review" in prod.error
    received = ", ".join(f"{name} {counter.bytes_in} B" for name, counter in uploads.items())
    print(f"\nduplicate of a {size} B app to 2 sites: {elapsed:.2f} s; received: {received}")


async def test_a_duplicate_stopped_after_publishing_is_not_published_twice_when_done_again(
    stage: Stage,
) -> None:
    """Duplicate to test's Everyone and Review: one request's delivery to test runs to the end, then
    runs again from the start, as after an executor killed before the site's step was recorded. The
    second finds the apps the first published for this request, keeps them, and publishes nothing:
    one app per stream."""
    app = await stage.publish("Budget")
    target = Target("test", Mode.DUPLICATE, ("Everyone", "Review"))
    exported = stage.app_file(seed="Budget")

    @flow
    async def deliver_twice() -> tuple[SiteOutcome, SiteOutcome]:
        await run.ensure_limits({run.site_limit("test"): 2})
        again = Delivery(app, exported, "promoted", "request-stopped-once", stage.settings, stage.tmp)
        return await deliver_to_site.fn(target, again), await deliver_to_site.fn(target, again)

    first, second = await deliver_twice()

    placed = sorted((p.stream, str(p.app_id)) for p in first.placements)
    assert sorted((p.stream, str(p.app_id)) for p in second.placements) == placed
    test_apps = await stage.apps("test")
    assert sorted((a.stream.name if a.stream else "-", str(a.id)) for a in test_apps) == placed
