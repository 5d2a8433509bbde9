"""`qs-promoter demo`: the original's workflow on this machine, through the real service, step by step."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from promoter.cli.up import echo, stop_on_signals

ExitAfter = Annotated[
    bool,
    typer.Option(
        "--exit",
        help="Stop after the scenario; exit code 0 only if every step was verified (for CI).",
    ),
]
DemoDir = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="QSP_DEMO_DIR",
        file_okay=False,
        help="Folder for the demo's sites, certificates, settings, emails and Prefect database.",
    ),
]
StepTimeout = Annotated[
    float,
    typer.Option("--step-timeout", min=1, help="Seconds each step may take before it counts as failed."),
]


def demo(
    exit_after: ExitAfter = False, folder: DemoDir = Path("var/demo"), step_timeout: StepTimeout = 120.0
) -> None:
    """Show the whole workflow on this machine, with sandbox Qlik sites, step by step.

    Starts three sandbox Qlik sites (dev, test, prod), SMTP and S3 stand-ins, the Prefect server,
    executor and webhook; then a rep publishes, the manager is alerted and approves, and the app is
    promoted, versioned and unpublished. Each step is printed once verified.
    """
    root = folder.resolve()
    # The demo runs its own Prefect server with its own settings file: Prefect or qs-promoter
    # variables of this shell (PREFECT_API_URL, QSP_WEBHOOK__SECRET ...) would change either.
    # Before Prefect is imported here, because its settings are read once, at import.
    for name in [n for n in os.environ if n.upper().startswith(("PREFECT_", "QSP_"))]:
        del os.environ[name]
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from promoter.sandbox.demo import Demo, StepFailed
    from promoter.services.stack import Interrupted, StackError

    started = time.monotonic()
    scenario = Demo(root, echo=echo, step_timeout=step_timeout)
    failure: str | None = None
    with stop_on_signals(scenario.stop_requested.set):
        try:
            try:
                scenario.prepare()
                scenario.run_scenario()
            except (StepFailed, StackError) as exc:
                failure = str(exc)
            except Interrupted:
                failure = "stopped (Ctrl-C)"
            saved = scenario.save_mail()
            if failure is None:
                echo(
                    f"\nevery step verified in {time.monotonic() - started:.1f} s ({len(saved)} emails saved)"
                )
            else:
                echo(f"\nFAILED: {failure}", err=True)
                for line in scenario.flow_run_report():
                    echo(line, err=True)
            for line in scenario.where_to_look():
                echo(line)
            if not exit_after and not scenario.stop_requested.is_set() and scenario.stack is not None:
                echo("\nThe stack keeps running; press Ctrl-C to stop.")
                died = scenario.stack.watch()
                if died is not None:
                    echo(f"error: {died.name} exited with code {died.returncode}", err=True)
        finally:
            echo("stopping ...")
            scenario.stop()
            echo("stopped")
    if failure is not None:
        raise typer.Exit(1)
