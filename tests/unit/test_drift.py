"""The drift guard's judgement: a hand edit on a target holds the site, a scheduled reload does not."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from promoter.drift import judge_drift
from promoter.planning import KnownTarget
from promoter.qrs.models import App, StreamCondensed
from tests.unit.factories import OWNER, WHEN

EVERYONE = StreamCondensed(id=UUID(int=200), name="Everyone")
PLACED = KnownTarget(EVERYONE.id, "Everyone", UUID(int=300), modified_date=WHEN, file_size=1000)


def target(*, modified: timedelta, reloaded: timedelta | None = None, size: int = 1000) -> App:
    """The target app as read now: modified (and reloaded) that long after qs-promoter placed it."""
    return App(
        id=PLACED.app_id,
        name="Sales",
        owner=OWNER,
        published=True,
        stream=EVERYONE,
        file_size=size,
        modified_date=WHEN + modified,
        last_reload_time=WHEN + reloaded if reloaded is not None else None,
        modified_by_user_name="ACME\\admin",
    )


def test_an_app_as_it_was_placed_goes_ahead() -> None:
    """Nothing changed since the placement: no verdict to give."""
    assert judge_drift(PLACED, target(modified=timedelta(0)), "hold").verdict == "none"


def test_a_hand_edit_holds_and_names_who_and_when() -> None:
    """Modified a day later by an admin, no reload: held, and the reason says by whom."""
    verdict = judge_drift(PLACED, target(modified=timedelta(days=1)), "hold")

    assert verdict.verdict == "held"
    assert "ACME\\admin" in verdict.reason


def test_a_reload_on_the_target_is_not_a_hand_edit() -> None:
    """Reloaded overnight (new data, a new size, saved a few seconds after the reload): not held."""
    reloaded = target(modified=timedelta(hours=8, seconds=20), reloaded=timedelta(hours=8), size=5000)

    assert judge_drift(PLACED, reloaded, "hold").verdict == "none"


def test_an_edit_after_a_reload_is_still_drift() -> None:
    """Reloaded overnight, then edited by hand the next afternoon: held."""
    edited = target(modified=timedelta(hours=30), reloaded=timedelta(hours=8))

    assert judge_drift(PLACED, edited, "hold").verdict == "held"


def test_warn_and_force_go_ahead_with_a_reason() -> None:
    """Under warn, or with force, the hand-edited app is replaced, and the reason says so."""
    edited = target(modified=timedelta(days=1))

    assert judge_drift(PLACED, edited, "warn").verdict == "warn"
    assert "force" in judge_drift(PLACED, edited, "hold", force=True).reason
    assert judge_drift(PLACED, edited, "ignore").verdict == "none"
