"""The qs-promoter command line: one typer app, one sub-module per admin task."""

from __future__ import annotations

import typer

from promoter.cli import demo, doctor, executor, operations, qlik, sandbox, up, webhook

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.command(name="demo")(demo.demo)
app.command(name="up")(up.up)
app.command(name="executor")(executor.executor)
app.command(name="doctor")(doctor.doctor)
app.command(name="promote")(operations.promote)
app.command(name="plan")(operations.plan)
app.command(name="rollback")(operations.rollback)
app.add_typer(operations.audit, name="audit", help="The ledger of promotions, for a Qlik dashboard.")
app.add_typer(operations.subscriptions, name="subscriptions", help="The QRS change subscriptions.")
app.add_typer(qlik.app, name="qlik", help="What the source site's QMC must hold: custom properties, a tag.")
app.add_typer(webhook.app, name="webhook", help="The receiver of QRS change notifications.")
app.add_typer(sandbox.app, name="sandbox", help="A local stand-in for Qlik sites (QRS), for tests and demos.")
