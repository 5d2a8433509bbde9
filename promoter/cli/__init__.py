"""qs-promoter: promote Qlik Sense apps from a source site to target sites when an approver says so."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

from promoter.cli import demo, doctor, executor, operations, qlik, sandbox, up, webhook


class AdminHelp(TyperGroup):
    """Help that shows values as an admin types them: `--config FILE`, `--site SITE`, no Python types.

    Typer would print `<bool>` after every flag and `<list[str]>` after a repeatable option; each
    option gets a plain placeholder here instead, unless it names its own (``metavar=``).
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            plain_placeholder(param)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            for_admins(command, ctx)
        return command


class PlainArgument(TyperArgument):
    """An argument shown by its name alone (APP_ID), without Typer's type column (``<UUID>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def for_admins(command: Any, ctx: Any) -> None:
    """Plain placeholders for every option and argument of ``command`` and of its subcommands."""
    help_option = command.get_help_option(ctx)  # made once and kept by the command
    for param in [*command.params, *([help_option] if help_option else [])]:
        if type(param) is TyperArgument:
            param.__class__ = PlainArgument  # the same object, minus the type column
            param.metavar = param.metavar or (param.name or "value").upper()
        plain_placeholder(param)
    for sub in getattr(command, "commands", {}).values():
        for_admins(sub, ctx)


def plain_placeholder(param: Any) -> None:
    """FILE, FOLDER, NUMBER, SECONDS, a|b for choices, else the option's own name (SITE, APP_ID)."""
    if param.metavar is not None:
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value: nothing to show
        return
    described = getattr(param, "type_descriptor", None)
    name = (param.name or "value").upper()
    if described is None:
        param.metavar = name
    elif described.is_choice:
        param.metavar = "|".join(str(getattr(c, "value", c)) for c in described.choices or ())
    elif described.is_path:
        param.metavar = {"file": "FILE", "dir": "FOLDER"}.get(described.path_type, "PATH")
    elif described.annotation in (int, float):
        timed = any(word in name for word in ("SECONDS", "TIMEOUT", "GRACE"))
        param.metavar = "SECONDS" if timed else "NUMBER"
    else:
        param.metavar = name  # a repeated option names one value: --site SITE


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=AdminHelp)
app.command(name="demo")(demo.demo)
app.command(name="up")(up.up)
app.command(name="executor")(executor.executor)
app.command(name="doctor")(doctor.doctor)
app.command(name="promote")(operations.promote)
app.command(name="plan")(operations.plan)
app.command(name="rollback")(operations.rollback)
app.add_typer(
    operations.audit, name="audit", help="Export the promotions on record as CSV, for a Qlik dashboard."
)
app.add_typer(
    operations.subscriptions, name="subscriptions", help="The change subscriptions on the source site."
)
app.add_typer(
    qlik.app, name="qlik", help="Create what the source site's QMC must hold: custom properties, a tag."
)
app.add_typer(webhook.app, name="webhook", help="Receive the source site's change notifications.")
app.add_typer(
    sandbox.app, name="sandbox", help="Stand-in Qlik sites on this machine, for trying qs-promoter out."
)
