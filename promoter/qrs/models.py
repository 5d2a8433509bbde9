"""The QRS entities we read and write, as pydantic models that keep every field QRS sends.

Unknown fields are kept (``extra="allow"``) and written back by ``to_qrs()``, so a
GET -> modify -> PUT round trip never drops what a newer QRS added. Field names follow the
QRS OpenAPI definitions (38.22.0) in camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

NULL_ID = UUID(int=0)
# QRS writes "never" as the first day of the Gregorian calendar it supports.
NEVER = datetime(1753, 1, 1, tzinfo=UTC)


def format_qrs_time(value: datetime) -> str:
    """Render a time the way QRS does: UTC, milliseconds, a trailing Z."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def qrs_now() -> datetime:
    """Now, truncated to the millisecond precision QRS stores."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _utc_representable(value: datetime) -> datetime:
    """Refuse a time that has no UTC form (year 9999 at -23:59): format_qrs_time() would overflow."""
    try:
        format_qrs_time(value)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None
    return value


# Checked when read, so a hostile notification is a validation error, not a crash when written out.
QrsTime = Annotated[
    datetime,
    AfterValidator(_utc_representable),
    PlainSerializer(format_qrs_time, return_type=str, when_used="json"),
]


class QrsModel(BaseModel):
    """Base of every QRS entity: camelCase on the wire, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, alias_generator=to_camel, validate_assignment=False
    )

    def to_qrs(self) -> dict[str, Any]:
        """The JSON body QRS expects: what was read, plus what we changed, in QRS's names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Entity(QrsModel):
    """Fields every stored QRS entity carries."""

    id: UUID = NULL_ID
    created_date: QrsTime | None = None
    modified_date: QrsTime | None = None
    modified_by_user_name: str | None = None
    schema_path: str | None = None
    privileges: list[str] | None = None


class UserCondensed(QrsModel):
    id: UUID = NULL_ID
    user_id: str = ""
    user_directory: str = ""
    user_directory_connector_name: str | None = None
    name: str | None = None
    privileges: list[str] | None = None

    @property
    def account(self) -> str:
        """DIRECTORY\\userid, the form QRS uses in modifiedByUserName."""
        return f"{self.user_directory}\\{self.user_id}"


class StreamCondensed(QrsModel):
    id: UUID
    name: str = ""
    privileges: list[str] | None = None


class TagCondensed(QrsModel):
    id: UUID
    name: str = ""
    privileges: list[str] | None = None


class CustomPropertyDefinitionCondensed(QrsModel):
    id: UUID
    name: str
    value_type: str = "Text"
    choice_values: list[str] | None = None
    privileges: list[str] | None = None


class CustomPropertyDefinition(Entity):
    name: str
    value_type: str = "Text"
    choice_values: list[str] | None = None
    object_types: list[str] | None = None
    description: str | None = None


class CustomPropertyValue(Entity):
    """One value of a custom property on an entity; its own id and modifiedDate identify an approval."""

    value: str
    definition: CustomPropertyDefinitionCondensed


class HasCustomProperties(Entity):
    custom_properties: list[CustomPropertyValue] = Field(default_factory=list)

    def custom_values(self, name: str) -> list[str]:
        """Every value set for the custom property ``name`` (QMC allows several per property)."""
        return [cp.value for cp in self.custom_properties if cp.definition.name == name]

    def custom_property_values(self, name: str) -> list[CustomPropertyValue]:
        return [cp for cp in self.custom_properties if cp.definition.name == name]


class Tag(Entity):
    name: str


class Stream(HasCustomProperties):
    name: str
    owner: UserCondensed | None = None
    tags: list[TagCondensed] = Field(default_factory=list)


class UserAttribute(Entity):
    attribute_type: str
    attribute_value: str | None = None
    external_id: str | None = None


class User(HasCustomProperties):
    user_id: str
    user_directory: str
    user_directory_connector_name: str | None = None
    name: str | None = None
    roles: list[str] = Field(default_factory=list)
    attributes: list[UserAttribute] = Field(default_factory=list)
    inactive: bool = False
    removed_externally: bool = False
    blacklisted: bool = False
    delete_prohibited: bool = False
    tags: list[TagCondensed] = Field(default_factory=list)

    def attribute(self, attribute_type: str) -> str | None:
        """The first value of an attribute, matched case-insensitively (connectors differ in case)."""
        wanted = attribute_type.casefold()
        for attr in self.attributes:
            if attr.attribute_type.casefold() == wanted and attr.attribute_value:
                return attr.attribute_value
        return None

    @property
    def account(self) -> str:
        return f"{self.user_directory}\\{self.user_id}"


class App(HasCustomProperties):
    name: str
    owner: UserCondensed
    app_id: str | None = None
    source_app_id: UUID | None = None
    target_app_id: UUID | None = None
    publish_time: QrsTime | None = None
    published: bool = False
    tags: list[TagCondensed] = Field(default_factory=list)
    description: str | None = None
    stream: StreamCondensed | None = None
    file_size: int | None = None
    last_reload_time: QrsTime | None = None
    thumbnail: str | None = None
    saved_in_product_version: str | None = None
    migration_hash: str | None = None
    dynamic_color: str | None = None
    availability_status: int | None = None

    def has_tag(self, name: str) -> bool:
        return any(tag.name == name for tag in self.tags)


class AppExportResponse(QrsModel):
    export_token: UUID
    app_id: UUID
    download_path: str
    cancelled: bool = False
    schema_path: str | None = "AppExportResponse"


class About(QrsModel):
    build_version: str
    build_date: str
    database_provider: str
    node_type: int
    shared_persistence: bool
    requires_bootstrap: bool
    single_node_only: bool
    schema_path: str | None = "About"


class ChangeType:
    """QRS's ChangeType enum; notifications carry the number."""

    UNDEFINED = 0
    ADD = 1
    UPDATE = 2
    DELETE = 3
    BY_NAME: ClassVar[dict[str, int]] = {"undefined": 0, "add": 1, "update": 2, "delete": 3}


class Change(QrsModel):
    """One entry of a change notification (``ExternalChangeInfo``) as QRS POSTs it to a callback."""

    change_type: int = Field(ge=0, le=3)
    object_type: str
    object_id: UUID = Field(alias="objectID")
    changed_properties: list[str] = Field(default_factory=list)
    engine_id: str | None = Field(default=None, alias="engineID")
    engine_type: str | None = None
    originator_node_id: str | None = Field(default=None, alias="originatorNodeID")
    originator_host_name: str | None = None
    originator_context_id: str | None = Field(default=None, alias="originatorContextID")
    created_date: QrsTime | None = None
    modified_date: QrsTime | None = None
    schema_path: str | None = "ExternalChangeInfo"


class RepositoryObjectCondensed(QrsModel):
    id: UUID
    created_date: QrsTime | None = None
    modified_date: QrsTime | None = None
    modified_by_user_name: str | None = None
    schema_path: str | None = None


class ChangeSince(QrsModel):
    """One entry of ``GET /qrs/notification/changes`` (``ChangesSinceOutputCondensed``)."""

    change_type: int
    id: UUID
    type: str
    change_date: QrsTime
    object: RepositoryObjectCondensed | None = None
    schema_path: str | None = "ChangesSinceOutputCondensed"
