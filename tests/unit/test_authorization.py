"""Defense in depth: the seed's security rules #1 and #2, checked again before promoting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from promoter.authorization import RequestKind, authorize, changed_after, parse_account, set_last, setter
from promoter.qrs.models import User
from promoter.settings import AuthorizationSettings
from tests.unit.factories import OWNER, WHEN, make_app, make_settings, make_stream, make_user, prop

CAN_PROMOTE = ("CanPromote", "True")
FROM = ("CanPromoteFrom", "True")
FOUR_EYES = AuthorizationSettings(separation_of_duties=True)


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
        "group but no CanPromote", "approver unknown", "inactive approver", "separation of duties",
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


@pytest.mark.parametrize(
    ("request_kind", "allowed"),
    [("approval", False), ("promotion on reload", False), ("denial", True)],
)
def test_separation_of_duties_refuses_the_owners_own_promotion_not_their_denial(
    request_kind: RequestKind, allowed: bool
) -> None:
    """With separation_of_duties the owner may not approve their app, by Approve or by PromoteOnReload;
    denying it (taking it out of the stream) is still theirs to do."""
    settings = make_settings(authorization=FOUR_EYES)

    result = authorize(make_app(), owner_user(CAN_PROMOTE), None, settings, request_kind)

    assert result.allowed is allowed, result.reason


@pytest.mark.parametrize("request_kind", ["denial", "promotion on reload"])
def test_a_denial_and_a_promotion_on_reload_follow_the_approval_rules(request_kind: RequestKind) -> None:
    """Without CanPromote nobody denies or promotes on reload; the unknown setter is named by the request."""
    results = [
        authorize(make_app(), user, None, make_settings(), request_kind) for user in (owner_user(), None)
    ]

    assert [r.allowed for r in results] == [False, False]
    assert "does not have CanPromote" in results[0].reason
    assert f"that set the {request_kind} could not be found" in results[1].reason


def test_the_old_name_of_separation_of_duties_is_still_read() -> None:
    """approver_must_differ_from_owner, the setting's former name, still turns separation of duties on."""
    rules = AuthorizationSettings.model_validate({"approver_must_differ_from_owner": True})

    assert rules.separation_of_duties


LATER = WHEN + timedelta(minutes=1)


def test_the_setter_is_the_values_own_modifier_and_the_last_value_set_counts() -> None:
    """setter() reads the value's modifiedByUserName (None when QRS gave none); set_last() picks the latest,
    and counts a value without a time as the oldest."""
    first, last = prop("P", "a", by="DEV\\a"), prop("P", "b", by="DEV\\b", modified=LATER)
    undated = prop("P", "c", by="DEV\\c").model_copy(update={"modified_date": None})

    assert (setter(first), setter(prop("P", "x", by=None)), setter(None)) == ("DEV\\a", None, None)
    assert set_last([last, first]) is last and set_last([first, last]) is last
    assert set_last([undated, first]) is first and set_last([undated]) is undated


def test_changed_after_names_only_other_users_later_values() -> None:
    """Later values by others are changed after; the setter's own, earlier and same-moment ones are not."""
    deciding = prop("PromotionApproval", "Approve", by="DEV\\manager")
    mine = prop("PromoteToServer", "a", by="dev\\MANAGER", modified=LATER)
    before = prop("PromoteToServer", "b", by="DEV\\rep", modified=WHEN - timedelta(minutes=1))
    same_moment = prop("PromoteToServer", "c", by="DEV\\rep")
    later = prop("PromoteToStream", "d", by="DEV\\rep", modified=LATER)

    assert changed_after(deciding, [mine, before, same_moment, later]) == [later]
