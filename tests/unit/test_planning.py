"""Per-site promotion plans: what is replaced, where a fresh copy is published, what is reported."""

from __future__ import annotations

from uuid import UUID, uuid4

from promoter.approval import Mode, Target
from promoter.planning import KnownTarget, Replacement, StreamRef, plan_site
from promoter.qrs.models import StreamCondensed
from tests.unit.factories import streams_by_name, target_app

EVERYONE = StreamCondensed(id=UUID(int=201), name="Everyone")
REVIEW = StreamCondensed(id=UUID(int=202), name="Review")
ARCHIVE = StreamCondensed(id=UUID(int=203), name="Archive")


def ref(stream: StreamCondensed) -> StreamRef:
    return StreamRef(stream.id, stream.name)


def overwrite(*streams: str) -> Target:
    return Target("test", Mode.OVERWRITE, streams)


def test_duplicate_uploads_once_and_copies_for_the_other_streams() -> None:
    """Duplicate: the upload is published to the first stream, server-side copies to the others."""
    target = Target("test", Mode.DUPLICATE, ("Everyone", "Review", "Archive"))

    plan = plan_site(
        target, "Sales", streams_by_name(EVERYONE, REVIEW, ARCHIVE), [target_app("Sales", EVERYONE)]
    )

    assert (plan.replace, plan.publish_upload_to, plan.copy_to) == (
        (),
        ref(EVERYONE),
        (ref(REVIEW), ref(ARCHIVE)),
    )
    assert plan.needs_upload and not plan.upload_is_temporary


def test_missing_streams_are_reported_and_the_rest_promoted() -> None:
    """A stream that does not exist on the site is reported; the existing ones are still served."""
    target = Target("test", Mode.DUPLICATE, ("Nope", "Review"))

    plan = plan_site(target, "Sales", streams_by_name(REVIEW, missing=["Nope"]))

    assert (plan.streams_missing, plan.fresh_streams) == (("Nope",), (ref(REVIEW),))
    assert any("'Nope' does not exist" in n for n in plan.notes)
    assert plan.failure is None, "a site where one requested stream exists is served, not failed"


def test_no_stream_exists_fails_the_site_naming_the_missing_streams() -> None:
    """When none of the streams exist, nothing is uploaded and the site fails, naming the missing streams:
    the approval could not be carried out there, so the source app must stay where it is."""
    for mode in Mode:
        plan = plan_site(Target("prod", mode, ("A", "B")), "Sales", streams_by_name(missing=["A", "B"]))

        assert not plan.needs_upload and plan.streams_missing == ("A", "B")
        assert plan.failure == (
            "none of the requested streams exist on prod ('A', 'B'): nothing was promoted there"
        )


def test_the_failure_shows_each_missing_stream_name_on_one_line() -> None:
    """Stream names are custom property values (user input): the failure quotes each one,
    line breaks and quotes included, so a name cannot forge a line of the email or the log."""
    hostile = "Sales\r\nFailed: nothing 'quoted'"
    plan = plan_site(Target("prod", Mode.DUPLICATE, (hostile,)), "Sales", streams_by_name(missing=[hostile]))

    assert plan.failure is not None and "\n" not in plan.failure and "\r" not in plan.failure
    assert repr(hostile) in plan.failure


def test_first_overwrite_replaces_every_same_name_app_in_the_streams() -> None:
    """First promotion: every published app of that name in a target stream is replaced (original rule)."""
    one, two = target_app("Sales", EVERYONE), target_app("SALES", EVERYONE)
    elsewhere = target_app("Sales", ARCHIVE)  # same name, stream not asked for
    unpublished = target_app("Sales", None)
    other_name = target_app("Sales v2", EVERYONE)

    plan = plan_site(
        overwrite("Everyone"),
        "Sales",
        streams_by_name(EVERYONE),
        [one, two, elsewhere, unpublished, other_name],
    )

    assert plan.replace == (
        Replacement(one.id, ref(EVERYONE), "name"),
        Replacement(two.id, ref(EVERYONE), "name"),
    )
    assert plan.upload_is_temporary and plan.fresh_streams == ()


def test_overwrite_publishes_fresh_where_no_app_matches() -> None:
    """Streams without a matching app get a fresh publish from the same upload that fed the replaces."""
    existing = target_app("Sales", EVERYONE)

    plan = plan_site(
        overwrite("Everyone", "Review", "Archive"),
        "Sales",
        streams_by_name(EVERYONE, REVIEW, ARCHIVE),
        [existing],
    )

    assert [r.app_id for r in plan.replace] == [existing.id]
    assert (plan.publish_upload_to, plan.copy_to) == (ref(REVIEW), (ref(ARCHIVE),))
    assert not plan.upload_is_temporary


def test_remembered_target_is_replaced_and_a_namesake_is_not() -> None:
    """Once the ledger knows which app this source became, only that app is replaced, not namesakes."""
    ours, namesake = target_app("Sales", EVERYONE), target_app("Sales", EVERYONE)
    known = [KnownTarget(EVERYONE.id, "Everyone", ours.id)]

    plan = plan_site(overwrite("Everyone"), "Sales", streams_by_name(EVERYONE), [ours, namesake], known)

    assert plan.replace == (Replacement(ours.id, ref(EVERYONE), "ledger"),)


def test_remembered_target_survives_a_rename_on_the_target() -> None:
    """Identity, not name: a target app renamed on the target site is still the one replaced."""
    ours = target_app("Sales (prod copy)", EVERYONE)

    plan = plan_site(
        overwrite("Everyone"),
        "Sales",
        streams_by_name(EVERYONE),
        [ours],
        [KnownTarget(EVERYONE.id, "E", ours.id)],
    )

    assert [r.app_id for r in plan.replace] == [ours.id]


def test_a_gone_target_gets_a_fresh_copy_never_a_name_match() -> None:
    """If the remembered app was deleted or moved, the stream gets a fresh app and the identity is stale."""
    gone = KnownTarget(EVERYONE.id, "Everyone", uuid4())
    moved_app = target_app("Sales", ARCHIVE)
    moved = KnownTarget(EVERYONE.id, "Everyone", moved_app.id)
    someone_elses = target_app("Sales", EVERYONE)

    plan = plan_site(
        overwrite("Everyone"), "Sales", streams_by_name(EVERYONE), [moved_app, someone_elses], [gone, moved]
    )

    assert (plan.replace, plan.publish_upload_to, plan.stale) == ((), ref(EVERYONE), (gone, moved))
    assert any("is gone" in n for n in plan.notes)


def test_remembered_targets_in_streams_not_asked_for_are_left_alone() -> None:
    """Identities for other streams are neither replaced nor reported stale."""
    kept = KnownTarget(ARCHIVE.id, "Archive", uuid4())

    plan = plan_site(overwrite("Review"), "Sales", streams_by_name(REVIEW), [], [kept])

    assert (plan.replace, plan.stale, plan.publish_upload_to) == ((), (), ref(REVIEW))


def test_stream_names_resolving_to_one_stream_are_served_once() -> None:
    """Two requested names that QRS resolves to the same stream produce one publish."""
    target = Target("test", Mode.DUPLICATE, ("Review", "review"))

    plan = plan_site(target, "Sales", {"Review": REVIEW, "review": REVIEW})

    assert plan.fresh_streams == (ref(REVIEW),)


def test_hostile_app_names_match_only_themselves() -> None:
    """Quotes, backslashes, unicode and control characters in names are compared as plain text."""
    hostile = 'Q1\'25 \\ "Sales" — Ünïcode\n<script>'
    same = target_app(hostile.upper(), EVERYONE)
    almost = target_app(hostile + " ", EVERYONE)

    plan = plan_site(overwrite("Everyone"), hostile, streams_by_name(EVERYONE), [same, almost])

    assert [r.app_id for r in plan.replace] == [same.id]
