"""The sandbox fixtures and seeding helpers other tests build on."""

from __future__ import annotations

from promoter.qrs.models import App
from promoter.qrs.tls import site_tls
from promoter.sandbox.repository import Actor
from promoter.sandbox.seed import seed_app, seed_stream, seed_user
from promoter.sandbox.server import Sandbox
from promoter.settings import Settings

from .conftest import Qrs


def test_sandbox_settings_point_at_the_sites(sandbox: Sandbox, sandbox_settings: Settings) -> None:
    """source is dev as INTERNAL\\sa_api; targets test and prod; certificate folders are the sandbox's."""
    dev = sandbox.sites["dev"]

    assert sandbox_settings.source_site.base_url == dev.base_url
    assert (sandbox_settings.source_site.user_directory, sandbox_settings.source_site.user_id) == (
        "INTERNAL",
        "sa_api",
    )
    assert list(sandbox_settings.target_sites) == ["test", "prod"]
    assert sandbox_settings.cert_dir("source") == dev.cert_dir
    assert sandbox_settings.cert_dir("prod") == sandbox.cert_root / "prod"
    site_tls(sandbox_settings.cert_dir("test"))  # loads: the three files are there


def test_seeded_app_is_visible_through_qrs(sandbox: Sandbox, qrs: Qrs) -> None:
    """seed_app creates the owner, the custom property definitions, tags and the stream, then publishes."""
    repo = sandbox.sites["dev"].repository
    seed_user(repo, "ACME", "alice", name="Alice", email="alice@example.com")
    seed_stream(repo, "Finance")

    seeded = seed_app(
        repo,
        "Budget",
        b"qvf",
        owner=Actor("ACME", "alice"),
        stream="Finance",
        custom_properties={"PromoteToServer": ["test", "prod"], "PromotionApproval": ["Approve"]},
        tags=["AutoPromoteOnReload"],
    )

    app = App.model_validate(qrs.get(f"/qrs/app/{seeded['id']}").json())
    assert (app.name, app.owner.account, app.published) == ("Budget", "ACME\\alice", True)
    assert app.stream is not None and app.stream.name == "Finance"
    assert app.custom_values("PromoteToServer") == ["test", "prod"]
    assert app.has_tag("AutoPromoteOnReload")
    user = qrs.get("/qrs/user/full", params={"filter": "userId eq 'alice'"}).json()[0]
    assert [(a["attributeType"], a["attributeValue"]) for a in user["attributes"]] == [
        ("email", "alice@example.com")
    ]


def test_sites_have_separate_state(sandbox: Sandbox) -> None:
    """Each site is its own Qlik site: an app seeded on dev is not on test."""
    seed_app(sandbox.sites["dev"].repository, "Only on dev")

    assert [a["name"] for a in sandbox.sites["dev"].repository.apps] == ["Only on dev"]
    assert sandbox.sites["test"].repository.apps == []
