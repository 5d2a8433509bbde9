"""A target site that fails: nothing half-done stays there, the others finish, and a retry completes it."""

from __future__ import annotations

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.tasks.retries import TRANSIENT_RETRIES, client_retry
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads

pytestmark = IN_PROCESS_FLOWS

PUBLISH = r"^/qrs/app/[^/]+/publish$"
# How often one publish step is tried before the step fails: the client's repeats times the task's.
TRIES_PER_STEP = client_retry().attempts * (1 + TRANSIENT_RETRIES["retries"])
# The first run ends before the intended-targets email is due: its incomplete-results email carries
# the requested targets, so there is no "Promotion requested" email of its own.
SUBJECTS = [
    '[qs-promoter] Approved: "Budget"',
    '[qs-promoter] Promoted: "Budget"',
    '[qs-promoter] Promotion incomplete: "Budget"',
]


async def names_in_streams(stage: Stage, site: str) -> list[tuple[str, str]]:
    return sorted((a.name, a.stream.name if a.stream else "-") for a in await stage.apps(site))


async def test_a_failed_site_leaves_nothing_behind_and_a_rerun_finishes_it_without_duplicates(
    stage: Stage,
) -> None:
    """prod refuses to publish: prod keeps no temporary upload, test is done, the run fails naming prod,
    the source stays published. Once prod works, the same approval handled again completes prod only."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate", "prod - Duplicate"], ["Everyone"])
    stage.site("prod").add_fault("status", method="PUT", path=r"^/qrs/app/[^/]+/publish$", status=500)
    uploads = counting_uploads(stage, "test", "prod")

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed() and "prod" in (state.message or ""), state.message
    assert await stage.apps("prod") == []
    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    (source,) = await stage.apps("source")
    assert (source.id, source.published) == (app.id, True)
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "failed"

    stage.site("prod").clear_faults()
    uploads = counting_uploads(stage, "test", "prod")
    await handle_app_change(app.id, "updated")

    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    assert [a.name for a in await stage.apps("prod")] == ["Budget"]
    assert (uploads["test"].uploads, uploads["prod"].uploads) == (0, 1)
    (left,) = await stage.apps("source")
    assert (left.id != app.id, left.published) == (True, False)
    assert stage.subjects() == SUBJECTS
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "promoted"


async def test_a_site_that_fails_after_publishing_a_copy_keeps_nothing_and_a_rerun_places_each_once(
    stage: Stage,
) -> None:
    """Duplicate to test's Everyone and Review: the copy reaches Review, then publishing the upload fails.
    The copy is taken back with the upload, so a re-run puts exactly one app in each stream."""
    app = await stage.publish("Budget")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone", "Review"])
    test = stage.site("test")
    test.add_fault("latency", method="PUT", path=PUBLISH, seconds=0.0, count=1)  # the copy's publish passes
    test.add_fault("status", method="PUT", path=PUBLISH, status=500)  # the upload's publish fails

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed()
    assert await names_in_streams(stage, "test") == []
    test.clear_faults()
    await handle_app_change(app.id, "updated")
    assert await names_in_streams(stage, "test") == [("Budget", "Everyone"), ("Budget", "Review")]


async def test_retrying_the_same_run_after_a_failed_site_finishes_it(stage: Stage) -> None:
    """A retry of the same flow run (as the Prefect UI's Retry) after prod failed once: cached steps are
    not redone, the upload that the failure removed is made again, and prod gets exactly one app."""
    app = await stage.publish("Budget")
    await stage.approve(app.id, ["test - Duplicate", "prod - Duplicate"], ["Everyone"])
    stage.site("prod").add_fault("status", method="PUT", path=PUBLISH, status=500, count=TRIES_PER_STEP)
    uploads = counting_uploads(stage, "test", "prod")

    await handle_app_change.with_options(retries=1, retry_delay_seconds=0)(app.id, "updated")

    assert await names_in_streams(stage, "prod") == [("Budget", "Everyone")]
    assert await names_in_streams(stage, "test") == [("Budget", "Everyone")]
    assert (uploads["test"].uploads, uploads["prod"].uploads) == (1, 2)
    assert stage.subjects() == SUBJECTS


async def test_a_copy_whose_answer_was_lost_is_published_once_and_no_unpublished_copy_is_left(
    stage: Stage,
) -> None:
    """Duplicate to test's Everyone and Review: test makes the copy for Review but its answer is lost
    (a connection cut after QRS did the work). The copy is found by its temporary name and published:
    one app per stream, no unpublished copy beside them, the run complete (before, the site failed and
    the copy stayed behind unpublished with the app's name)."""
    app = await stage.publish("Budget")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone", "Review"])
    lost = stage.site("test").add_fault("lose_answer", method="POST", path=r"^/qrs/app/[^/]+/copy$", count=1)

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_completed(), state.message
    assert lost.count == 0
    assert await names_in_streams(stage, "test") == [("Budget", "Everyone"), ("Budget", "Review")]
