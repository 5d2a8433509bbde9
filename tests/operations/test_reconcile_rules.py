"""Reconcile's pure rules: which apps carry a request no notification announced, which uploads are left."""

from __future__ import annotations

from datetime import datetime, timedelta

from promoter.approval import approval_key
from promoter.prefect_api import change_parameters
from promoter.provenance import UploadSlot, new_upload_secret, upload_name, upload_token
from promoter.qrs.models import App
from promoter.reconcile import (
    find_missed,
    leftover_uploads,
    running_upload_tokens,
    temporary_token,
    window_start,
)
from promoter.settings import ReloadSettings
from promoter.store.reconcile_marks import ReconcileMark
from tests.unit.factories import WHEN, make_app, make_settings, make_stream, target_app

SETTINGS = make_settings()
NOW = WHEN + timedelta(hours=2)
SETTLE = timedelta(minutes=2)
APPROVED = (
    ("PromoteToServer", "test - Overwrite"),
    ("PromoteToStream", "Everyone"),
    ("PromotionApproval", "Approve"),
)


def test_a_waiting_approval_is_found_with_its_ledger_key() -> None:
    """A published, approved app is a missed "updated" request keyed like the change flow keys it."""
    app = make_app(*APPROVED)

    found = find_missed([app], SETTINGS, since=None, now=NOW, settle=SETTLE)

    assert [(r.app_id, r.trigger, r.key) for r in found] == [(app.id, "updated", approval_key(app, SETTINGS))]
    assert found[0].idempotency_key == f"reconcile:{found[0].key}"
    assert change_parameters(found[0].app_id, found[0].trigger, found[0].idempotency_key) == {
        "app_id": str(app.id),
        "trigger": "updated",
        "change_id": found[0].idempotency_key,
    }


def test_apps_the_rules_ignore_are_not_requests() -> None:
    """Unpublished, without properties, or approved without a stream: nothing to submit."""
    apps = [
        make_app(*APPROVED, published=False),
        make_app(),
        make_app(("PromoteToServer", "test - Overwrite"), ("PromotionApproval", "Approve")),
    ]

    assert find_missed(apps, SETTINGS, since=None, now=NOW, settle=SETTLE) == []


def test_an_app_changed_within_the_settle_time_is_left_to_its_notification() -> None:
    """An approval set a moment ago is probably on its way through the webhook: not yet."""
    app = make_app(*APPROVED, modified=NOW - timedelta(seconds=30))

    assert find_missed([app], SETTINGS, since=None, now=NOW, settle=SETTLE) == []


def test_a_reload_after_the_last_reconcile_promotes_a_promote_on_reload_app() -> None:
    """A tagged PromoteOnReload app reloaded since the window start is a missed "reloaded" request;
    before the first reconcile (no window) old reloads are history."""
    settings = make_settings(promote_on_reload=ReloadSettings(enabled=True))
    app = make_app(
        ("PromoteToServer", "test - Overwrite"),
        ("PromoteToStream", "Everyone"),
        ("PromoteOnReload", "True"),
        tagged=True,
        last_reload=WHEN + timedelta(minutes=30),
    )

    recent = find_missed([app], settings, since=WHEN, now=NOW, settle=SETTLE)
    first = find_missed([app], settings, since=None, now=NOW, settle=SETTLE)
    old = find_missed([app], settings, since=WHEN + timedelta(hours=1), now=NOW, settle=SETTLE)

    assert [(r.trigger, r.key) for r in recent] == [("reloaded", approval_key(app, settings, "reloaded"))]
    assert (first, old) == ([], [])


def test_a_publish_to_an_alerting_stream_after_the_last_reconcile_is_found() -> None:
    """A publish whose alert no notification triggered is a missed "published" request."""
    stream = make_stream(("EmailAlertOnPublishTo", "True"))
    settings = make_settings(
        email=make_settings().email.model_copy(
            update={"enabled": True, "stream_approvers": {str(stream.id): ["boss@acme.example"]}}
        )
    )
    app = make_app()

    found = find_missed(
        [app],
        settings,
        since=WHEN - timedelta(minutes=1),
        now=NOW,
        settle=SETTLE,
        streams={stream.id: stream},
    )

    assert [r.trigger for r in found] == ["published"]


def test_the_journal_window_overlaps_the_last_run_but_not_the_time_before_the_first() -> None:
    """The window starts before the last success by the settle time and a clock-skew allowance,
    never before the first success; before any success there is no window."""
    first = NOW - timedelta(hours=1)

    assert window_start(None, SETTLE) is None
    assert window_start(ReconcileMark(first, NOW), SETTLE) == NOW - SETTLE - timedelta(minutes=5)
    assert window_start(ReconcileMark(first, first + timedelta(minutes=1)), SETTLE) == first


def temporary_name(name: str, token: str) -> str:
    """The temporary upload name of a request with ``token``, with a fresh secret."""
    return upload_name(name, UploadSlot(token, new_upload_secret(), NOW))


def test_the_temporary_upload_name_is_recognised() -> None:
    """The sweep reads back exactly the token provenance.upload_name wrote, even for a long name, and
    from a name written before names had a secret part."""
    token = upload_token("approval:x", "test")

    assert temporary_token(temporary_name("Sales [qs-promoter]", token)) == token
    assert temporary_token(temporary_name("x" * 300, token)) == token
    assert temporary_token(f"Sales [qs-promoter {token}]") == token
    assert temporary_token("Sales Dashboard") is None
    assert temporary_token(f"{temporary_name('Sales', token)} copy") is None


def test_only_old_unpublished_uploads_of_no_running_request_are_leftovers() -> None:
    """Old and unpublished: leftover. Fresh, published, or used by a running request: kept."""
    running = running_upload_tokens(["approval:running"], ["test", "prod"])
    old = NOW - timedelta(hours=2)

    def temp(token: str, *, created: datetime = old, published: bool = False) -> App:
        app = target_app(temporary_name("Sales", token), None)
        return app.model_copy(update={"created_date": created, "published": published})

    leftover = temp("0123456789ab")
    apps = [
        leftover,
        temp("123456789abc", created=NOW - timedelta(minutes=10)),
        temp("23456789abcd", published=True),
        temp(upload_token("approval:running", "prod")),
        target_app("Sales", None).model_copy(update={"created_date": old}),
    ]

    swept = leftover_uploads(apps, now=NOW, min_age=timedelta(hours=1), protected=running)

    assert swept == [leftover]
