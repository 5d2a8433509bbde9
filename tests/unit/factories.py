"""Small builders of QRS entities and settings for unit tests of the pure rules."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from promoter.qrs.models import (
    App,
    CustomPropertyDefinitionCondensed,
    CustomPropertyValue,
    Stream,
    StreamCondensed,
    TagCondensed,
    User,
    UserCondensed,
)
from promoter.settings import Settings, SiteSettings

OWNER = UserCondensed(id=UUID(int=1), user_id="rep", user_directory="DEV", name="Sales Rep")
SALES = StreamCondensed(id=UUID(int=100), name="Sales")
WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
RELOAD_TAG = TagCondensed(id=UUID(int=900), name="AutoPromoteOnReload")
_DEFINITIONS: dict[str, UUID] = {}


def make_settings(**sections: Any) -> Settings:
    """Settings with sites "test", "prod" and "prod-eu"; keyword arguments replace whole sections."""
    values: dict[str, Any] = {
        "source_site": SiteSettings(host="dev.example"),
        "target_sites": {
            "test": SiteSettings(host="test.example"),
            "prod": SiteSettings(host="prod.example"),
            "prod-eu": SiteSettings(host="prod-eu.example"),
        },
    }
    values.update(sections)
    return Settings(**values)


def prop(
    name: str,
    value: str,
    *,
    value_id: UUID | None = None,
    modified: datetime = WHEN,
    by: str | None = "DEV\\manager",
) -> CustomPropertyValue:
    """One custom property value as QRS returns it inside an entity."""
    definition_id = _DEFINITIONS.setdefault(name, uuid4())
    return CustomPropertyValue(
        id=value_id or uuid4(),
        created_date=modified,
        modified_date=modified,
        modified_by_user_name=by,
        value=value,
        definition=CustomPropertyDefinitionCondensed(id=definition_id, name=name),
    )


def make_app(
    *props: CustomPropertyValue | tuple[str, str],
    published: bool = True,
    tagged: bool = False,
    name: str = "Sales Dashboard",
    app_id: UUID | None = None,
    stream: StreamCondensed | None = SALES,
    owner: UserCondensed = OWNER,
    modified: datetime = WHEN,
    modified_by: str = "DEV\\someone",
    last_reload: datetime = WHEN,
) -> App:
    """A source app; props are CustomPropertyValue or (definition name, value) pairs."""
    values = [p if isinstance(p, CustomPropertyValue) else prop(*p) for p in props]
    return App(
        id=app_id or uuid4(),
        name=name,
        owner=owner,
        modified_date=modified,
        modified_by_user_name=modified_by,
        custom_properties=values,
        published=published,
        stream=stream if published else None,
        publish_time=WHEN,
        last_reload_time=last_reload,
        tags=[RELOAD_TAG] if tagged else [],
    )


def make_stream(*props: tuple[str, str], stream_id: UUID = SALES.id, name: str = "Sales") -> Stream:
    return Stream(id=stream_id, name=name, custom_properties=[prop(*p) for p in props])


def make_user(
    *props: tuple[str, str],
    user_id: str = "manager",
    directory: str = "DEV",
    uid: UUID | None = None,
    **fields: Any,
) -> User:
    return User(
        id=uid or uuid4(),
        user_id=user_id,
        user_directory=directory,
        custom_properties=[prop(*p) for p in props],
        **fields,
    )


def target_app(name: str, stream: StreamCondensed | None, *, app_id: UUID | None = None) -> App:
    """An app as found on a target site: published in ``stream``, or not published when None."""
    return App(
        id=app_id or uuid4(),
        name=name,
        owner=OWNER,
        published=stream is not None,
        stream=stream,
    )


def streams_by_name(
    *streams: StreamCondensed, missing: Iterable[str] = ()
) -> dict[str, StreamCondensed | None]:
    found: dict[str, StreamCondensed | None] = {s.name: s for s in streams}
    found.update(dict.fromkeys(missing))
    return found
