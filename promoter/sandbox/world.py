"""A small Qlik world for the demo and the end-to-end tests, built through QRS calls as an admin would.

The source site gets the custom properties of the original's setup (seed-README step 8), a
sales rep, a sales manager allowed to promote, and a "Sales" stream whose approvers are alerted;
each target site gets "Everyone", and the test site also "Review". People act through their own
X-Qlik-User header, so QRS records who set an approval exactly as the hub would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from promoter.qrs.client import QrsClient
from promoter.qrs.filters import eq
from promoter.qrs.models import App, CustomPropertyDefinitionCondensed, CustomPropertyValue
from promoter.settings import Settings


@dataclass(frozen=True, slots=True)
class Person:
    directory: str
    user_id: str
    name: str
    email: str

    @property
    def account(self) -> str:
        return f"{self.directory}\\{self.user_id}"


REP = Person("ACME", "rep", "Sam Rep", "sam.rep@acme.example")
MANAGER = Person("ACME", "manager", "Morgan Manager", "morgan.manager@acme.example")
GROUP = "Sales_Admin"

# name -> (object types, choice values); the choices for PromoteToServer follow the target sites.
DEFINITIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "PromoteToServer": (("App",), ()),
    "PromoteToStream": (("App",), ("Everyone", "Review")),
    "PromotionApproval": (("App",), ("Approve", "Deny")),
    "PromotionS3Versioning": (("App",), ("True",)),
    "PromotionUnpublish": (("App",), ("True",)),
    "PromoteOnReload": (("App",), ("True",)),
    "EmailAlertOnPublishTo": (("Stream",), ("True",)),
    "CanPromote": (("User",), ("True",)),
    "CanPromoteFrom": (("Stream",), ("True",)),
    "CanPromoteGroup": (("Stream", "User"), (GROUP,)),
}
TARGET_STREAMS = {"test": ("Everyone", "Review"), "prod": ("Everyone",)}


@dataclass
class World:
    """What build_world() made: ids the tests and the demo refer to."""

    definitions: dict[str, CustomPropertyDefinitionCondensed]
    sales_stream_id: UUID
    target_streams: dict[str, dict[str, UUID]] = field(default_factory=dict)


def acting_as(settings: Settings, site: str, person: Person) -> QrsClient:
    """A client of ``site`` whose calls QRS records as made by ``person`` (X-Qlik-User)."""
    as_person = settings.site(site).model_copy(
        update={"user_directory": person.directory, "user_id": person.user_id}
    )
    return QrsClient(as_person, settings.cert_dir(site), name=site)


async def build_world(settings: Settings) -> World:
    """Create the properties, people and streams (again: it finds what exists)."""
    async with QrsClient.for_site(settings, "source") as dev:
        choices = {**{k: v[1] for k, v in DEFINITIONS.items()}}
        choices["PromoteToServer"] = tuple(
            f"{s} - {m}" for s in settings.target_sites for m in ("Overwrite", "Duplicate")
        )
        definitions = {
            name: await _definition(dev, name, types, choices[name])
            for name, (types, _) in DEFINITIONS.items()
        }
        await add_user(dev, REP, [])
        await add_user(
            dev,
            MANAGER,
            [_value(definitions, "CanPromote", "True"), _value(definitions, "CanPromoteGroup", GROUP)],
        )
        sales = await _stream(
            dev,
            "Sales",
            [
                _value(definitions, "EmailAlertOnPublishTo", "True"),
                _value(definitions, "CanPromoteFrom", "True"),
                _value(definitions, "CanPromoteGroup", GROUP),
            ],
        )
    world = World(definitions, sales)
    for site in settings.target_sites:
        async with QrsClient.for_site(settings, site) as target:
            names = TARGET_STREAMS.get(site, ("Everyone",))
            world.target_streams[site] = {name: await _stream(target, name, []) for name in names}
    return world


async def publish_as(settings: Settings, person: Person, file: Path, name: str, stream_id: UUID) -> App:
    """The rep uploads an app and publishes it, as in step 1 of the original's workflow."""
    async with acting_as(settings, "source", person) as dev:
        app = await dev.upload_app(file, name)
        return await dev.publish_app(app.id, stream_id)


async def set_properties(
    settings: Settings, person: Person, app_id: UUID, world: World, values: dict[str, list[str]]
) -> App:
    """``person`` sets the app's custom properties in the QMC (replacing those named in ``values``)."""

    def change(app: App) -> None:
        kept = [cp for cp in app.custom_properties if cp.definition.name not in values]
        app.custom_properties = kept + [
            _value(world.definitions, name, v) for name, vs in values.items() for v in vs
        ]

    async with acting_as(settings, "source", person) as dev:
        return await dev.update_app(app_id, change)


def _value(
    definitions: dict[str, CustomPropertyDefinitionCondensed], name: str, value: str
) -> CustomPropertyValue:
    return CustomPropertyValue(value=value, definition=definitions[name])


async def _definition(
    qrs: QrsClient, name: str, object_types: tuple[str, ...], choices: tuple[str, ...]
) -> CustomPropertyDefinitionCondensed:
    found = await qrs.custom_property_definitions(eq("name", name))
    if found:
        definition: Any = found[0]
    else:
        body = {
            "name": name,
            "valueType": "Text",
            "choiceValues": list(choices),
            "objectTypes": list(object_types),
        }
        definition = await qrs.create_entity("custompropertydefinition", body)
        return CustomPropertyDefinitionCondensed.model_validate(definition)
    return CustomPropertyDefinitionCondensed(
        id=definition.id, name=definition.name, value_type=definition.value_type
    )


async def add_user(qrs: QrsClient, person: Person, custom: list[CustomPropertyValue]) -> UUID:
    """The user ``person`` on the site (made as a directory sync would, with its email attribute)."""
    existing = await qrs.user_by_account(person.account)
    if existing is not None:
        return existing.id
    body = {
        "userId": person.user_id,
        "userDirectory": person.directory,
        "name": person.name,
        "attributes": [{"attributeType": "email", "attributeValue": person.email}],
        "customProperties": [cp.to_qrs() for cp in custom],
    }
    return UUID((await qrs.create_entity("user", body))["id"])


async def _stream(qrs: QrsClient, name: str, custom: list[CustomPropertyValue]) -> UUID:
    existing = await qrs.stream_by_name(name)
    if existing is not None:
        return existing.id
    body = {"name": name, "customProperties": [cp.to_qrs() for cp in custom]}
    return UUID((await qrs.create_entity("stream", body))["id"])
