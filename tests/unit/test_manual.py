"""Manual runs: the admin's own, with targets from parameters, and always a record of who started them."""

from __future__ import annotations

from promoter.approval import Action
from promoter.manual import cli_requester, manual_decision, requester
from tests.unit.factories import make_app, make_settings


def test_the_cli_records_its_os_account_and_host_beside_any_name_given() -> None:
    """`qs-promoter promote` names the OS account and host it ran as, with --requested-by or without."""
    assert cli_requester(None, "ACME\\jdoe", "ops01") == "ACME\\jdoe on ops01 (qs-promoter CLI)"
    assert (
        cli_requester("  Jane\r\nDoe ", "jdoe", "ops01")
        == "Jane Doe, started by jdoe on ops01 (qs-promoter CLI)"
    )


def test_a_run_without_requested_by_says_it_came_from_the_prefect_ui_or_api() -> None:
    """A deployment run started in the UI has no requested_by: the record says so and names the flow run."""
    assert requester(None, "manual-promote-x") == (
        "the Prefect UI or API (flow run manual-promote-x; no requested_by given)"
    )
    assert requester("  ", None).startswith("the Prefect UI or API")
    assert requester("ACME\\admin", "run") == "ACME\\admin"


def test_what_is_recorded_stays_one_short_line() -> None:
    """A requested_by of any length and with line breaks is kept to one line that fits the ledger."""
    recorded = requester("x\n" * 1000, "run")

    assert "\n" not in recorded and len(recorded) <= 400


def test_a_manual_promotion_is_requested_not_approved() -> None:
    """The decision names who started the run as a manual run, so the artifact says "requested by"."""
    decision = manual_decision(
        make_app(), make_settings(), sites=["test"], streams=["Everyone"], requested_by="ACME\\admin"
    )

    assert (decision.action, decision.approver, decision.request) == (
        Action.PROMOTE,
        "ACME\\admin",
        "manual run",
    )
    assert "requested by ACME\\admin" in decision.reason


def test_without_parameters_a_manual_promotion_goes_where_the_apps_properties_say_approved_or_not() -> None:
    """An app with PromoteToServer and PromoteToStream but no PromotionApproval: promote APP_ID with no
    options promotes it there (the properties name the targets; nobody has to approve a manual run)."""
    app = make_app(("PromoteToServer", "test - Duplicate"), ("PromoteToStream", "Everyone"))

    decision = manual_decision(app, make_settings(), requested_by="ACME\\admin")

    assert decision.action is Action.PROMOTE
    assert [(t.site, t.mode.value, t.streams) for t in decision.targets] == [
        ("test", "duplicate", ("Everyone",))
    ]
