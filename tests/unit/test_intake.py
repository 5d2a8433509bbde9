"""Reading a QRS change notification body: exactly what QRS sends gets through, nothing else."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest

from promoter.errors import IntakeError, PromoterError
from promoter.intake import parse_changes
from promoter.qrs.models import ChangeType

# The entry captured from a real QRS (qrs-facts §2.5), as an App update.
CAPTURED: dict[str, Any] = {
    "changeType": 2,
    "objectType": "App",
    "objectID": "a5852393-6d0c-4842-9ddf-3c49b1bd3446",
    "changedProperties": ["modifiedDate", "lastReloadTime"],
    "engineID": "",
    "engineType": "",
    "originatorNodeID": "6b3a6fa8-6f3d-4211-9823-75976a88623d",
    "originatorHostName": "some-host-name.com",
    "originatorContextID": None,
    "createdDate": "2024-11-19T07:37:20.031Z",
    "modifiedDate": "2024-11-19T07:37:20.156Z",
    "schemaPath": "ExternalChangeInfo",
}


def body(*entries: dict[str, Any]) -> bytes:
    return json.dumps(list(entries)).encode()


def test_a_captured_notification_is_read() -> None:
    """The captured QRS body yields one Change with the object id, type and changed properties."""
    (change,) = parse_changes(body(CAPTURED))

    assert (change.change_type, change.object_type, change.object_id) == (
        ChangeType.UPDATE,
        "App",
        UUID("a5852393-6d0c-4842-9ddf-3c49b1bd3446"),
    )
    assert change.changed_properties == ["modifiedDate", "lastReloadTime"]
    assert change.originator_host_name == "some-host-name.com"


def test_several_changes_in_one_post_keep_their_order() -> None:
    """One POST may carry several changes; all are returned in order."""
    second = {**CAPTURED, "objectID": "00000000-0000-0000-0000-000000000002", "changeType": 1}

    changes = parse_changes(body(CAPTURED, second))

    assert [c.change_type for c in changes] == [2, 1]


def test_unknown_fields_and_missing_optional_fields_are_tolerated() -> None:
    """A newer QRS may add keys; only changeType, objectType and objectID are needed."""
    minimal = {"changeType": 3, "objectType": "App", "objectID": CAPTURED["objectID"], "tenantID": "x"}

    (change,) = parse_changes(body(minimal))

    assert (change.change_type, change.changed_properties) == (ChangeType.DELETE, [])


def test_an_empty_array_is_no_changes() -> None:
    """An empty array is valid and holds nothing to do."""
    assert parse_changes(b"[]") == []


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b"", "empty body"),
        (b"  \n", "empty body"),
        (b"not json", "Invalid JSON"),
        (b"\xff\xfe[]", "Invalid JSON"),
        (b"[", "Invalid JSON"),
        (json.dumps(CAPTURED).encode(), "valid array"),
        (b"[1]", "0: Input should be an object"),
        (body({**CAPTURED, "changeType": "2"}), "0.changeType"),
        (body({**CAPTURED, "changeType": "Update"}), "changeType"),
        (body({**CAPTURED, "changeType": 2.0}), "changeType"),
        (body({**CAPTURED, "changeType": True}), "changeType"),
        (body({**CAPTURED, "changeType": 7}), "changeType"),
        (body({k: v for k, v in CAPTURED.items() if k != "objectID"}), "objectID: Field required"),
        (body({**CAPTURED, "objectID": "not-a-guid"}), "objectID"),
        (body({**CAPTURED, "objectType": None}), "objectType"),
        (body(CAPTURED, {"changeType": 2}), "1."),
    ],
    ids=[
        "empty", "blank", "not JSON", "not UTF-8", "truncated", "an object, not an array", "array of numbers",
        "changeType as text", "changeType by name", "changeType float", "changeType boolean",
        "changeType out of range", "objectID missing", "objectID not a GUID", "objectType null",
        "second entry broken",
    ],
)  # fmt: skip
def test_anything_else_is_refused_with_a_short_reason(raw: bytes, reason_part: str) -> None:
    """Anything that is not an array of QRS change objects raises IntakeError naming where it broke."""
    with pytest.raises(IntakeError) as caught:
        parse_changes(raw)

    assert reason_part in str(caught.value)
    assert isinstance(caught.value, PromoterError) and len(str(caught.value)) <= 300


def test_the_reason_never_echoes_the_input() -> None:
    """A rejected value is not repeated in the error (it could be a secret or markup)."""
    secret = "s3cr3t-<script>-value"

    with pytest.raises(IntakeError) as caught:
        parse_changes(body({**CAPTURED, "objectID": secret, "changeType": secret}))

    assert secret not in str(caught.value)
