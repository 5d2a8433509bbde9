"""Check that whoever approved a promotion was allowed to: the site's security rules, checked again.

The seed's security rules already stop most users from setting the Promot* properties; this is
defense in depth, so that a rule edited away in the QMC does not open promotion to everyone:

- rule #1: only users with CanPromote may set the Promot* properties;
- rule #2: the approver owns the app, or the app's stream has CanPromoteFrom and shares a
  CanPromoteGroup value with the approver;
- optionally (authorization.approver_must_differ_from_owner) nobody approves their own app.

Qlik's rule engine treats a property as set when it is not empty (``!user.@CanPromote.Empty()``)
and compares values case-insensitively; so do we, except that a value "False" grants nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from promoter.qrs.models import App, HasCustomProperties, Stream, User
from promoter.settings import Settings


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    allowed: bool
    reason: str


def parse_account(account: str) -> tuple[str, str] | None:
    """``DIRECTORY\\userid`` (QRS's modifiedByUserName) as (directory, userid); None if not that shape."""
    directory, sep, user_id = account.partition("\\")
    if not sep or not directory.strip() or not user_id.strip():
        return None
    return directory.strip(), user_id.strip()


def _granted(entity: HasCustomProperties, name: str) -> bool:
    return any(v.strip() and v.strip().casefold() != "false" for v in entity.custom_values(name))


def _groups(entity: HasCustomProperties, name: str) -> set[str]:
    return {v.strip().casefold() for v in entity.custom_values(name) if v.strip()}


def is_owner(app: App, user: User) -> bool:
    if app.owner.id == user.id and user.id.int != 0:
        return True
    return app.owner.account.casefold() == user.account.casefold()


def authorize(
    app: App, approver: User | None, stream: Stream | None, settings: Settings
) -> AuthorizationResult:
    """Whether ``approver`` (read from QRS by the account that set the approval) may promote ``app``.

    ``stream`` is the app's stream read in full (its custom properties are needed).
    """
    rules = settings.authorization
    names = settings.properties
    if not rules.enabled:
        return AuthorizationResult(True, "authorization checks are disabled")
    if approver is None:
        return AuthorizationResult(False, "the approver's user account could not be found")
    who = approver.account
    if approver.inactive or approver.blacklisted or approver.removed_externally:
        return AuthorizationResult(False, f"{who} is inactive, blocked or removed from the directory")
    if not _granted(approver, names.can_promote):
        return AuthorizationResult(False, f"{who} does not have {names.can_promote}")
    owner = is_owner(app, approver)
    if owner and rules.approver_must_differ_from_owner:
        return AuthorizationResult(False, f"{who} owns the app and may not approve it")
    if owner:
        return AuthorizationResult(True, f"{who} has {names.can_promote} and owns the app")
    if stream is None or app.stream is None or stream.id != app.stream.id:
        return AuthorizationResult(False, f"{who} is not the owner and the app's stream could not be read")
    if not _granted(stream, names.can_promote_from):
        return AuthorizationResult(
            False, f"{who} is not the owner and the stream lacks {names.can_promote_from}"
        )
    if not _groups(stream, names.can_promote_group) & _groups(approver, names.can_promote_group):
        return AuthorizationResult(False, f"{who} shares no {names.can_promote_group} with the stream")
    return AuthorizationResult(
        True, f"{who} has {names.can_promote} and a {names.can_promote_group} of the stream"
    )
