"""Defense in depth: the seed's security rules #1 and #2, checked again before promoting."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.authorization import authorize, parse_account
from promoter.qrs.models import User
from promoter.settings import AuthorizationSettings
from tests.unit.factories import OWNER, make_app, make_settings, make_stream, make_user

CAN_PROMOTE = ("CanPromote", "True")
FROM = ("CanPromoteFrom", "True")
FOUR_EYES = AuthorizationSettings(approver_must_differ_from_owner=True)


def owner_user(*props: tuple[str, str]) -> User:
    return make_user(*props, user_id=OWNER.user_id, directory=OWNER.user_directory, uid=OWNER.id)


@pytest.mark.parametrize(
    ("approver", "stream_props", "settings", "allowed", "reason_part"),
    [
        (owner_user(CAN_PROMOTE), (), {}, True, "owns the app"),
        (owner_user(), (), {}, False, "does not have CanPromote"),
        (owner_user(("CanPromote", "False")), (), {}, False, "does not have CanPromote"),
        (owner_user(("CanPromote", "  ")), (), {}, False, "does not have CanPromote"),
        (owner_user(("CanPromote", "yes")), (), {}, True, "owns"),
        (make_user(CAN_PROMOTE, ("CanPromoteGroup", "Sales_Admin")),
         (FROM, ("CanPromoteGroup", "sales_admin")), {}, True, "CanPromoteGroup of the stream"),
        (make_user(CAN_PROMOTE, ("CanPromoteGroup", "HR_Admin"), ("CanPromoteGroup", "Sales_Admin")),
         (FROM, ("CanPromoteGroup", "Sales_Admin"), ("CanPromoteGroup", "Ops")), {}, True, "CanPromoteGroup"),
        (make_user(CAN_PROMOTE, ("CanPromoteGroup", "HR_Admin")),
         (FROM, ("CanPromoteGroup", "Sales_Admin")), {}, False, "shares no CanPromoteGroup"),
        (make_user(CAN_PROMOTE), (FROM, ("CanPromoteGroup", "Sales_Admin")), {}, False, "shares no"),
        (make_user(CAN_PROMOTE, ("CanPromoteGroup", "Sales_Admin")),
         (("CanPromoteGroup", "Sales_Admin"),), {}, False, "lacks CanPromoteFrom"),
        (make_user(("CanPromoteGroup", "Sales_Admin")),
         (FROM, ("CanPromoteGroup", "Sales_Admin")), {}, False, "does not have CanPromote"),
        (None, (), {}, False, "could not be found"),
        (make_user(CAN_PROMOTE, inactive=True), (), {}, False, "inactive"),
        (owner_user(CAN_PROMOTE), (), {"authorization": FOUR_EYES}, False, "may not approve"),
        (make_user(), (), {"authorization": AuthorizationSettings(enabled=False)}, True, "disabled"),
    ],
    ids=[
        "owner with CanPromote", "owner without CanPromote", "CanPromote False", "CanPromote blank",
        "any non-empty CanPromote", "non-owner, matching group", "non-owner, one of several groups match",
        "non-owner, other group", "non-owner, no group", "stream without CanPromoteFrom",
        "group but no CanPromote", "approver unknown", "inactive approver", "four-eyes rule",
        "checks disabled",
    ],
)  # fmt: skip
def test_authorization_rules(
    approver: User | None, stream_props: tuple[tuple[str, str], ...], settings: dict[str, Any],
    allowed: bool, reason_part: str,
) -> None:  # fmt: skip
    """Rule #1 (CanPromote) always; rule #2: the owner, or CanPromoteFrom plus a shared CanPromoteGroup."""
    app = make_app()

    result = authorize(app, approver, make_stream(*stream_props), make_settings(**settings))

    assert result.allowed is allowed, result.reason
    assert reason_part in result.reason


def test_owner_is_recognised_by_account_when_ids_differ() -> None:
    """QRS may give the owner as a condensed user; DIRECTORY\\userid identifies them case-insensitively."""
    approver = make_user(CAN_PROMOTE, user_id="REP", directory="dev")

    result = authorize(make_app(), approver, None, make_settings())

    assert (result.allowed, "owns the app" in result.reason) == (True, True)


def test_non_owner_needs_the_apps_own_stream() -> None:
    """Without the app's stream, or with another stream, a non-owner is refused."""
    approver = make_user(CAN_PROMOTE, ("CanPromoteGroup", "G"))
    other = make_stream(FROM, ("CanPromoteGroup", "G"), stream_id=make_user().id)

    results = [authorize(make_app(), approver, stream, make_settings()) for stream in (None, other)]

    assert [r.allowed for r in results] == [False, False]


@pytest.mark.parametrize(
    ("account", "expected"),
    [("DEV\\manager", ("DEV", "manager")), ("INTERNAL\\sa_api", ("INTERNAL", "sa_api")),
     ("manager", None), ("\\x", None), ("DEV\\", None), ("A\\b\\c", ("A", "b\\c"))],
)  # fmt: skip
def test_parse_account(account: str, expected: tuple[str, str] | None) -> None:
    """modifiedByUserName is DIRECTORY\\userid; anything else is not an account."""
    assert parse_account(account) == expected
