"""`qs-promoter qlik setup`: create in the source site's QMC what qs-promoter reads there.

That is the custom properties an admin set up by hand in the original (PromotionApproval,
PromoteToServer, PromoteToStream and the others the settings use) and the reload tag; see
promoter/qlik_setup.py for what is wanted and why.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from promoter.cli.operations import settings_or_exit
from promoter.cli.options import ConfigFile
from promoter.errors import PromoterError
from promoter.qlik_setup import Step, StepKind, Survey, set_up

app = typer.Typer(no_args_is_help=True)

DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Show what would be created or changed on the source site; change nothing."
    ),
]


@app.callback()
def qlik() -> None:
    """What the source site's QMC must hold for qs-promoter: custom properties and a tag."""


@app.command()
def setup(dry_run: DryRun = False, config: ConfigFile = None) -> None:
    """Create the custom properties and the reload tag on the source site, or bring them up to date.

    Run it again after adding a target site or a stream there: the PromoteToServer and
    PromoteToStream choices follow. A choice is only removed when no app has it set.
    """
    settings = settings_or_exit(config)
    where = f"the source site ({settings.source_site.base_url})"
    done: list[str] = []

    def say(line: str) -> None:
        done.append(line)
        typer.echo(line)

    try:
        found = asyncio.run(set_up(settings, dry_run=dry_run, say=say))
    except PromoterError as exc:
        typer.echo(f"error: {exc}", err=True)
        typer.echo(
            "hint: `qs-promoter doctor` checks the certificates and the connection; running setup again "
            "continues where it stopped",
            err=True,
        )
        raise typer.Exit(1) from None
    left = found.plan.steps
    if dry_run and left:
        typer.echo(f"dry run, nothing changed; on {where} `qs-promoter qlik setup` would:")
        for step in left:
            typer.echo(f"  {step.summary()}")
            typer.echo("".join(f"    because {problem}\n" for problem in reasons(step)), nl=False)
    elif left:
        typer.echo(f"still to do on {where} (it changed while setup ran?):")
        typer.echo("".join(f"  {step.summary()}\n" for step in left), nl=False)
    elif not done:
        typer.echo(f"nothing to change on {where}")
    report_the_rest(found, changed=bool(done))
    if (left and not dry_run) or found.unread:
        raise typer.Exit(1)


def reasons(step: Step) -> tuple[str, ...]:
    """Why a change is needed; a creation says it all itself."""
    return () if step.kind is not StepKind.CHANGE else step.problems


def report_the_rest(found: Survey, *, changed: bool) -> None:
    """What is in order, what setup leaves alone, and what only the admin can do."""
    plan = found.plan
    if plan.in_order:
        typer.echo(f"{'now in order' if changed else 'in order'}: {', '.join(plan.in_order)}")
    for alias, reason in found.unread.items():
        typer.echo(f"warning: could not read the streams of {alias}: {reason}")
    for note in plan.notes:
        typer.echo(f"left as it is: {note.text}\n  fix: {note.hint}")
    for advice in plan.advice:
        typer.echo(f"next: {advice}")
