"""Seed a sandbox site's state directly (for fixtures): streams, users, properties, tags and apps.

Seeding goes through the same repository code as QRS calls (so the journal and notifications see
it), but skips HTTP; end-to-end tests should still drive the sandbox through QRS calls. Given the
repository of a site in its own process, each helper runs there (``on_site``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from promoter.sandbox import apps
from promoter.sandbox.remote import on_site
from promoter.sandbox.repository import SYSTEM, Actor, Repository


@on_site
def seed_stream(repo: Repository, name: str, *, owner: Actor = SYSTEM) -> dict[str, Any]:
    with repo.lock:
        return repo.create("stream", {"name": name, "owner": {"id": repo.user_for(owner)["id"]}}, SYSTEM)


@on_site
def seed_user(
    repo: Repository, directory: str, user_id: str, *, name: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """A user (found or created), with an email attribute when given."""
    with repo.lock:
        user = repo.user_for(Actor(directory, user_id))
        body = {**repo.render("user", user), "name": name or user["name"]}
        if email is not None:
            body["attributes"] = [{"attributeType": "email", "attributeValue": email}]
        return repo.update("user", user["id"], body, SYSTEM)


@on_site
def seed_custom_property(
    repo: Repository,
    name: str,
    choice_values: Iterable[str] = (),
    object_types: Iterable[str] = ("App",),
) -> dict[str, Any]:
    """A custom property definition, or the existing one of that name."""
    with repo.lock:
        for definition in repo.custom_property_definitions:
            if definition["name"].lower() == name.lower():
                return definition
        body = {
            "name": name,
            "valueType": "Text",
            "choiceValues": list(choice_values),
            "objectTypes": list(object_types),
        }
        return repo.create("custompropertydefinition", body, SYSTEM)


@on_site
def seed_tag(repo: Repository, name: str) -> dict[str, Any]:
    with repo.lock:
        for tag in repo.tags:
            if tag["name"] == name:
                return tag
        return repo.create("tag", {"name": name}, SYSTEM)


@on_site
def seed_app(
    repo: Repository,
    name: str,
    content: bytes | Path = b"QS-SANDBOX-APP seed\n",
    *,
    owner: Actor = SYSTEM,
    stream: str | None = None,
    custom_properties: Mapping[str, Iterable[str]] | None = None,
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    """An app owned by ``owner``, with custom property values (definitions created if missing),
    tags, and published to the stream named (or with the id) ``stream`` if given."""
    received = apps.incoming_file(repo)
    if isinstance(content, Path):
        apps._link_or_copy(content, received)
    else:
        received.write_bytes(content)
    app = apps.add_app(repo, received, name, owner)
    with repo.lock:
        if custom_properties or tags:
            values = [
                {"value": value, "definition": {"id": seed_custom_property(repo, prop)["id"]}}
                for prop, prop_values in (custom_properties or {}).items()
                for value in prop_values
            ]
            body = {
                **repo.get("app", app["id"]),
                "customProperties": values,
                "tags": [{"id": seed_tag(repo, tag)["id"]} for tag in tags],
            }
            app = repo.update("app", app["id"], body, owner)
        if stream is not None:
            target = next((s for s in repo.streams if stream in (s["id"], s["name"])), None)
            if target is None:
                target = seed_stream(repo, stream)
            app = apps.publish_app(repo, app["id"], target["id"], owner, None)
    return app
