"""The promotion rules of the original product, one branch per case, plus our refinements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from promoter.approval import (
    Action,
    Decision,
    Mode,
    Target,
    approval_key,
    decide,
    is_relevant,
    notice_key,
    show,
)
from promoter.notifications import ChangeKind
from promoter.settings import (
    EmailSettings,
    ReloadSettings,
    UnpublishSettings,
    VersioningSettings,
)
from tests.unit.factories import WHEN, make_app, make_settings, make_stream, prop

APPROVE = ("PromotionApproval", "Approve")
DENY = ("PromotionApproval", "Deny")
TEST_OVERWRITE = ("PromoteToServer", "test - Overwrite")
EVERYONE = ("PromoteToStream", "Everyone")
RELOAD = ("PromoteOnReload", "True")
RELOAD_ON = {"promote_on_reload": ReloadSettings(enabled=True)}
VERSIONING_ON = {"versioning": VersioningSettings(enabled=True, bucket="apps")}
NO_AUTO_UNPUBLISH = {"unpublish": UnpublishSettings(auto=False)}


@dataclass
class Case:
    """One row of the rule table: an app, a trigger and settings, and what the decision must say."""

    id: str
    props: tuple[tuple[str, str], ...]
    expect: dict[str, Any]
    trigger: ChangeKind = "updated"
    settings: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    reason_has: str = ""
    problem_has: str = ""


def overwrite(*streams: str, site: str = "test") -> Target:
    return Target(site, Mode.OVERWRITE, streams)


CASES = [
    # --- only published apps are considered
    Case(
        "unpublished app is ignored",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        app={"published": False},
        reason_has="not published",
    ),
    Case(
        "unpublished tagged app loses its tag",
        (RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.UNTAG, "remove_tag": True},
        app={"published": False, "tagged": True},
        settings=RELOAD_ON,
    ),
    Case(
        "no promotion properties",
        (("Region", "EMEA"),),
        {"action": Action.IGNORE},
        reason_has="none of the promotion properties",
    ),
    # --- approval
    Case(
        "approve with server and stream promotes",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {
            "action": Action.PROMOTE,
            "targets": (overwrite("Everyone"),),
            "unpublish": True,
            "strip_properties": False,
            "version": False,
            "notify": False,
            "approver": "DEV\\manager",
        },
    ),
    Case(
        "approval is case-insensitive and a substring",
        (("PromotionApproval", "APPROVED by me"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE},
    ),
    Case(
        "email enabled: the approval emails apply",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE, "notify": True},
        settings={"email": EmailSettings(enabled=True)},
    ),
    Case(
        "without auto unpublish the properties are stripped",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE, "unpublish": False, "strip_properties": True},
        settings=NO_AUTO_UNPUBLISH,
    ),
    Case(
        "PromotionUnpublish True unpublishes without auto",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionUnpublish", "True")),
        {"unpublish": True, "strip_properties": False},
        settings=NO_AUTO_UNPUBLISH,
    ),
    Case(
        "PromotionUnpublish matches 'true' as a substring, as the original",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionUnpublish", "TRUE please")),
        {"unpublish": True},
        settings=NO_AUTO_UNPUBLISH,
    ),
    Case(
        "PromotionUnpublish False keeps the app published",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionUnpublish", "False")),
        {"unpublish": False, "strip_properties": True},
        settings=NO_AUTO_UNPUBLISH,
    ),
    # --- denial
    Case(
        "deny needs no server or stream",
        (DENY,),
        {"action": Action.DENY, "targets": (), "unpublish": True, "strip_properties": False},
    ),
    Case(
        "'Denied' denies",
        (("PromotionApproval", "denied"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.DENY, "targets": ()},
    ),
    Case(
        "deny without auto unpublish strips the properties",
        (DENY,),
        {"action": Action.DENY, "unpublish": False, "strip_properties": True},
        settings=NO_AUTO_UNPUBLISH,
    ),
    # --- unclear approvals are reported and ignored
    Case(
        "approval value neither approve nor deny",
        (("PromotionApproval", "Maybe"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        problem_has="neither Approve nor Deny",
    ),
    Case(
        "'Approval' does not contain 'approve'",
        (("PromotionApproval", "Approval"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
    ),
    Case(
        "Approve and Deny both set",
        (APPROVE, DENY, TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        problem_has="both Approve and Deny",
    ),
    Case(
        "one value saying approve and deny",
        (("PromotionApproval", "Approve? Denied"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        problem_has="both approve and deny",
    ),
    Case(
        "'Disapprove' is not an approval",
        (("PromotionApproval", "Disapprove"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        problem_has="refusal",
    ),
    Case(
        "'not approved' is not an approval",
        (("PromotionApproval", "not approved"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
    ),
    Case(
        "an unclear value beside a clear one: the clear one counts",
        (APPROVE, ("PromotionApproval", "?"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE},
        problem_has="neither",
    ),
    Case("no approval value", (TEST_OVERWRITE, EVERYONE), {"action": Action.IGNORE}, reason_has="no value"),
    # --- where to
    Case(
        "approved without server",
        (APPROVE, EVERYONE),
        {"action": Action.IGNORE},
        reason_has="PromoteToServer has no usable value",
    ),
    Case(
        "approved without stream cannot promote",
        (APPROVE, TEST_OVERWRITE),
        {"action": Action.IGNORE},
        reason_has="nowhere to promote",
    ),
    Case("approved with neither", (APPROVE,), {"action": Action.IGNORE}, reason_has="neither"),
    Case(
        "unknown alias only",
        (APPROVE, ("PromoteToServer", "qa - Overwrite"), EVERYONE),
        {"action": Action.IGNORE},
        problem_has="unknown site",
    ),
    Case(
        "unknown alias beside a known one is reported, not fatal",
        (APPROVE, ("PromoteToServer", "qa - Overwrite"), TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE, "targets": (overwrite("Everyone"),)},
        problem_has="unknown site",
    ),
    Case(
        "value without a dash",
        (APPROVE, ("PromoteToServer", "test Overwrite"), EVERYONE),
        {"action": Action.IGNORE},
        problem_has="must look like",
    ),
    Case(
        "unknown mode",
        (APPROVE, ("PromoteToServer", "test - Sideways"), EVERYONE),
        {"action": Action.IGNORE},
        problem_has="Overwrite or Duplicate",
    ),
    Case(
        "alias and mode are case-insensitive",
        (APPROVE, ("PromoteToServer", "TEST - overWRITE"), EVERYONE),
        {"targets": (overwrite("Everyone"),)},
    ),
    Case(
        "no spaces around the dash, as the original accepted",
        (APPROVE, ("PromoteToServer", "test-Duplicate"), EVERYONE),
        {"targets": (Target("test", Mode.DUPLICATE, ("Everyone",)),)},
    ),
    Case(
        "alias with a hyphen",
        (APPROVE, ("PromoteToServer", "prod-eu - Duplicate"), EVERYONE),
        {"targets": (Target("prod-eu", Mode.DUPLICATE, ("Everyone",)),)},
    ),
    Case(
        "several sites, every stream on each",
        (
            APPROVE,
            TEST_OVERWRITE,
            ("PromoteToServer", "prod - Duplicate"),
            EVERYONE,
            ("PromoteToStream", "Review"),
        ),
        {
            "targets": (
                overwrite("Everyone", "Review"),
                Target("prod", Mode.DUPLICATE, ("Everyone", "Review")),
            )
        },
    ),
    Case(
        "same site twice with one mode is used once",
        (APPROVE, TEST_OVERWRITE, ("PromoteToServer", "Test - OVERWRITE"), EVERYONE),
        {"targets": (overwrite("Everyone"),)},
        problem_has="more than once",
    ),
    Case(
        "same site with both modes is left out",
        (
            APPROVE,
            TEST_OVERWRITE,
            ("PromoteToServer", "test - Duplicate"),
            ("PromoteToServer", "prod - Overwrite"),
            EVERYONE,
        ),
        {"targets": (overwrite("Everyone", site="prod"),)},
        problem_has="both Overwrite and Duplicate",
    ),
    Case(
        "streams are kept verbatim and de-duplicated case-insensitively",
        (
            APPROVE,
            TEST_OVERWRITE,
            ("PromoteToStream", "Sales "),
            ("PromoteToStream", "sales "),
            ("PromoteToStream", "Ré'view"),
        ),
        {"targets": (overwrite("Sales ", "Ré'view"),)},
    ),
    Case(
        "a blank stream value is reported",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromoteToStream", "  ")),
        {"targets": (overwrite("Everyone"),)},
        problem_has="empty value",
    ),
    # --- versioning
    Case(
        "versioning asked and enabled",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionS3Versioning", "True")),
        {"version": True},
        settings=VERSIONING_ON,
    ),
    Case(
        "auto_version_all versions without the property",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"version": True},
        settings={"versioning": VersioningSettings(enabled=True, bucket="b", auto_version_all=True)},
    ),
    Case(
        "versioning asked but disabled",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionS3Versioning", "True")),
        {"action": Action.PROMOTE, "version": False},
        problem_has="versioning is disabled",
    ),
    Case(
        "versioning value other than True",
        (APPROVE, TEST_OVERWRITE, EVERYONE, ("PromotionS3Versioning", "yes")),
        {"version": False},
        settings=VERSIONING_ON,
        problem_has="must be True",
    ),
    # --- triggers
    Case(
        "a reload never acts on an approval",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        trigger="reloaded",
        reason_has="reload promotes only",
    ),
    Case("a reload never acts on a denial", (DENY,), {"action": Action.IGNORE}, trigger="reloaded"),
    # --- promote on reload
    Case(
        "PromoteOnReload tags the app",
        (RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.TAG_FOR_RELOAD, "add_tag": True, "unpublish": False, "strip_properties": False},
        settings=RELOAD_ON,
    ),
    Case(
        "a tagged app ignores updates",
        (RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.IGNORE},
        settings=RELOAD_ON,
        app={"tagged": True},
        reason_has="promoted on each reload",
    ),
    Case(
        "a tagged app is promoted on reload without approval",
        (RELOAD, TEST_OVERWRITE, EVERYONE),
        {
            "action": Action.PROMOTE_ON_RELOAD,
            "targets": (overwrite("Everyone"),),
            "add_tag": False,
            "unpublish": False,
            "strip_properties": False,
            "notify": False,
        },
        trigger="reloaded",
        settings={**RELOAD_ON, "email": EmailSettings(enabled=True)},
        app={"tagged": True},
    ),
    Case(
        "an untagged app with PromoteOnReload is promoted on reload and tagged",
        (RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE_ON_RELOAD, "add_tag": True},
        trigger="reloaded",
        settings=RELOAD_ON,
    ),
    Case(
        "reload promotion is versioned when asked",
        (RELOAD, TEST_OVERWRITE, EVERYONE, ("PromotionS3Versioning", "true")),
        {"action": Action.PROMOTE_ON_RELOAD, "version": True},
        trigger="reloaded",
        settings={**RELOAD_ON, **VERSIONING_ON},
    ),
    Case(
        "PromoteOnReload without a stream is not tagged",
        (RELOAD, TEST_OVERWRITE),
        {"action": Action.IGNORE},
        settings=RELOAD_ON,
        reason_has="not promoted on reload",
    ),
    Case(
        "PromoteOnReload without a stream is not promoted on reload",
        (RELOAD, TEST_OVERWRITE),
        {"action": Action.IGNORE},
        trigger="reloaded",
        settings=RELOAD_ON,
    ),
    Case(
        "PromoteOnReload other than True is the approval path",
        (("PromoteOnReload", "Yes"), APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE},
        settings=RELOAD_ON,
    ),
    Case(
        "PromoteOnReload wins over an approval",
        (APPROVE, RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.TAG_FOR_RELOAD},
        settings=RELOAD_ON,
        problem_has="ignored while PromoteOnReload",
    ),
    Case(
        "PromoteOnReload with the feature off: the approval path",
        (APPROVE, RELOAD, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE, "add_tag": False},
        problem_has="promote-on-reload is disabled",
    ),
    Case(
        "the tag goes when the property goes",
        (("Region", "EMEA"), TEST_OVERWRITE),
        {"action": Action.UNTAG, "remove_tag": True},
        settings=RELOAD_ON,
        app={"tagged": True},
    ),
    Case(
        "the tag goes beside an approval",
        (APPROVE, TEST_OVERWRITE, EVERYONE),
        {"action": Action.PROMOTE, "remove_tag": True},
        settings=RELOAD_ON,
        app={"tagged": True},
        reason_has="tag 'AutoPromoteOnReload' removed",
    ),
    Case(
        "the tag is left alone while the feature is off",
        (TEST_OVERWRITE,),
        {"action": Action.IGNORE, "remove_tag": False},
        app={"tagged": True},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_table(case: Case) -> None:
    """Each row: the decision's fields, reason and problems are what the rule says."""
    app = make_app(*case.props, **case.app)

    decision = decide(app, case.trigger, make_settings(**case.settings))

    actual = {name: getattr(decision, name) for name in case.expect}
    assert case.expect == actual, decision
    assert case.reason_has in decision.reason
    assert not case.problem_has or any(case.problem_has in p for p in decision.problems), decision.problems


def test_approver_is_whoever_set_the_approval_value() -> None:
    """The approver is the PromotionApproval value's modifiedByUserName, not the app's last modifier."""
    app = make_app(prop("PromotionApproval", "Approve", by="DEV\\boss"), TEST_OVERWRITE, EVERYONE)

    decision = decide(app, "updated", make_settings())

    assert (decision.approver, app.modified_by_user_name) == ("DEV\\boss", "DEV\\someone")


def test_approver_is_never_the_app_modifier() -> None:
    """Without the value's own modifier the approver is unknown (so authorization refuses): the app's
    modifiedByUserName names whoever touched the app last, ours included, not who approved."""
    app = make_app(prop("PromotionApproval", "Approve", by=None), TEST_OVERWRITE, EVERYONE)

    assert decide(app, "updated", make_settings()).approver is None


def test_hostile_values_are_reported_quoted_and_cut() -> None:
    """A value with line breaks and markup reaches a problem only escaped and at most ~60 characters."""
    hostile = "Maybe\r\nBcc: x@evil.example <script>" + "A" * 500
    app = make_app(("PromotionApproval", hostile), ("PromoteToServer", "\n - Overwrite"), EVERYONE)

    decision = decide(app, "updated", make_settings())

    assert decision.action == Action.IGNORE
    assert all("\n" not in p and "\r" not in p and len(p) < 200 for p in decision.problems), decision.problems
    assert show(hostile) in decision.problems[0]


def test_decision_lists_every_stream_once() -> None:
    """Decision.streams is the union of the targets' streams in the order given."""
    app = make_app(APPROVE, TEST_OVERWRITE, ("PromoteToServer", "prod - Duplicate"), EVERYONE,
                   ("PromoteToStream", "Review"))  # fmt: skip

    decision = decide(app, "updated", make_settings())

    assert (decision.streams, decision.promotes) == (("Everyone", "Review"), True)


def test_decision_is_frozen() -> None:
    """A decision cannot be changed after it is made."""
    decision = Decision(Action.IGNORE, "x", "updated")

    with pytest.raises(AttributeError):
        decision.action = Action.PROMOTE  # type: ignore[misc]


def test_custom_property_names_come_from_settings() -> None:
    """Renamed properties in the QMC work when the settings name them."""
    from promoter.settings import PropertyNames

    names = PropertyNames(promotion_approval="Freigabe", promote_to_server="Ziel", promote_to_stream="Stream")
    app = make_app(("Freigabe", "approve"), ("Ziel", "test - Overwrite"), ("Stream", "Alle"), APPROVE)

    decision = decide(app, "updated", make_settings(properties=names))

    assert (Action.PROMOTE, (overwrite("Alle"),)) == (decision.action, decision.targets)


# --- the publish alert -----------------------------------------------------------------------

EMAIL_ON = {
    "email": EmailSettings(
        enabled=True, stream_approvers={"00000000-0000-0000-0000-000000000064": ["m@x.test"]}
    )
}


@pytest.mark.parametrize(
    ("stream_props", "settings", "expected", "reason_part"),
    [
        ((("EmailAlertOnPublishTo", "True"),), EMAIL_ON, Action.ALERT_PUBLISH, "approvers are alerted"),
        ((("EmailAlertOnPublishTo", "anything"),), EMAIL_ON, Action.ALERT_PUBLISH, "alerted"),
        ((), EMAIL_ON, Action.IGNORE, "does not have EmailAlertOnPublishTo"),
        ((("EmailAlertOnPublishTo", "True"),), {}, Action.IGNORE, "email alerts are disabled"),
        (
            (("EmailAlertOnPublishTo", "True"),),
            {"email": EmailSettings(enabled=True)},
            Action.IGNORE,
            "no approver addresses",
        ),
    ],
    ids=["property True", "property present", "no property", "email off", "no addresses"],
)
def test_publish_alert(
    stream_props: tuple[tuple[str, str], ...], settings: dict[str, Any], expected: Action, reason_part: str
) -> None:
    """A publish alerts the stream's approvers when the stream has EmailAlertOnPublishTo (as the original)."""
    app = make_app()

    decision = decide(app, "published", make_settings(**settings), stream=make_stream(*stream_props))

    assert expected == decision.action
    assert reason_part in decision.reason


def test_publish_never_promotes_an_approved_app() -> None:
    """The publish path only alerts, even for an app that carries an approval."""
    app = make_app(APPROVE, TEST_OVERWRITE, EVERYONE)
    stream = make_stream(("EmailAlertOnPublishTo", "True"))

    decision = decide(app, "published", make_settings(**EMAIL_ON), stream=stream)

    assert (decision.action, decision.targets, decision.promotes) == (Action.ALERT_PUBLISH, (), False)


def test_publish_alert_needs_the_apps_own_stream() -> None:
    """Without the app's stream (not read, or another stream) nothing is sent."""
    app = make_app()
    other = make_stream(("EmailAlertOnPublishTo", "True"), stream_id=uuid4())

    decisions = [decide(app, "published", make_settings(**EMAIL_ON), stream=s) for s in (None, other)]

    assert [d.action for d in decisions] == [Action.IGNORE, Action.IGNORE]


# --- relevance and the approval key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "tagged", "expected"),
    [((), False, False), ((("Region", "EMEA"),), False, False), ((RELOAD,), False, True),
     ((("PromotionUnpublish", "x"),), False, True), ((), True, True)],
)  # fmt: skip
def test_relevance(props: tuple[tuple[str, str], ...], tagged: bool, expected: bool) -> None:
    """An app is relevant when it carries any promotion property or the reload tag."""
    assert expected == is_relevant(make_app(*props, tagged=tagged), make_settings())


def test_approval_key_ignores_our_own_writes() -> None:
    """Stripping, tagging or describing the app changes its modifiedDate, never the approval key."""
    approval = prop("PromotionApproval", "Approve")
    app = make_app(approval, TEST_OVERWRITE, EVERYONE)
    touched = app.model_copy(
        update={
            "modified_date": WHEN + timedelta(days=1),
            "description": "promoted",
            "modified_by_user_name": "x",
        }
    )

    assert approval_key(app, make_settings()) == approval_key(touched, make_settings())


def test_approval_key_changes_when_the_approval_is_set_again() -> None:
    """A new approval value (new id, or the same id with a new modifiedDate) is a new approval."""
    settings = make_settings()
    first = prop("PromotionApproval", "Approve")
    again = first.model_copy(update={"modified_date": WHEN + timedelta(seconds=1)})
    app_id = uuid4()

    keys = {
        approval_key(make_app(p, app_id=app_id), settings)
        for p in (first, again, prop("PromotionApproval", "Approve"))
    }

    assert len(keys) == 3


def test_reload_and_publish_keys() -> None:
    """A reload is identified by lastReloadTime, a publish by publishTime and stream, per app."""
    settings = make_settings()
    app = make_app(RELOAD, TEST_OVERWRITE, EVERYONE)
    later = app.model_copy(update={"last_reload_time": WHEN + timedelta(minutes=5)})

    reload_keys = {approval_key(a, settings, "reloaded") for a in (app, later)}
    publish_key = approval_key(app, settings, "published")

    assert len(reload_keys) == 2
    assert all(k.startswith(f"reload:{app.id}:") for k in reload_keys)
    assert publish_key.startswith(f"publish:{app.id}:") and publish_key.endswith(str(app.stream.id))  # type: ignore[union-attr]


def test_approval_key_is_short_even_with_many_values() -> None:
    """Many approval values still make a key that fits the ledger (at most 200 characters)."""
    app = make_app(*[prop("PromotionApproval", "Approve") for _ in range(20)])

    key = approval_key(app, make_settings())

    assert len(key) <= 200 and key.startswith(f"approval:{app.id}:")


# --- who asked, and whether the targets are still theirs --------------------------------------

LATER = WHEN + timedelta(minutes=5)


def test_the_approver_is_who_set_the_value_that_approves() -> None:
    """Beside an unclear value set later by someone else, the approver is the setter of the Approve value."""
    app = make_app(
        prop("PromotionApproval", "Maybe", by="DEV\\rep", modified=LATER),
        prop("PromotionApproval", "Approve", by="DEV\\boss"),
        TEST_OVERWRITE,
        EVERYONE,
    )

    decision = decide(app, "updated", make_settings())

    assert (decision.action, decision.approver, decision.request) == (Action.PROMOTE, "DEV\\boss", "approval")


def test_of_several_approve_values_the_one_set_last_names_the_approver() -> None:
    """A second Approve added later by the rep makes the rep the approver (whom authorization then checks)."""
    app = make_app(
        prop("PromotionApproval", "Approve", by="DEV\\boss"),
        prop("PromotionApproval", "Approved", by="DEV\\rep", modified=LATER),
        TEST_OVERWRITE,
        EVERYONE,
    )

    assert decide(app, "updated", make_settings()).approver == "DEV\\rep"


def test_the_denier_is_who_set_the_deny_value() -> None:
    """A denial names the setter of the Deny value, and asks for authorization as a denial."""
    app = make_app(prop("PromotionApproval", "Deny", by="DEV\\boss"), prop("Region", "EMEA", by="DEV\\rep"))

    decision = decide(app, "updated", make_settings())

    assert (decision.action, decision.approver, decision.request) == (Action.DENY, "DEV\\boss", "denial")
    assert decision.needs_authorization


@pytest.mark.parametrize(
    "late",
    [
        prop("PromoteToServer", "prod - Overwrite", by="DEV\\rep", modified=LATER),
        prop("PromoteToStream", "Review", by="DEV\\rep", modified=LATER),
        prop("PromoteToServer", "prod - Overwrite", by="DEV\\rep", modified=None),  # type: ignore[arg-type]
    ],
    ids=["server added later", "stream added later", "server with no time"],
)
def test_targets_someone_else_changed_after_the_approval_make_it_outdated(late: Any) -> None:
    """The manager approved; the rep then added a target: nothing is promoted, the owner is told, and the
    reason names what changed and by whom."""
    approval = prop("PromotionApproval", "Approve", by="DEV\\manager")
    app = make_app(approval, prop(*TEST_OVERWRITE, by="DEV\\rep"), prop(*EVERYONE, by="DEV\\rep"), late)

    decision = decide(app, "updated", make_settings(email=EmailSettings(enabled=True)))

    assert (decision.action, decision.targets, decision.promotes) == (Action.OUTDATED, (), False)
    assert (decision.approver, decision.notify, decision.needs_authorization) == ("DEV\\manager", True, False)
    assert f"{late.definition.name} {show(late.value)} by DEV\\rep" in decision.reason
    assert "until PromotionApproval is set again" in decision.reason


def test_only_targets_someone_else_changed_after_the_approval_outdate_it() -> None:
    """Targets the rep set before the manager approved (the original's workflow), and targets the approver
    changed later themselves (case aside), are approved; one the rep changed later is not. A denial uses
    no targets, so later target changes never hold it up."""
    rep_before = (prop(*TEST_OVERWRITE, by="DEV\\rep"), prop(*EVERYONE, by="DEV\\rep"))
    approve_later = prop("PromotionApproval", "Approve", by="DEV\\manager", modified=LATER)
    approve = prop("PromotionApproval", "Approve", by="DEV\\Manager")
    own_later = (prop(*TEST_OVERWRITE, by="dev\\manager", modified=LATER), prop(*EVERYONE, by="DEV\\manager"))
    rep_later = prop("PromoteToStream", "Review", by="DEV\\rep", modified=LATER)
    deny = prop("PromotionApproval", "Deny", by="DEV\\manager")
    apps = {
        "set before": make_app(*rep_before, approve_later),
        "own, later": make_app(approve, *own_later),
        "other, later": make_app(approve, *own_later, rep_later),
        "deny": make_app(deny, *rep_before, rep_later),
    }

    actions = {name: decide(app, "updated", make_settings()).action for name, app in apps.items()}

    assert actions == {
        "set before": Action.PROMOTE,
        "own, later": Action.PROMOTE,
        "other, later": Action.OUTDATED,
        "deny": Action.DENY,
    }


@pytest.mark.parametrize(("trigger", "tagged"), [("updated", False), ("updated", True), ("reloaded", True)])
def test_targets_changed_after_promote_on_reload_was_set_make_it_outdated(
    trigger: ChangeKind, tagged: bool
) -> None:
    """The manager set PromoteOnReload; the rep then added prod: neither tagged nor promoted on reload."""
    app = make_app(
        prop(*RELOAD, by="DEV\\manager"),
        prop(*TEST_OVERWRITE, by="DEV\\manager"),
        prop(*EVERYONE, by="DEV\\manager"),
        prop("PromoteToServer", "prod - Overwrite", by="DEV\\rep", modified=LATER),
        tagged=tagged,
    )

    decision = decide(app, trigger, make_settings(**RELOAD_ON))

    assert (decision.action, decision.add_tag, decision.targets) == (Action.OUTDATED, False, ())
    assert (decision.approver, decision.request) == ("DEV\\manager", "promotion on reload")
    assert "until PromoteOnReload is set again" in decision.reason


def test_promote_on_reload_names_who_set_it_and_needs_authorization() -> None:
    """Tagging and promoting on reload both act on the say-so of whoever set PromoteOnReload True."""
    app = make_app(
        prop("PromoteOnReload", "False", by="DEV\\other", modified=LATER),
        prop(*RELOAD, by="DEV\\manager"),
        TEST_OVERWRITE,
        EVERYONE,
    )

    decisions = [decide(app, trigger, make_settings(**RELOAD_ON)) for trigger in ("updated", "reloaded")]

    assert [d.action for d in decisions] == [Action.TAG_FOR_RELOAD, Action.PROMOTE_ON_RELOAD]
    assert [(d.approver, d.request, d.needs_authorization) for d in decisions] == [
        ("DEV\\manager", "promotion on reload", True)
    ] * 2


def test_a_refused_promotion_on_reload_is_told_once_per_setting_not_per_reload() -> None:
    """The notice key of a promotion on reload is the same for every reload and for tagging; it changes
    when its properties are set again. An approval's notice key is the request's own key."""
    settings = make_settings(**RELOAD_ON)
    app = make_app(RELOAD, TEST_OVERWRITE, EVERYONE)
    reloaded = app.model_copy(update={"last_reload_time": LATER, "tags": make_app(tagged=True).tags})
    changed = make_app(RELOAD, TEST_OVERWRITE, prop("PromoteToStream", "Review"), app_id=app.id)

    def key(a: Any, trigger: ChangeKind) -> str:
        return notice_key(a, decide(a, trigger, settings), approval_key(a, settings, trigger), settings)

    assert key(app, "updated") == key(app, "reloaded") == key(reloaded, "reloaded")
    assert key(changed, "reloaded") != key(app, "reloaded")
    approved = make_app(APPROVE, TEST_OVERWRITE, EVERYONE)
    assert key(approved, "updated") == approval_key(approved, settings)
