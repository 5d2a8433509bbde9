"""Read the body of a QRS change notification into Change entries; nothing else gets through.

QRS POSTs a JSON array of change objects (qrs-facts §2.5) with a numeric changeType. Parsing is
strict on what we rely on (the array, numeric changeType, objectID, objectType) and tolerant of
extra keys, which newer QRS versions may add. Sans-I/O: the route hands over bytes.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from promoter.errors import IntakeError
from promoter.qrs.models import Change

_CHANGES = TypeAdapter(list[Change])


class TooManyChanges(IntakeError):
    """The body is well formed but carries more changes than one notification may."""


def parse_changes(body: bytes, *, max_changes: int | None = None) -> list[Change]:
    """The changes in one notification body; IntakeError with a short reason for anything else.

    More than ``max_changes`` entries is TooManyChanges: each change may cost a QRS read and a
    flow run, so one body must not be able to ask for thousands.
    """
    if not body.strip():
        raise IntakeError("empty body: expected a JSON array of changes")
    try:
        # strict: "2" or 2.0 or true is not a changeType; QRS sends a JSON number.
        changes = _CHANGES.validate_json(body, strict=True)
    except ValidationError as exc:
        raise IntakeError(_describe(exc)) from None
    if max_changes is not None and len(changes) > max_changes:
        raise TooManyChanges(f"{len(changes)} changes in one notification; at most {max_changes} accepted")
    return changes


def _describe(exc: ValidationError) -> str:
    """The first problem and where it is, never the rejected input (it is the caller's data)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:300]
