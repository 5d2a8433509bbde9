"""S3 keys and metadata for app versions: built from the app id, safe for any app name."""

from __future__ import annotations

import pickle
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.errors import VersioningError
from promoter.settings import normalise_s3_prefix
from promoter.versioning import (
    METADATA_VALUE_LIMIT,
    SLUG_LIMIT,
    app_slug,
    metadata_text,
    object_key,
    s3_metadata,
)

APP_ID = uuid.UUID("6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f")
SAFE_KEY = re.compile(r"[A-Za-z0-9._/-]+")
HOSTILE_NAMES = [
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/absolute/path",
    "Sales\r\nX-Amz-Meta: 1",
    "<script>alert(1)</script>",
    "Ventes — Überblick 数据 😀",
    "数据",
    "...",
    "",
    " ",
    "A" * 255,
    "con",
    "a/b/../../c",
    "%2e%2e%2f",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_any_app_name_gives_a_safe_key_inside_the_apps_folder(name: str) -> None:
    """Whatever the name, the key is plain ASCII, starts with prefix + apps/<app id>/, ends in one
    slug file name, and has no "..", backslash or empty segment."""
    key = object_key("qs-promoter/", APP_ID, name)

    folder, _, file_name = key.rpartition("/")

    assert folder == f"qs-promoter/apps/{APP_ID}"
    assert SAFE_KEY.fullmatch(key)
    assert ".." not in key.split("/") and "" not in key.split("/")
    assert file_name.endswith(".qvf") and len(file_name) <= SLUG_LIMIT + 4
    assert not file_name.startswith(".")


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=255))
def test_generated_names_always_give_safe_keys(name: str) -> None:
    """Property: for any text as app name, the key stays inside apps/<app id>/ and is plain ASCII."""
    key = object_key("p/", APP_ID, name)

    assert key.startswith(f"p/apps/{APP_ID}/")
    assert SAFE_KEY.fullmatch(key)
    assert key.count("/") == 3


def test_two_apps_with_the_same_name_get_different_keys() -> None:
    """The key is built from the app id, so two apps called "Sales" never overwrite each other."""
    first, second = uuid.uuid4(), uuid.uuid4()

    assert object_key("x/", first, "Sales") != object_key("x/", second, "Sales")


def test_backup_key_names_the_site_and_the_target_app() -> None:
    """A backup lives under backups/<site>/<target app id>/, with the site alias made safe too."""
    target = uuid.uuid4()

    key = object_key("qs-promoter/", target, "Sales", "backup", site="../prod site")

    assert key == f"qs-promoter/backups/prod-site/{target}/Sales.qvf"


def test_backup_needs_a_site() -> None:
    """A backup key without the site alias is refused."""
    with pytest.raises(ValueError, match="site"):
        object_key("x/", APP_ID, "Sales", "backup")


@pytest.mark.parametrize("app_id", ["../../etc", "not-a-guid", "", "6f0f4d5e/../x"])
def test_app_id_must_be_a_guid(app_id: str) -> None:
    """The id is the key's identity, so anything but a QRS GUID is refused."""
    with pytest.raises(ValueError):
        object_key("x/", app_id, "Sales")


def test_app_ids_are_written_in_lower_case() -> None:
    """An id given in upper case gives the same key as QRS's lower-case form."""
    assert object_key("x/", str(APP_ID).upper(), "Sales") == object_key("x/", APP_ID, "Sales")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("qs-promoter/", "qs-promoter/"), ("a/b", "a/b/"), ("/lead/slash/", "lead/slash/"), ("", "")],
)
def test_prefix_is_normalised_to_a_folder(prefix: str, expected: str) -> None:
    """A prefix becomes "" or "folder/": no leading slash, one trailing slash."""
    assert normalise_s3_prefix(prefix) == expected
    assert object_key(prefix, APP_ID, "x") == f"{expected}apps/{APP_ID}/x.qvf"


@pytest.mark.parametrize("prefix", ["../up/", "a/../b/", "a//b/", "a\\b/", "a/./b", "a\nb/"])
def test_prefix_that_could_escape_or_confuse_is_refused(prefix: str) -> None:
    """ "..", ".", empty segments, backslashes and control characters are refused in a prefix."""
    with pytest.raises(ValueError, match="prefix"):
        normalise_s3_prefix(prefix)


def test_slug_keeps_readable_ascii() -> None:
    """The slug keeps letters, digits, dot, dash and underscore; accents lose their marks; runs collapse."""
    assert app_slug("Sales_KPIs v1.2") == "Sales_KPIs-v1.2"
    assert app_slug("Ventes Überblick 2024 (final).v2") == "Ventes-Uberblick-2024-final-v2"


def test_metadata_is_ascii_and_round_trips() -> None:
    """Non-ASCII metadata values are percent-encoded, and metadata_text gives the original back."""
    metadata = s3_metadata({"App-Name": "Ventes — Überblick 数据 %", "approver": "Zoë"})

    assert all(value.isascii() for value in metadata.values())
    assert set(metadata) == {"app-name", "approver"}
    assert metadata_text(metadata["app-name"]) == "Ventes — Überblick 数据 %"
    assert metadata_text(metadata["approver"]) == "Zoë"


def test_long_metadata_values_are_cut_without_breaking_an_escape() -> None:
    """A 255-character non-ASCII name is cut to the value limit at an escape boundary."""
    value = s3_metadata({"app-name": "数" * 255})["app-name"]

    assert len(value) <= METADATA_VALUE_LIMIT
    assert re.fullmatch(r"(%[0-9A-F]{2})+", value)


def test_metadata_over_the_s3_limit_is_refused() -> None:
    """More metadata than S3 accepts (2 KB) is refused before any upload."""
    with pytest.raises(ValueError, match="metadata"):
        s3_metadata({f"field-{i}": "x" * 200 for i in range(12)})


def test_versioning_error_survives_pickling() -> None:
    """Prefect pickles a failed task's exception: a VersioningError comes back with its code and flag."""
    error = VersioningError(
        "upload", "s3://b/k.qvf", "SlowDown: reduce your request rate", code="SlowDown", transient=True
    )

    back = pickle.loads(pickle.dumps(error))

    assert (type(back), str(back), back.code, back.transient) == (
        VersioningError,
        str(error),
        "SlowDown",
        True,
    )
