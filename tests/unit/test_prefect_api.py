"""promoter/prefect_api.py as plain data: the deployments' names, a change run's parameters, run names."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID, uuid4

import pytest
import yaml
from prefect.client.schemas.objects import FlowRun

from promoter.outcome import named_by_us
from promoter.prefect_api import (
    DEPLOYMENTS,
    HANDLE_CHANGE,
    KEEP_SUBSCRIPTIONS,
    PROMOTE,
    change_parameters,
    current_name,
    deployment_part,
    first_run_name,
    names_to_give,
)

PROJECT = Path(__file__).resolve().parents[2]
HOSTILE = "Q3\r\nforged [x](https://evil)\x1b[31m\u202e" + "é" * 300


def test_each_deployment_is_named_for_how_its_runs_start() -> None:
    """The Deployments page reads as a list of jobs, not seven rows called qs-promoter."""
    assert DEPLOYMENTS == (
        "handle-app-change/on-qrs-change",
        "promote-app/manual",
        "rollback-app/manual",
        "alert-on-publish/manual",
        "plan-promotion/manual",
        "keep-subscriptions/every-minute",
        "reconcile/every-10-minutes",
    )


def test_prefect_yaml_registers_the_names_the_code_uses() -> None:
    """prefect.yaml's deployment names, each with its flow's entrypoint, are prefect_api's; the two
    scheduled ones have the schedule their name says."""
    project = yaml.safe_load((PROJECT / "prefect.yaml").read_text(encoding="utf-8"))
    entrypoints = {
        "handle-app-change": "promoter/flows/handle.py:handle_app_change",
        "promote-app": "promoter/flows/manual.py:promote_app",
        "rollback-app": "promoter/flows/rollback.py:rollback_app",
        "alert-on-publish": "promoter/flows/alert.py:alert_on_publish",
        "plan-promotion": "promoter/flows/plan.py:plan_promotion",
        "keep-subscriptions": "promoter/flows/subscriptions.py:keep_subscriptions",
        "reconcile": "promoter/flows/reconcile.py:reconcile",
    }
    by_entrypoint = {d["entrypoint"]: d for d in project["deployments"]}

    registered = {f"{flow}/{by_entrypoint[entry]['name']}" for flow, entry in entrypoints.items()}
    intervals = {d["name"]: [s["interval"] for s in d.get("schedules", [])] for d in project["deployments"]}

    assert registered == set(DEPLOYMENTS)
    assert (intervals["every-minute"], intervals["every-10-minutes"]) == ([60], [600])


def test_a_retired_name_means_the_same_flows_deployment_today() -> None:
    """`<flow>/qs-promoter` (every deployment's name before) is read as today's deployment of that flow;
    other names are left as given (a test's own deployment)."""
    assert current_name("handle-app-change/qs-promoter") == HANDLE_CHANGE
    assert current_name("keep-subscriptions/qs-promoter") == KEEP_SUBSCRIPTIONS
    assert current_name("handle-app-change/webhook-tests") == "handle-app-change/webhook-tests"
    assert current_name("someone-else/qs-promoter") == "someone-else/qs-promoter"
    assert deployment_part(PROMOTE) == "manual"


def test_a_change_runs_parameters_carry_the_publish_only_for_a_publish() -> None:
    """The webhook and reconcile give handle-app-change the same parameters; where and when an app was
    published only for a publish."""
    published = change_parameters("a1", "published", "k", published_to="s1", published_at="t1")
    updated = change_parameters("a1", "updated", "k", published_to="s1", published_at="t1")

    assert published == {
        "app_id": "a1",
        "trigger": "published",
        "change_id": "k",
        "published_to": "s1",
        "published_at": "t1",
    }
    assert updated == {"app_id": "a1", "trigger": "updated", "change_id": "k"}


@pytest.mark.parametrize(
    ("flow", "parameters", "expected"),
    [
        ("handle-app-change", {"app_id": "a1", "trigger": "reloaded"}, "reload of app a1"),
        ("promote-app", {"app_id": "a1"}, "manual promotion of app a1"),
        ("rollback-app", {"site_name": "prod", "target_app_id": "t1"}, "rollback of app t1 on prod"),
        ("alert-on-publish", {"app_id": "a1"}, "publish alert for app a1"),
        ("plan-promotion", {"app_id": "a1"}, "plan for app a1"),
        ("keep-subscriptions", {}, "keep subscriptions"),
        ("reconcile", {"deployment_name": HANDLE_CHANGE}, "reconcile missed changes"),
    ],
)
def test_every_run_is_named_by_its_action_from_its_parameters(
    flow: str, parameters: dict[str, str], expected: str
) -> None:
    """What the run list shows before a flow knows the app's name: the action in words and the app."""
    assert first_run_name(flow, parameters) == expected
    assert named_by_us(expected)


def test_a_run_name_from_typed_parameters_is_one_short_line() -> None:
    """A Custom run's parameters are typed by a UI user: the name has no line breaks, control or bidi
    characters and stays within the run list's room."""
    names = [
        first_run_name("rollback-app", {"site_name": HOSTILE, "target_app_id": HOSTILE}),
        first_run_name("promote-app", {"app_id": HOSTILE}),
        first_run_name("handle-app-change", {"app_id": HOSTILE, "trigger": HOSTILE}),
    ]

    assert all(len(name) <= 100 and name.isprintable() for name in names), names
    assert not any(c in name for name in names for c in "\r\n\x1b\u202e")


def test_only_the_runs_prefect_named_are_given_a_name_and_each_its_flows() -> None:
    """The executor names the Scheduled runs Prefect made up a name for (a scheduled tick, a Custom
    run for later) by their deployment's flow and parameters; a name of ours stays, and a run of a
    deployment the executor does not know is left alone."""
    keeper, promote, unknown = uuid4(), uuid4(), uuid4()
    flows = {keeper: "keep-subscriptions", promote: "promote-app"}

    def scheduled(name: str, deployment: UUID | None, **parameters: str) -> FlowRun:
        return FlowRun(flow_id=uuid4(), name=name, deployment_id=deployment, parameters=parameters)

    tick = scheduled("notorious-penguin", keeper)
    custom = scheduled("malachite-mongrel", promote, app_id="a1")
    ours = scheduled("promote 'Sales' (approved by ACME\\jane)", promote, app_id="a1")
    elsewhere = scheduled("quiet-otter", unknown)
    without_deployment = scheduled("brave-heron", None)

    wanted = names_to_give([tick, custom, ours, elsewhere, without_deployment], flows)

    assert wanted == {tick.id: "keep subscriptions", custom.id: "manual promotion of app a1"}
    assert names_to_give([], flows) == {}
