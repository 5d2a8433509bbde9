"""`qs-promoter qlik setup`: the source site's custom properties and reload tag, created and kept in step
with the settings and the target sites' streams, against the sandbox sites over QRS."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from promoter.cli import app
from promoter.qlik_setup import set_up
from promoter.sandbox.repository import SYSTEM, Repository
from promoter.sandbox.seed import seed_app, seed_custom_property, seed_stream
from promoter.sandbox.server import Sandbox
from promoter.settings import (
    EmailSettings,
    ReloadSettings,
    Settings,
    UnpublishSettings,
    VersioningSettings,
    write_settings,
)

SERVERS = ["test - Overwrite", "test - Duplicate", "prod - Overwrite", "prod - Duplicate"]
EVERYTHING = {
    "PromotionApproval": (["App"], ["Approve", "Deny"]),
    "PromoteToServer": (["App"], SERVERS),
    "PromoteToStream": (["App"], ["Everyone", "Review"]),
    "PromotionS3Versioning": (["App"], ["True"]),
    "PromotionUnpublish": (["App"], ["True"]),
    "PromoteOnReload": (["App"], ["True"]),
    "EmailAlertOnPublishTo": (["Stream"], ["True"]),
    "CanPromote": (["User"], ["True"]),
    "CanPromoteFrom": (["Stream"], ["True"]),
    "CanPromoteGroup": (["Stream", "User"], []),
}  # fmt: skip


def every_option_on(settings: Settings) -> Settings:
    """Settings that use every property: versioning, PromotionUnpublish, promote on reload, email."""
    return settings.model_copy(
        update={
            "versioning": VersioningSettings(enabled=True, bucket="qs-promoter-versions"),
            "unpublish": UnpublishSettings(auto=False),
            "promote_on_reload": ReloadSettings(enabled=True),
            "email": EmailSettings(enabled=True),
        }
    )


def with_streams(sandbox: Sandbox) -> None:
    """The target sites' streams: Everyone and Review on test, Everyone on prod (one choice)."""
    for site, names in {"test": ("Everyone", "Review"), "prod": ("everyone",)}.items():
        for name in names:
            seed_stream(sandbox.sites[site].repository, name)


def definitions(repo: Repository) -> dict[str, tuple[list[str], list[str]]]:
    return {d["name"]: (d["objectTypes"], d["choiceValues"]) for d in repo.custom_property_definitions}


def setup(settings: Settings, tmp_path: Path, *options: str) -> Result:
    config = write_settings(settings, tmp_path / "qs-promoter.toml")
    return CliRunner().invoke(app, ["qlik", "setup", "--config", str(config), *options])


def test_setup_on_a_bare_source_site_creates_every_property_and_the_reload_tag(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """With every option on, setup creates the ten definitions on their object types, PromoteToServer
    with Overwrite and Duplicate per target site, PromoteToStream with the target sites' streams
    (case-insensitively once), and the reload tag; it says what it did and what is left to the admin."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository

    result = setup(every_option_on(sandbox_settings), tmp_path)

    assert result.exit_code == 0, result.output
    assert definitions(dev) == EVERYTHING
    assert [t["name"] for t in dev.tags] == ["AutoPromoteOnReload"]
    assert result.output.count("done: create the custom property") == 10
    assert "done: create the tag AutoPromoteOnReload" in result.output
    assert "next: add your groups (e.g. Sales_Admin) as choices of CanPromoteGroup" in result.output


def test_setup_creates_only_what_the_settings_use(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """With versioning, email and promote-on-reload off and unpublishing automatic, the optional
    properties and the tag are not created."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository

    result = setup(sandbox_settings, tmp_path)

    assert result.exit_code == 0, result.output
    always = ["PromotionApproval", "PromoteToServer", "PromoteToStream"]
    assert sorted(definitions(dev)) == sorted([*always, "CanPromote", "CanPromoteFrom", "CanPromoteGroup"])
    assert dev.tags == []


def test_a_second_run_changes_nothing(sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path) -> None:
    """Run again with nothing new, setup changes no definition (not even its modifiedDate) and says so."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    settings = every_option_on(sandbox_settings)
    assert setup(settings, tmp_path).exit_code == 0
    before = (dev.custom_property_definitions, dev.tags)

    result = setup(settings, tmp_path)

    assert result.exit_code == 0, result.output
    assert (dev.custom_property_definitions, dev.tags) == before
    assert "nothing to change on the source site" in result.output
    assert "done:" not in result.output


def test_a_dry_run_prints_the_plan_and_changes_nothing(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """--dry-run lists each definition it would create or change, with the reasons for a change, and
    the source site stays as it was."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    seed_custom_property(dev, "PromoteToServer", ["test - Overwrite", "old - Overwrite"])
    before = dev.custom_property_definitions

    result = setup(every_option_on(sandbox_settings), tmp_path, "--dry-run")

    assert result.exit_code == 0, result.output
    assert dev.custom_property_definitions == before
    assert dev.tags == []
    assert "dry run, nothing changed" in result.output
    assert "create the custom property PromotionApproval on App with the choices 'Approve', 'Deny'" in (
        result.output
    )
    assert (
        "create the custom property EmailAlertOnPublishTo on Stream with the choices 'True'" in result.output
    )
    assert "create the tag AutoPromoteOnReload" in result.output
    assert (
        "change the custom property PromoteToServer: add the choices 'test - Duplicate', 'prod - Overwrite', "
        "'prod - Duplicate'; remove the unused choices 'old - Overwrite'"
    ) in result.output
    assert "because PromoteToServer choice 'old - Overwrite' is not 'alias - Overwrite'" in result.output
    assert "done:" not in result.output


def test_choices_follow_a_new_target_site_and_a_new_stream(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """Set up for the test site alone, then add the prod site and a Finance stream on it: a second run
    adds prod's Overwrite and Duplicate and the Finance stream, and keeps the rest."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    only_test = sandbox_settings.model_copy(
        update={"target_sites": {"test": sandbox_settings.target_sites["test"]}}
    )
    assert setup(only_test, tmp_path).exit_code == 0
    assert definitions(dev)["PromoteToServer"][1] == ["test - Overwrite", "test - Duplicate"]
    seed_stream(sandbox.sites["prod"].repository, "Finance")

    result = setup(sandbox_settings, tmp_path)

    assert result.exit_code == 0, result.output
    assert definitions(dev)["PromoteToServer"][1] == SERVERS
    assert definitions(dev)["PromoteToStream"][1] == ["Everyone", "Review", "Finance"]
    assert "add the choices 'prod - Overwrite', 'prod - Duplicate'" in result.output


def test_a_choice_in_use_is_never_removed(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """After the prod site and the Review stream leave, their unused choices go, but 'prod - Overwrite'
    and 'Review', set on an app, stay; setup says so and how to clear them."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    assert setup(sandbox_settings, tmp_path).exit_code == 0
    seed_app(
        dev,
        "Sales",
        custom_properties={"PromoteToServer": ["prod - Overwrite"], "PromoteToStream": ["Review"]},
    )
    only_test = sandbox_settings.model_copy(
        update={"target_sites": {"test": sandbox_settings.target_sites["test"]}}
    )
    test = sandbox.sites["test"].repository
    test.delete("stream", next(s["id"] for s in test.streams if s["name"] == "Review"), SYSTEM)

    result = setup(only_test, tmp_path)

    assert result.exit_code == 0, result.output
    assert definitions(dev)["PromoteToServer"][1] == [
        "test - Overwrite",
        "test - Duplicate",
        "prod - Overwrite",
    ]
    assert definitions(dev)["PromoteToStream"][1] == ["Everyone", "Review"]
    assert "remove the unused choices 'prod - Duplicate'" in result.output
    assert (
        "left as it is: PromoteToServer choice 'prod - Overwrite' is not 'alias - Overwrite'" in result.output
    )
    assert (
        "left as it is: PromoteToStream choice 'Review' is not a stream on any target site" in result.output
    )
    assert "fix: clear it where it is set (App) in the QMC" in result.output


def test_a_definition_on_the_wrong_objects_or_with_another_case_is_corrected(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """CanPromoteGroup only on streams gains User (its groups kept); 'canpromote' is renamed to the
    settings' CanPromote, which qs-promoter compares exactly; an admin's extra choice stays."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    seed_custom_property(dev, "CanPromoteGroup", ["Sales_Admin"], ["Stream"])
    seed_custom_property(dev, "canpromote", ["True", "False"], ["User"])

    result = setup(sandbox_settings, tmp_path)

    assert result.exit_code == 0, result.output
    assert definitions(dev)["CanPromoteGroup"] == (["Stream", "User"], ["Sales_Admin"])
    assert definitions(dev)["CanPromote"] == (["User"], ["True", "False"])
    assert "change the custom property CanPromoteGroup: allow it on User" in result.output
    assert "change the custom property CanPromote: rename it from 'canpromote'" in result.output
    assert "next:" not in result.output  # CanPromoteGroup has a group


def test_a_definition_changed_in_the_qmc_meanwhile_is_read_again(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """Someone edits PromoteToStream in the QMC after setup read it: QRS refuses the stale change (409),
    setup reads the site again and finishes, the choices following the target sites."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    stream_property = seed_custom_property(dev, "PromoteToStream", ["Everyone"])
    said: list[str] = []

    def say(line: str) -> None:
        if not said:  # after the first step: an admin adds a choice by hand
            edited = {
                **dev.get("custompropertydefinition", stream_property["id"]),
                "choiceValues": ["Everyone", "Adhoc"],
            }
            dev.update("custompropertydefinition", stream_property["id"], edited, SYSTEM)
        said.append(line)

    found = asyncio.run(set_up(sandbox_settings, dry_run=False, say=say))

    assert found.plan.steps == ()
    assert any("was changed by someone else meanwhile" in line for line in said), said
    assert definitions(dev)["PromoteToStream"][1] == ["Everyone", "Review"]


def test_an_unreadable_target_site_adds_what_is_known_and_removes_no_stream(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """When prod cannot be read, setup still creates what it can, keeps every stream choice, names the
    site and why, and ends with exit code 1."""
    with_streams(sandbox)
    dev = sandbox.sites["dev"].repository
    seed_custom_property(dev, "PromoteToStream", ["Everyone", "Finance"])
    sandbox.sites["prod"].add_fault("status", path="^/qrs/stream", status=503, body="Service Unavailable")

    result = setup(sandbox_settings, tmp_path)

    assert result.exit_code == 1, result.output
    assert definitions(dev)["PromoteToStream"][1] == ["Everyone", "Finance", "Review"]
    assert "PromotionApproval" in definitions(dev)
    assert "warning: could not read the streams of prod" in result.output
    assert "the streams of prod could not be read, so no stream choice is removed" in result.output
