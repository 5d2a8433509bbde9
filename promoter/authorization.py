"""Who asked for a promotion, a denial or a promotion on reload, and whether they were allowed to.

Who asked is the user who set the deciding custom property value, by that value's own
modifiedByUserName (each CustomPropertyValue carries its own, and a value sent back unchanged
keeps it); never the app's modifiedByUserName, which any later write, ours included, replaces.
The targets are theirs as they stood when they set it: a target value someone else changed
later is not.

Whether they may: the seed's security rules already stop most users from setting the Promot*
properties; checking them again here is defense in depth, so that a rule edited away in the QMC
does not open promotion to everyone:

- rule #1: only users with CanPromote may set the Promot* properties;
- rule #2: the user owns the app, or the app's stream has CanPromoteFrom and shares a
  CanPromoteGroup value with the user;
- optionally (authorization.separation_of_duties) nobody approves their own app, by Approve
  or by PromoteOnReload; a denial by the owner is still carried out.

Qlik's rule engine treats a property as set when it is not empty (``!user.@CanPromote.Empty()``)
and compares values case-insensitively; so do we, except that a value "False" grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from promoter.qrs.models import App, CustomPropertyValue, HasCustomProperties, Stream, User
from promoter.settings import Settings

# What the deciding value asks for, in the words of the run log and the emails.
RequestKind = Literal["approval", "denial", "promotion on reload", "manual run"]


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    allowed: bool
    reason: str


def setter(value: CustomPropertyValue | None) -> str | None:
    """Who set ``value``: its own modifiedByUserName, or None when QRS did not say."""
    if value is None or not value.modified_by_user_name:
        return None
    return value.modified_by_user_name


def set_last(values: list[CustomPropertyValue]) -> CustomPropertyValue:
    """The value set last, whose setter has the last word (a value without a time counts as oldest)."""
    last = values[0]
    for value in values[1:]:
        if _earlier(last, value):
            last = value
    return last


def _earlier(value: CustomPropertyValue, other: CustomPropertyValue) -> bool:
    if value.modified_date is None:
        return other.modified_date is not None
    return other.modified_date is not None and value.modified_date < other.modified_date


def changed_after(
    deciding: CustomPropertyValue, targets: Iterable[CustomPropertyValue]
) -> list[CustomPropertyValue]:
    """The target values someone other than the setter of ``deciding`` changed after it was set.

    Values the setter changed themselves are theirs at any time (this also keeps values saved in
    the same QMC edit apart from clock details); a value whose time cannot be compared counts as
    changed after, since it cannot be shown to have come first.
    """
    who = (setter(deciding) or "").casefold()
    return [
        value
        for value in targets
        if not (who and (setter(value) or "").casefold() == who) and not _not_after(value, deciding)
    ]


def _not_after(value: CustomPropertyValue, deciding: CustomPropertyValue) -> bool:
    if value.modified_date is None or deciding.modified_date is None:
        return False
    return value.modified_date <= deciding.modified_date


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
    app: App,
    user: User | None,
    stream: Stream | None,
    settings: Settings,
    request: RequestKind = "approval",
) -> AuthorizationResult:
    """Whether ``user`` (read from QRS by the account that set the deciding value) may ask for ``request``.

    The same rules hold for an approval, a denial (it unpublishes and deletes the published app)
    and a promotion on reload. ``stream`` is the app's stream read in full (its custom properties
    are needed).
    """
    rules = settings.authorization
    names = settings.properties
    if not rules.enabled:
        return AuthorizationResult(True, "authorization checks are disabled")
    if user is None:
        return AuthorizationResult(False, f"the user account that set the {request} could not be found")
    who = user.account
    if user.inactive or user.blacklisted or user.removed_externally:
        return AuthorizationResult(False, f"{who} is inactive, blocked or removed from the directory")
    if not _granted(user, names.can_promote):
        return AuthorizationResult(False, f"{who} does not have {names.can_promote}")
    owner = is_owner(app, user)
    if owner and rules.separation_of_duties and request != "denial":
        return AuthorizationResult(False, f"{who} owns the app and may not approve it (separation of duties)")
    if owner:
        return AuthorizationResult(True, f"{who} has {names.can_promote} and owns the app")
    if stream is None or app.stream is None or stream.id != app.stream.id:
        return AuthorizationResult(False, f"{who} is not the owner and the app's stream could not be read")
    if not _granted(stream, names.can_promote_from):
        return AuthorizationResult(
            False, f"{who} is not the owner and the stream lacks {names.can_promote_from}"
        )
    if not _groups(stream, names.can_promote_group) & _groups(user, names.can_promote_group):
        return AuthorizationResult(False, f"{who} shares no {names.can_promote_group} with the stream")
    return AuthorizationResult(
        True, f"{who} has {names.can_promote} and a {names.can_promote_group} of the stream"
    )
