"""Properties of the promotion rules that hold for any custom property values, checked with hypothesis."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.approval import Action, approval_key, decide
from promoter.notifications import ChangeKind
from promoter.settings import EmailSettings, ReloadSettings, UnpublishSettings, VersioningSettings
from tests.unit.factories import make_app, make_settings, make_stream, prop

OUR_NAMES = (
    "PromotionApproval",
    "PromoteToServer",
    "PromoteToStream",
    "PromotionS3Versioning",
    "PromotionUnpublish",
    "PromoteOnReload",
)
# Values that exercise the rules (and their near misses) mixed with arbitrary text.
INTERESTING = st.sampled_from(
    [
        "Approve", "approved", "Deny", "denied", "Disapprove", "True", "true ", "False", "",
        "test - Overwrite", "prod - Duplicate", "prod-eu - overwrite", "test-Duplicate", "qa - Overwrite",
        "test - Sideways", "test", " - ", "-", "Everyone", "Sales", "Ré'view\n",
    ]
)  # fmt: skip
VALUES = st.one_of(INTERESTING, st.text(max_size=40))
PROPS = st.lists(st.tuples(st.sampled_from((*OUR_NAMES, "Region")), VALUES), max_size=8)
TRIGGERS = st.sampled_from(["updated", "reloaded", "published"])
# Settings are built once per combination: building one per example would dominate the run time.
SETTINGS = st.sampled_from(
    [
        make_settings(
            promote_on_reload=ReloadSettings(enabled=reload),
            unpublish=UnpublishSettings(auto=auto),
            versioning=VersioningSettings(enabled=versioning, bucket="b"),
            email=EmailSettings(enabled=email, stream_approvers={str(make_stream().id): ["a@b.test"]}),
        )
        for reload, auto, versioning, email in itertools.product((False, True), repeat=4)
    ]
)


def _approval_values(props: list[tuple[str, str]]) -> list[str]:
    return [value.casefold() for name, value in props if name == "PromotionApproval"]


@settings(max_examples=300, deadline=None)
@given(props=PROPS, trigger=TRIGGERS, config=SETTINGS, published=st.booleans(), tagged=st.booleans())
def test_decide_never_raises_and_promotes_only_on_approval_or_reload(
    props: list[tuple[str, str]], trigger: ChangeKind, config: Any, published: bool, tagged: bool
) -> None:
    """Whatever the values, decide() returns; PROMOTE needs an approval, PROMOTE_ON_RELOAD a reload."""
    app = make_app(*props, published=published, tagged=tagged)

    decision = decide(app, trigger, config, stream=make_stream(("EmailAlertOnPublishTo", "True")))

    assert isinstance(decision.reason, str) and decision.reason
    if decision.action is Action.PROMOTE:
        assert trigger == "updated"
        assert any("approve" in v for v in _approval_values(props))
    if decision.action is Action.PROMOTE_ON_RELOAD:
        assert trigger == "reloaded"
        assert config.promote_on_reload.enabled
        assert ("PromoteOnReload", "True") in [(n, v.strip().title()) for n, v in props]
    if decision.promotes:
        assert published and decision.targets and all(t.streams for t in decision.targets)
        assert set(t.site for t in decision.targets) <= set(config.target_sites)
    else:
        assert decision.targets == () or decision.action is Action.TAG_FOR_RELOAD


@settings(max_examples=200, deadline=None)
@given(props=PROPS, trigger=TRIGGERS, config=SETTINGS)
def test_a_denial_never_promotes(props: list[tuple[str, str]], trigger: ChangeKind, config: Any) -> None:
    """An app whose approval says Deny is never promoted through the approval path."""
    app = make_app(("PromotionApproval", "Deny"), *props)

    decision = decide(app, trigger, config)

    assert decision.action is not Action.PROMOTE


@settings(max_examples=200, deadline=None)
@given(props=PROPS, config=SETTINGS)
def test_nothing_is_promoted_without_an_approval_value(props: list[tuple[str, str]], config: Any) -> None:
    """Without PromotionApproval, only a reload of a PromoteOnReload app promotes."""
    props = [(n, v) for n, v in props if n != "PromotionApproval"]
    app = make_app(*props)

    decisions = {trigger: decide(app, trigger, config) for trigger in ("updated", "reloaded", "published")}

    assert not decisions["updated"].promotes and not decisions["published"].promotes
    assert decisions["reloaded"].action in (Action.PROMOTE_ON_RELOAD, Action.IGNORE, Action.UNTAG)


@settings(max_examples=200, deadline=None)
@given(props=PROPS, shift=st.integers(min_value=1, max_value=10**6), description=st.text(max_size=20))
def test_approval_key_survives_our_own_writes(
    props: list[tuple[str, str]], shift: int, description: str
) -> None:
    """The key does not change when the app's modifiedDate, modifier or description change."""
    config = make_settings()
    app = make_app(("PromotionApproval", "Approve"), *props)
    touched = app.model_copy(
        update={
            "modified_date": app.modified_date + timedelta(seconds=shift),  # type: ignore[operator]
            "modified_by_user_name": "INTERNAL\\sa_api",
            "description": description,
        }
    )

    assert approval_key(touched, config) == approval_key(app, config)


@settings(max_examples=200, deadline=None)
@given(props=PROPS, shift=st.integers(min_value=1, max_value=10**6), new_id=st.booleans())
def test_approval_key_changes_when_the_approval_is_set_again(
    props: list[tuple[str, str]], shift: int, new_id: bool
) -> None:
    """Setting the approval again (a new value id, or a new modifiedDate on it) gives a new key."""
    config = make_settings()
    approval = prop("PromotionApproval", "Approve", modified=datetime(2026, 1, 1, tzinfo=UTC))
    props = [(n, v) for n, v in props if n != "PromotionApproval"]
    app = make_app(approval, *props)
    again = (
        prop("PromotionApproval", "Approve", modified=approval.modified_date)  # type: ignore[arg-type]
        if new_id
        else approval.model_copy(
            update={"modified_date": approval.modified_date + timedelta(milliseconds=shift)}
        )  # type: ignore[operator]
    )
    reset = app.model_copy(
        update={"custom_properties": [again if cp is approval else cp for cp in app.custom_properties]}
    )

    assert approval_key(reset, config) != approval_key(app, config)


PEOPLE = st.sampled_from(["DEV\\manager", "DEV\\rep", "dev\\MANAGER", "INTERNAL\\sa_api"])
SET_VALUES = st.lists(
    st.tuples(st.sampled_from((*OUR_NAMES, "Region")), VALUES, PEOPLE, st.integers(0, 3)), max_size=8
)
WHEN_SET = datetime(2026, 5, 1, tzinfo=UTC)


# A request that promotes as it stands: the deciding value and targets, all set by the manager.
ASKED = st.sampled_from([("PromotionApproval", "Approve"), ("PromoteOnReload", "True")])


@settings(max_examples=300, deadline=None)
@given(
    asked=ASKED,
    props=SET_VALUES,
    late_name=st.sampled_from(["PromoteToServer", "PromoteToStream"]),
    late_value=INTERESTING,
    trigger=TRIGGERS,
    config=SETTINGS,
    tagged=st.booleans(),
)
def test_a_target_someone_else_set_after_the_deciding_value_never_promotes(
    asked: tuple[str, str],
    props: list[tuple[str, str, str, int]],
    late_name: str,
    late_value: str,
    trigger: ChangeKind,
    config: Any,
    tagged: bool,
) -> None:
    """Whatever else the app carries, a target value set by an account other than the deciding value's
    setter, later than every other value, neither promotes nor tags the app."""
    request = [("PromoteToServer", "test - Overwrite"), ("PromoteToStream", "Everyone"), asked]
    values = [prop(n, v, by="DEV\\manager", modified=WHEN_SET) for n, v in request]
    values += [prop(n, v, by=who, modified=WHEN_SET + timedelta(minutes=m)) for n, v, who, m in props]
    late = prop(late_name, late_value, by="DEV\\intruder", modified=WHEN_SET + timedelta(hours=1))
    app = make_app(*values, late, tagged=tagged)

    decision = decide(app, trigger, config, stream=make_stream(("EmailAlertOnPublishTo", "True")))

    assert not decision.promotes
    assert decision.action is not Action.TAG_FOR_RELOAD


@settings(max_examples=300, deadline=None)
@given(props=SET_VALUES, config=SETTINGS)
def test_the_approver_is_always_the_setter_of_a_value_that_says_so(
    props: list[tuple[str, str, str, int]], config: Any
) -> None:
    """An approval's approver set a PromotionApproval value reading as Approve, a denial's one reading as
    Deny, a promotion on reload's a PromoteOnReload True; never anyone else."""
    values = [prop(n, v, by=who, modified=WHEN_SET + timedelta(minutes=m)) for n, v, who, m in props]
    app = make_app(*values)

    def setters(name: str, reads: Any) -> set[str | None]:
        return {
            v.modified_by_user_name for v in app.custom_property_values(name) if reads(v.value.casefold())
        }

    for trigger in ("updated", "reloaded"):
        decision = decide(app, trigger, config)
        if decision.action is Action.PROMOTE:
            assert decision.approver in setters("PromotionApproval", lambda t: "approve" in t)
        if decision.action is Action.DENY:
            assert decision.approver in setters("PromotionApproval", lambda t: "den" in t)
        if decision.action in (Action.PROMOTE_ON_RELOAD, Action.TAG_FOR_RELOAD):
            assert decision.approver in setters("PromoteOnReload", lambda t: t.strip() == "true")
