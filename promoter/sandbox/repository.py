"""The state of one sandbox Qlik site: its entities, their change journal and the subscriptions to it.

Entities are kept in their QRS wire form (camelCase dicts, unknown fields kept) with references
stored as ``{"id": ...}``; reads resolve references to the condensed form QRS embeds. Every change
goes through ``_emit`` so that the journal and change notifications see exactly what QRS would.
App operations (upload, export, publish, replace, copy) live in ``apps.py`` on top of this class.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from promoter.qrs.models import NEVER, NULL_ID, ChangeType, format_qrs_time, qrs_now
from promoter.sandbox.changes import ChangeFeed, Subscription
from promoter.sandbox.filtering import FilterError, matches, parse_filter

# URL segment -> QRS type name (objectType in notifications, schemaPath of the entity).
KINDS: dict[str, str] = {
    "app": "App",
    "stream": "Stream",
    "user": "User",
    "tag": "Tag",
    "custompropertydefinition": "CustomPropertyDefinition",
}
CONDENSED: dict[str, tuple[str, ...]] = {
    "app": (
        "id",
        "privileges",
        "name",
        "appId",
        "publishTime",
        "published",
        "stream",
        "savedInProductVersion",
        "migrationHash",
        "availabilityStatus",
    ),
    "stream": ("id", "privileges", "name"),
    "user": ("id", "privileges", "userId", "userDirectory", "userDirectoryConnectorName", "name"),
    "tag": ("id", "privileges", "name"),
    "custompropertydefinition": ("id", "privileges", "name", "valueType", "choiceValues"),
}
# References kept as ids and resolved on read: field -> (kind, is a list).
REFERENCES: dict[str, tuple[str, bool]] = {
    "owner": ("user", False),
    "stream": ("stream", False),
    "tags": ("tag", True),
}
# Fields a PUT or POST body cannot set: QRS maintains them.
READ_ONLY = frozenset({"id", "createdDate", "modifiedDate", "modifiedByUserName", "schemaPath", "privileges"})
APP_FILE_FIELDS = frozenset({"fileSize"})
NULL = str(NULL_ID)
NEVER_TEXT = format_qrs_time(NEVER)


class QrsFault(Exception):
    """A QRS error answer: status code and the plain-text body QRS sends."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text

    def __reduce__(self) -> tuple[type[QrsFault], tuple[int, str]]:  # raised across to a parent process
        return (type(self), (self.status, self.text))


@dataclass(frozen=True, slots=True)
class Actor:
    """The Qlik user a call runs as (from X-Qlik-User)."""

    directory: str = "INTERNAL"
    user_id: str = "sa_repository"

    @property
    def account(self) -> str:
        return f"{self.directory}\\{self.user_id}"


SYSTEM = Actor()


def _defaults(kind: str) -> dict[str, Any]:
    common: dict[str, Any] = {"id": NULL, "createdDate": None, "modifiedDate": None, "modifiedByUserName": ""}
    specific: dict[str, dict[str, Any]] = {
        "app": {
            "customProperties": [],
            "owner": None,
            "name": "",
            "appId": "",
            "sourceAppId": NULL,
            "targetAppId": NULL,
            "publishTime": NEVER_TEXT,
            "published": False,
            "tags": [],
            "description": "",
            "stream": None,
            "fileSize": 0,
            "lastReloadTime": NEVER_TEXT,
            "thumbnail": "",
            "savedInProductVersion": "12.1477.4",
            "migrationHash": "a6ab1e2a1ad8a5b2b9d9b5b5a7c5c1a1f1e0d0c0",
            "dynamicColor": "",
            "availabilityStatus": 0,
        },
        "stream": {"customProperties": [], "owner": None, "name": "", "tags": []},
        "user": {
            "customProperties": [],
            "userId": "",
            "userDirectory": "",
            "userDirectoryConnectorName": "",
            "name": "",
            "roles": [],
            "attributes": [],
            "inactive": False,
            "removedExternally": False,
            "blacklisted": False,
            "deleteProhibited": False,
            "tags": [],
            "favorites": [],
        },
        "tag": {"name": ""},
        "custompropertydefinition": {
            "name": "",
            "valueType": "Text",
            "choiceValues": [],
            "objectTypes": [],
            "description": "",
        },
    }
    return {**common, **specific[kind], "privileges": None, "schemaPath": KINDS[kind]}


def parse_time(text: Any) -> datetime | None:
    """A QRS time string as an aware datetime, or None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=NEVER.tzinfo)


def _account_key(directory: Any, user_id: Any) -> tuple[str, str]:
    """What makes a user the same user on QRS: directory and id, case ignored."""
    return str(directory).casefold(), str(user_id).casefold()


def _id_of(ref: Any) -> str | None:
    if isinstance(ref, Mapping):
        ref = ref.get("id")
    if ref is None:
        return None
    try:
        return str(uuid.UUID(str(ref)))
    except ValueError:
        raise QrsFault(400, f"Invalid id: {ref}") from None


class Repository:
    """Entities, journal, subscriptions and exports of one site; safe to read from test threads."""

    def __init__(self, site: str, data_dir: Path, *, host_name: str | None = None) -> None:
        self.site = site
        self.host_name = host_name or site
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{site}.qs-sandbox"))
        self.data_dir = data_dir
        self.app_dir = data_dir / "apps"
        self.export_dir = data_dir / "exports"
        self.incoming_dir = data_dir / "incoming"
        for folder in (self.app_dir, self.export_dir, self.incoming_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._store: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.exports: dict[str, Export] = {}
        self.changes = ChangeFeed(self.lock, node_id=self.node_id, host_name=self.host_name)
        self.user_for(SYSTEM)

    # ---- reading ---------------------------------------------------------------------------

    def render(self, kind: str, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The full JSON form of a stored entity, references resolved to their condensed form."""
        full = copy.deepcopy(dict(stored))
        for name, (ref_kind, many) in REFERENCES.items():
            if name not in full:
                continue
            if many:
                full[name] = [self._condensed_ref(ref_kind, r) for r in full[name] or []]
            elif full[name] is not None:
                full[name] = self._condensed_ref(ref_kind, full[name])
        if "customProperties" in full:
            full["customProperties"] = [self._render_value(v) for v in full["customProperties"]]
        return full

    def _condensed_ref(self, kind: str, ref: Mapping[str, Any]) -> dict[str, Any]:
        target = self._store[kind].get(str(ref.get("id")))
        if target is None:
            return {"id": ref.get("id"), "privileges": None}
        return self.condense(kind, self.render(kind, target))

    def _render_value(self, value: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(value)
        definition = self._store["custompropertydefinition"].get(str(value["definition"]["id"]))
        out["definition"] = (
            self.condense("custompropertydefinition", definition)
            if definition
            else {"id": value["definition"]["id"], "privileges": None}
        )
        return out

    def condense(self, kind: str, full: Mapping[str, Any]) -> dict[str, Any]:
        return {name: copy.deepcopy(full.get(name)) for name in CONDENSED[kind]}

    def stored(self, kind: str, entity_id: str) -> dict[str, Any]:
        try:
            key = str(uuid.UUID(str(entity_id)))
        except ValueError:
            raise QrsFault(404, "Not found") from None
        entity = self._store[kind].get(key)
        if entity is None:
            raise QrsFault(404, "Not found")
        return entity

    def get(self, kind: str, entity_id: str) -> dict[str, Any]:
        with self.lock:
            return self.render(kind, self.stored(kind, entity_id))

    def find(self, kind: str, filter_text: str | None = None) -> list[dict[str, Any]]:
        """Full entities matching a QRS filter (400 QrsFault on a bad filter)."""
        try:
            node = parse_filter(filter_text)
        except FilterError as exc:
            raise QrsFault(400, str(exc)) from None
        with self.lock:
            rendered = [self.render(kind, e) for e in self._store[kind].values()]
            try:
                return [e for e in rendered if matches(node, e)]
            except FilterError as exc:
                raise QrsFault(400, str(exc)) from None

    @property
    def apps(self) -> list[dict[str, Any]]:
        return self.find("app")

    @property
    def streams(self) -> list[dict[str, Any]]:
        return self.find("stream")

    @property
    def users(self) -> list[dict[str, Any]]:
        return self.find("user")

    @property
    def tags(self) -> list[dict[str, Any]]:
        return self.find("tag")

    @property
    def custom_property_definitions(self) -> list[dict[str, Any]]:
        return self.find("custompropertydefinition")

    def app_file(self, app_id: str) -> Path:
        """Where an app's QVF lives (files are replaced whole, never written in place)."""
        return self.app_dir / f"{uuid.UUID(str(app_id))}.qvf"

    # ---- users -----------------------------------------------------------------------------

    def user_for(self, actor: Actor) -> dict[str, Any]:
        """The User entity of a caller, created on first sight as QRS does for a header user."""
        with self.lock:
            wanted = _account_key(actor.directory, actor.user_id)
            for user in self._store["user"].values():
                if _account_key(user["userDirectory"], user["userId"]) == wanted:
                    return user
            body = {"userId": actor.user_id, "userDirectory": actor.directory, "name": actor.user_id}
            return self._insert("user", body, SYSTEM)

    # ---- writing ---------------------------------------------------------------------------

    def _stamp(self, previous: str | None = None) -> str:
        now = qrs_now()
        before = parse_time(previous)
        if before is not None and now <= before:
            now = before + timedelta(milliseconds=1)
        return format_qrs_time(now)

    def create(self, kind: str, body: Mapping[str, Any], actor: Actor) -> dict[str, Any]:
        """POST /qrs/{kind}: a new entity from a (possibly partial) body; 201 with the full entity."""
        if kind == "app":
            raise QrsFault(405, "Apps are created by upload, import or copy")
        if not isinstance(body, Mapping):
            raise QrsFault(400, "The request body must be a JSON object")
        with self.lock:
            return self.render(kind, self._insert(kind, body, actor))

    def _insert(self, kind: str, body: Mapping[str, Any], actor: Actor) -> dict[str, Any]:
        entity = _defaults(kind)
        wanted_id = _id_of(body.get("id"))
        entity["id"] = wanted_id if wanted_id and wanted_id != NULL else str(uuid.uuid4())
        if entity["id"] in self._store[kind]:
            raise QrsFault(409, f"An entity with id {entity['id']} already exists")
        self._apply(kind, entity, body, actor, creating=True)
        if kind == "user" and not entity["userDirectoryConnectorName"]:
            entity["userDirectoryConnectorName"] = entity["userDirectory"]
        self._require(kind, entity)
        stamp = self._stamp()
        entity.update(createdDate=stamp, modifiedDate=stamp, modifiedByUserName=actor.account)
        if "owner" in entity and entity["owner"] is None:
            entity["owner"] = {"id": self.user_for(actor)["id"]} if kind != "user" else None
        self._store[kind][entity["id"]] = entity
        self._emit(ChangeType.ADD, kind, entity, [])
        return entity

    def _require(self, kind: str, entity: Mapping[str, Any]) -> None:
        required = {"user": ("userId", "userDirectory")}.get(kind, ("name",))
        missing = [name for name in required if not entity.get(name)]
        if missing:
            raise QrsFault(400, f"Missing required property: {', '.join(missing)}")
        if kind == "custompropertydefinition":
            for other in self._store[kind].values():
                if other["name"].lower() == entity["name"].lower() and other["id"] != entity["id"]:
                    raise QrsFault(409, f"A custom property named {entity['name']} already exists")
        if kind == "user":
            # QRS identifies a user by directory and id regardless of case: Internal\sa_api is
            # INTERNAL\sa_api, so a second user that differs only in case is a duplicate.
            account = _account_key(entity["userDirectory"], entity["userId"])
            for other in self._store[kind].values():
                if (
                    _account_key(other["userDirectory"], other["userId"]) == account
                    and other["id"] != entity["id"]
                ):
                    raise QrsFault(409, f"A user {other['userDirectory']}\\{other['userId']} already exists")

    def update(self, kind: str, entity_id: str, body: Any, actor: Actor) -> dict[str, Any]:
        """PUT /qrs/{kind}/{id}: the optimistic-concurrency rule, then merge; unknown fields kept."""
        if not isinstance(body, Mapping):
            raise QrsFault(400, "The request body must be a JSON object")
        with self.lock:
            entity = self.stored(kind, entity_id)
            if _id_of(body.get("id")) != entity["id"]:
                raise QrsFault(400, "The id in the body does not match the id in the URL")
            sent = body.get("modifiedDate")
            sent_time = parse_time(sent)
            if sent is not None and sent_time is None:
                raise QrsFault(400, f"Invalid modifiedDate: {sent}")
            stored_time = parse_time(entity["modifiedDate"])
            if sent_time is None or (stored_time is not None and sent_time < stored_time):
                raise QrsFault(
                    409,
                    "Conflict: the entity has been modified by another user since it was read"
                    f" (modifiedDate {entity['modifiedDate']})",
                )
            before = self.render(kind, entity)
            draft = copy.deepcopy(entity)
            self._apply(kind, draft, body, actor, creating=False)
            self._require(kind, draft)
            return self.render(kind, self._commit(kind, draft, before, actor))

    def _commit(
        self, kind: str, draft: dict[str, Any], before: Mapping[str, Any], actor: Actor
    ) -> dict[str, Any]:
        """Store a changed entity with a new modifiedDate and announce what changed."""
        draft["modifiedDate"] = self._stamp(before.get("modifiedDate"))
        draft["modifiedByUserName"] = actor.account
        self._store[kind][draft["id"]] = draft
        after = self.render(kind, draft)
        ignored = {"modifiedDate", "modifiedByUserName"}
        changed = [k for k in after if k not in ignored and after.get(k) != before.get(k)]
        self._emit(ChangeType.UPDATE, kind, draft, [*changed, "modifiedDate"])
        return draft

    def modify(self, kind: str, entity_id: str, actor: Actor, **fields: Any) -> dict[str, Any]:
        """Set fields QRS itself maintains (publish, reload, replace) and announce the update."""
        with self.lock:
            entity = self.stored(kind, entity_id)
            before = self.render(kind, entity)
            draft = copy.deepcopy(entity)
            draft.update(fields)
            return self._commit(kind, draft, before, actor)

    def delete(self, kind: str, entity_id: str, actor: Actor) -> None:
        """DELETE /qrs/{kind}/{id}; references to it disappear from other entities, as in QRS."""
        with self.lock:
            entity = self.stored(kind, entity_id)
            del self._store[kind][entity["id"]]
            if kind == "app":
                self.app_file(entity["id"]).unlink(missing_ok=True)
            for holders in self._store.values():
                for holder in holders.values():
                    if kind == "tag" and "tags" in holder:
                        holder["tags"] = [t for t in holder["tags"] if t["id"] != entity["id"]]
                    if kind == "custompropertydefinition" and "customProperties" in holder:
                        holder["customProperties"] = [
                            v for v in holder["customProperties"] if v["definition"]["id"] != entity["id"]
                        ]
            gone = {
                **entity,
                "modifiedDate": self._stamp(entity["modifiedDate"]),
                "modifiedByUserName": actor.account,
            }
            self._emit(ChangeType.DELETE, kind, gone, [])

    def _apply(
        self, kind: str, entity: dict[str, Any], body: Mapping[str, Any], actor: Actor, *, creating: bool
    ) -> None:
        """Copy a request body onto an entity: references reduced to ids and checked, values kept."""
        for name, value in body.items():
            if name in READ_ONLY or (kind == "app" and name in APP_FILE_FIELDS):
                continue
            if name in REFERENCES and name in entity:
                ref_kind, many = REFERENCES[name]
                entity[name] = (
                    [self._reference(ref_kind, r) for r in value or []]
                    if many
                    else (None if value is None else self._reference(ref_kind, value))
                )
            elif name == "customProperties" and name in entity:
                entity[name] = self._custom_values(entity.get(name) or [], value or [], actor)
            elif name == "attributes" and kind == "user":
                entity[name] = self._attributes(entity.get(name) or [], value or [], actor)
            else:
                entity[name] = copy.deepcopy(value)

    def _reference(self, kind: str, ref: Any) -> dict[str, str]:
        ref_id = _id_of(ref)
        if ref_id is None or ref_id not in self._store[kind]:
            raise QrsFault(400, f"Referenced {KINDS[kind]} {ref_id} does not exist")
        return {"id": ref_id}

    def _custom_values(
        self, current: list[dict[str, Any]], sent: Iterable[Any], actor: Actor
    ) -> list[dict[str, Any]]:
        """Custom property values: one sent again keeps its id and modifiedDate; a new one gets new ones."""
        unused = list(current)
        result: list[dict[str, Any]] = []
        for item in sent:
            if not isinstance(item, Mapping) or "value" not in item or "definition" not in item:
                raise QrsFault(400, "A custom property value needs 'value' and 'definition'")
            definition_id = self._reference("custompropertydefinition", item["definition"])["id"]
            value = str(item["value"])
            same = next(
                (v for v in unused if v["definition"]["id"] == definition_id and v["value"] == value), None
            )
            by_id = next((v for v in unused if v["id"] == _id_of(item.get("id"))), None)
            stamp = self._stamp()
            if same is not None:
                unused.remove(same)
                result.append(same)
            elif by_id is not None:
                unused.remove(by_id)
                result.append(
                    {
                        **by_id,
                        "value": value,
                        "definition": {"id": definition_id},
                        "modifiedDate": stamp,
                        "modifiedByUserName": actor.account,
                    }
                )
            else:
                result.append(
                    {
                        "id": str(uuid.uuid4()),
                        "createdDate": stamp,
                        "modifiedDate": stamp,
                        "modifiedByUserName": actor.account,
                        "value": value,
                        "definition": {"id": definition_id},
                        "schemaPath": "CustomPropertyValue",
                    }
                )
        return result

    def _attributes(
        self, current: list[dict[str, Any]], sent: Iterable[Any], actor: Actor
    ) -> list[dict[str, Any]]:
        known = {a["id"]: a for a in current}
        result = []
        for item in sent:
            if not isinstance(item, Mapping) or not item.get("attributeType"):
                raise QrsFault(400, "A user attribute needs 'attributeType'")
            old = known.get(_id_of(item.get("id")) or "")
            stamp = self._stamp()
            attribute = {
                "id": old["id"] if old else str(uuid.uuid4()),
                "createdDate": old["createdDate"] if old else stamp,
                "modifiedDate": stamp,
                "modifiedByUserName": actor.account,
                "attributeType": item["attributeType"],
                "attributeValue": item.get("attributeValue", ""),
                "externalId": item.get("externalId") or None,
                "schemaPath": "UserAttribute",
            }
            if old and all(
                old.get(k) == attribute[k] for k in ("attributeType", "attributeValue", "externalId")
            ):
                attribute = old
            result.append(attribute)
        return result

    # ---- changes ---------------------------------------------------------------------------

    def _emit(self, change_type: int, kind: str, entity: Mapping[str, Any], changed: list[str]) -> None:
        deleted = change_type == ChangeType.DELETE
        self.changes.record(
            change_type,
            KINDS[kind],
            entity,
            changed,
            (lambda: dict(entity)) if deleted else (lambda: self.render(kind, entity)),
        )

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        return self.changes.subscriptions

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """The notification POSTs made so far: url, body (the change list), status, error, time."""
        return self.changes.deliveries

    @property
    def journal(self) -> list[dict[str, Any]]:
        return self.changes.journal

    def restart(self) -> None:
        """What a repository service restart does to the state we model: subscriptions are gone."""
        self.changes.drop_subscriptions()


@dataclass(slots=True)
class Export:
    """One two-step export, waiting for its one download."""

    temp_id: str
    token: str
    app_id: str
    file: Path
    file_name: str
    skip_data: bool
    taken: bool = field(default=False)
