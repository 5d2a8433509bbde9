"""`qs-promoter up`: refuses bad settings, registers prefect.yaml, runs the stack, stops it all on Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trustme
from typer.testing import CliRunner

from promoter.child_processes import python_command, start_child, wait_for
from promoter.cli import app
from promoter.prefect_api import (
    ALERT_ON_PUBLISH,
    HANDLE_CHANGE,
    KEEP_SUBSCRIPTIONS,
    PLAN,
    PROMOTE,
    RECONCILE,
    ROLLBACK,
    with_prefect,
)
from promoter.sandbox.server import Sandbox
from promoter.services.stack import free_port
from promoter.settings import Settings, load_settings, write_settings
from promoter.webhook.address import public_address
from tests.fixtures.deployments import Registration, child_environment, cli_command
from tests.fixtures.stack import descendants
from tests.fixtures.webhook_tls import https_webhook_settings, issue_webhook_certificates

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

EXPECTED_DEPLOYMENTS = {
    HANDLE_CHANGE: (None, None),
    PROMOTE: (None, None),
    ALERT_ON_PUBLISH: (None, None),
    ROLLBACK: (None, None),
    PLAN: (None, None),
    KEEP_SUBSCRIPTIONS: (60.0, 1),
    RECONCILE: (600.0, 1),
}
START_TIMEOUT = 300  # a fresh Prefect database on a busy 2-core CI box
STOP_TIMEOUT = 90


def test_up_refuses_a_settings_file_with_an_error(tmp_path: Path) -> None:
    """A misspelt key stops `up` before anything starts: exit code 2, the file and the key named."""
    config = tmp_path / "qs-promoter.toml"
    config.write_text('[source_site]\nhost = "qlik-dev"\nprot = 4242\n', encoding="utf-8")

    result = CliRunner().invoke(app, ["up", "--config", str(config), "--state-dir", str(tmp_path / "var")])

    assert result.exit_code == 2
    assert f"{config}: source_site.prot: Extra inputs are not permitted" in result.output
    assert not (tmp_path / "var").exists()


def test_up_refuses_a_missing_webhook_secret(tmp_path: Path) -> None:
    """Without webhook.secret the webhook could not start: `up` says so (exit 2) and starts nothing."""
    config = tmp_path / "qs-promoter.toml"
    config.write_text('[source_site]\nhost = "qlik-dev"\n', encoding="utf-8")

    result = CliRunner().invoke(app, ["up", "--config", str(config), "--state-dir", str(tmp_path / "var")])

    assert result.exit_code == 2
    assert "webhook.secret must be at least 32 characters" in result.output


async def test_register_only_creates_every_deployment_of_prefect_yaml(
    registered_deployments: Registration,
) -> None:
    """`up --register-only` registers the six deployments with their schedules and limits, the work
    pool and the zombie-run automation, and leaves no process running."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async def read(client: PrefectClient) -> tuple:
        pool = await client.read_work_pool("qs-promoter")
        deployments = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=["qs-promoter"]))
        )
        flows = {f.id: f.name for f in await client.read_flows()}
        automations = await client.read_automations_by_name("qs-promoter-crash-zombie-flow-runs")
        return pool, deployments, flows, automations

    pool, deployments, flows, automations = await with_prefect(registered_deployments.api_url, read)

    found = {
        f"{flows[d.flow_id]}/{d.name}": (
            d.schedules[0].schedule.interval.total_seconds() if d.schedules else None,
            d.global_concurrency_limit.limit if d.global_concurrency_limit else None,
        )
        for d in deployments
    }
    assert found == EXPECTED_DEPLOYMENTS
    assert pool.type == "process"
    assert all(
        d.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
        == str(Path.cwd().resolve())
        for d in deployments
    )
    assert {
        (
            d.concurrency_options.collision_strategy.value,
            d.concurrency_options.grace_period_seconds,
            d.work_queue_name,
        )
        for d in deployments
        if d.concurrency_options
    } == {("ENQUEUE", 60, "maintenance")}
    assert len(automations) == 1
    assert "registered; nothing else was started" in registered_deployments.output


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_child_that_ignores_the_interrupt_is_terminated(tmp_path: Path) -> None:
    """stop() interrupts first; a child that ignores it is terminated after the grace period."""
    script = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "print('IGNORING' + 'SIGINT', flush=True); time.sleep(60)"
    )
    child = start_child(
        "stubborn",
        python_command("-c", script),
        env=child_environment(),
        cwd=tmp_path,
        log_file=tmp_path / "c.log",
    )
    assert wait_for(lambda: "IGNORINGSIGINT" in child.log_tail(), 20)  # (the command line has a '+')

    code = child.stop(grace_seconds=0.5)

    assert code == -signal.SIGTERM
    assert not child.alive()


def webhook_health(config: Path) -> httpx.Response:
    """GET /healthz at the webhook's public URL, verified against its webhook.tls_ca."""
    from promoter.settings import load_settings

    return public_address(load_settings(config).webhook).health(timeout=10.0)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stack_config(sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """Settings for `up` against the sandbox sites, with the webhook on HTTPS on a free loopback port
    (its certificate from a private CA, given as webhook.tls_ca)."""
    ca = trustme.CA(organization_name="up test webhook CA")
    certificates = issue_webhook_certificates(tmp_path / "webhook-tls", ca)
    webhook = https_webhook_settings(certificates, free_port(), tmp_path / "outbox.db")
    settings = sandbox_settings.model_copy(update={"webhook": webhook, "work_dir": tmp_path / "work"})
    yield write_settings(settings, tmp_path / "qs-promoter.toml")


def test_up_refuses_a_missing_webhook_key_before_starting_anything(
    stack_config: Path, tmp_path: Path
) -> None:
    """webhook.tls_key names a file that is not there: exit code 2 naming the setting and the file,
    before any process is started."""
    key = load_settings(stack_config).webhook.tls_key
    assert key is not None
    key.unlink()

    result = CliRunner().invoke(
        app, ["up", "--config", str(stack_config), "--state-dir", str(tmp_path / "var")]
    )

    assert result.exit_code == 2
    assert f"webhook.tls_key {key}: file not found" in result.output
    assert not (tmp_path / "var").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_up_runs_the_stack_and_ctrl_c_stops_every_process(stack_config: Path, tmp_path: Path) -> None:
    """Started from a shell that ignores SIGINT (as `cmd &` does), `up` brings up the Prefect server,
    executor and webhook (on HTTPS, checked against webhook.tls_ca); an executor that exits for its
    planned restart (here after one run: keep-subscriptions' first) is started again, not taken
    for a death; one SIGINT stops all of them and everything they started, with exit code 0."""
    prefect_port = free_port()
    env = child_environment(QSP_EXECUTOR_RESTART_AFTER_RUNS="1")
    env.pop("PREFECT_API_URL", None)
    up = shlex.join(
        cli_command(
            "up", "--config", str(stack_config), "--state-dir", "var", "--prefect-port", str(prefect_port)
        )
    )
    process = subprocess.Popen(
        ["/bin/sh", "-c", f"trap '' INT; exec {up}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )
    watchdog = threading.Timer(START_TIMEOUT + STOP_TIMEOUT, process.kill)  # never hang the suite
    watchdog.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        restarted = False
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            restarted = restarted or "exited for its planned restart; starting it again" in line
            if restarted and "executor 'qs-promoter-" in line and "taking runs of pool" in line:
                break
        output = "\n".join(lines)
        assert "Press Ctrl-C to stop." in output, output
        assert restarted, output
        children = descendants(process.pid)
        api = f"http://127.0.0.1:{prefect_port}/api"
        health = httpx.get(f"{api}/health", trust_env=False).json()
        webhook = webhook_health(stack_config)

        process.send_signal(signal.SIGINT)
        began = time.monotonic()
        rest, _ = process.communicate(timeout=STOP_TIMEOUT)
        stopped_in = time.monotonic() - began
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)

    assert health is True
    assert "webhook: listening at https://127.0.0.1:" in output
    # Once ready, what to do next: doctor with this settings file, a first approval, the UI's runs.
    ready = output[output.index("Ready. Next:") :]
    assert f'qs-promoter doctor --config "{stack_config}"' in ready
    assert "PromotionApproval = Approve" in ready
    assert f"Prefect UI: http://127.0.0.1:{prefect_port}/runs" in ready
    assert webhook.status_code == 200, webhook.text
    assert len(children) >= 3, output  # server, executor, webhook
    assert process.returncode == 0, output + rest
    assert [pid for pid in children if alive(pid)] == [], output + rest
    # (The executor may have ended for its next planned restart just before: one run each, here.)
    if "stopping executor" in rest:
        assert rest.index("stopping executor") < rest.index("stopping prefect-server")
    print(f"up: stopped in {stopped_in:.1f} s")
