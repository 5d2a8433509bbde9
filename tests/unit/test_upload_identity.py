"""Which app with our temporary upload name is our upload: the account, the creation time, the size."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from promoter.qrs.client import UPLOAD_CLOCK_SKEW, not_our_upload
from promoter.qrs.models import App, UserCondensed
from tests.unit.factories import WHEN

SERVICE = "INTERNAL\\sa_api"
SIZE = 65_536


def uploaded(
    *, directory: str = "INTERNAL", user_id: str = "sa_api", after: timedelta = timedelta(0), size: int = SIZE
) -> App:
    """An app called like our upload, created ``after`` the upload began."""
    owner = UserCondensed(id=uuid4(), user_directory=directory, user_id=user_id)
    return App(
        id=uuid4(), name="Budget [qs-promoter x]", owner=owner, created_date=WHEN + after, file_size=size
    )


@pytest.mark.parametrize(
    "app",
    [
        uploaded(),
        uploaded(directory="internal", user_id="SA_API"),  # QRS compares accounts case-insensitively
        uploaded(after=-UPLOAD_CLOCK_SKEW),  # the site's clock may lag ours by that much
        uploaded(after=timedelta(hours=5)),  # a later attempt of the same request
    ],
)
def test_our_upload_is_recognised(app: App) -> None:
    """Owned by the service account, created after the upload began (within the clock skew), our size."""
    assert not_our_upload(app, uploader=SERVICE, since=WHEN, size=SIZE) is None


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        (uploaded(directory="ACME", user_id="mallory"), "owned by 'ACME\\\\mallory'"),
        (uploaded(after=-UPLOAD_CLOCK_SKEW - timedelta(milliseconds=1)), "before the upload began"),
        (uploaded().model_copy(update={"created_date": None}), "at an unknown time"),
        (uploaded(size=SIZE + 1), f"{SIZE + 1} bytes"),
    ],
)
def test_any_other_app_with_the_name_is_not_ours(app: App, reason: str) -> None:
    """Another owner, an app from before the upload (beyond the skew), or other bytes: not ours, and
    the reason says which."""
    found = not_our_upload(app, uploader=SERVICE, since=WHEN, size=SIZE)

    assert found is not None and reason in found, found


def test_without_a_size_the_bytes_are_not_compared() -> None:
    """keepdata=false: QRS keeps fewer bytes than were sent, so the size cannot tell."""
    assert not_our_upload(uploaded(size=1), uploader=SERVICE, since=WHEN, size=None) is None
