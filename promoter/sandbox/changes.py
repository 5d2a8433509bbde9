"""The change side of a sandbox site: the change journal, change subscriptions and the delivery log.

What QRS keeps here is transient: a repository restart drops every subscription (qrs-facts 2.3).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from promoter.qrs.models import NEVER, NULL_ID, ChangeType
from promoter.sandbox.filtering import FilterError, Node, matches, parse_filter


class SubscriptionError(ValueError):
    """A subscription request QRS would refuse (400), or an unknown handle (404)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status

    def __reduce__(self) -> tuple[type[SubscriptionError], tuple[int, str]]:  # raised across processes
        return (type(self), (self.status, str(self)))


@dataclass(slots=True)
class Subscription:
    """One change subscription made with POST /qrs/notification."""

    handle: str
    object_type: str  # lower-case QRS type name
    change_type: int  # 0 = every kind of change
    property_name: str
    filter_text: str
    filter: Node | None
    object_id: str | None
    url: str

    def wants(self, change_type: int, type_name: str, entity_id: str, changed: list[str], full: Any) -> bool:
        """QRS's rules: type, change type, id, propertyName ('!x': all but x), filter (not on deletes)."""
        if self.object_type != type_name.lower():
            return False
        if self.change_type and self.change_type != change_type:
            return False
        if self.object_id and self.object_id != entity_id:
            return False
        if change_type == ChangeType.UPDATE and self.property_name:
            names = {p.lower() for p in changed} - {"modifieddate"}
            wanted = self.property_name.lower()
            if wanted.startswith("!"):
                if not names - {wanted[1:]}:
                    return False
            elif wanted not in names:
                return False
        if change_type != ChangeType.DELETE and self.filter is not None:
            try:
                return matches(self.filter, full())
            except FilterError:
                return False
        return True


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return NEVER


class ChangeFeed:
    """Journal, subscriptions and deliveries of one site; guarded by the repository's lock."""

    def __init__(self, lock: threading.RLock, *, node_id: str, host_name: str) -> None:
        self.lock = lock
        self.node_id = node_id
        self.host_name = host_name
        self.journal: list[dict[str, Any]] = []
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.delivered = threading.Condition(lock)
        # Called with (url, change) for every notification to send; set by the notifier.
        self.notify: Callable[[str, dict[str, Any]], None] | None = None

    def record(
        self,
        change_type: int,
        type_name: str,
        entity: Mapping[str, Any],
        changed: list[str],
        full: Callable[[], Mapping[str, Any]],
    ) -> None:
        """Journal one change and hand it to every subscription that wants it."""
        with self.lock:
            self.journal.append(
                {
                    "schemaPath": "ChangesSinceOutputCondensed",
                    "changeType": change_type,
                    "id": entity["id"],
                    "type": type_name,
                    "changeDate": entity["modifiedDate"],
                    "object": {
                        "schemaPath": type_name,
                        "id": entity["id"],
                        "createdDate": entity["createdDate"],
                        "modifiedDate": entity["modifiedDate"],
                        "modifiedByUserName": entity["modifiedByUserName"],
                    },
                }
            )
            if not self.subscriptions or self.notify is None:
                return
            change = {
                "changeType": change_type,
                "objectType": type_name,
                "objectID": entity["id"],
                "changedProperties": list(changed),
                "engineID": "",
                "engineType": "",
                "originatorNodeID": self.node_id,
                "originatorHostName": self.host_name,
                "originatorContextID": None,
                "createdDate": entity["createdDate"],
                "modifiedDate": entity["modifiedDate"],
                "schemaPath": "ExternalChangeInfo",
            }
            for sub in list(self.subscriptions.values()):
                if sub.wants(change_type, type_name, entity["id"], changed, full):
                    self.notify(sub.url, change)

    def subscribe(
        self,
        *,
        type_name: str,
        url: str,
        change_type: int = 0,
        property_name: str = "",
        filter_text: str = "",
        object_id: str | None = None,
    ) -> str:
        """Add a change subscription; returns its handle."""
        try:
            node = parse_filter(filter_text)
        except FilterError as exc:
            raise SubscriptionError(400, str(exc)) from None
        handle = str(uuid.uuid4())
        with self.lock:
            self.subscriptions[handle] = Subscription(
                handle=handle,
                object_type=type_name.lower(),
                change_type=change_type,
                property_name=property_name,
                filter_text=filter_text,
                filter=node,
                object_id=None if object_id in (None, "", str(NULL_ID)) else object_id,
                url=url,
            )
        return handle

    def unsubscribe(self, handle: str) -> None:
        with self.lock:
            if self.subscriptions.pop(handle.lower(), None) is None:
                raise SubscriptionError(404, "Not found")

    def since(self, moment: datetime, types: Iterable[str]) -> list[dict[str, Any]]:
        """Journal entries of the given types after ``moment`` (GET /qrs/notification/changes)."""
        wanted = {t.strip().lower() for t in types if t.strip()}
        with self.lock:
            return [
                copy.deepcopy(entry)
                for entry in self.journal
                if entry["type"].lower() in wanted and _time(entry["changeDate"]) > moment
            ]

    def record_delivery(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.deliveries.append(entry)
            self.delivered.notify_all()

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` notification POSTs were made (delivered or failed)."""
        with self.lock:
            if not self.delivered.wait_for(lambda: len(self.deliveries) >= count, timeout=timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {count} notifications after {timeout} s")
            return copy.deepcopy(self.deliveries)

    def drop_subscriptions(self) -> None:
        with self.lock:
            self.subscriptions.clear()
