"""Where every benchmark writes its figures: JSON plus a markdown table, with the command and the machine."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# QSP_BENCH_RESULTS moves them (the CI smoke run writes into a temporary folder).
RESULTS = Path(os.environ.get("QSP_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> dict[str, Any]:
    """Cores, memory and Python of this machine (the figures only mean something with these)."""
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text(encoding="utf-8").splitlines()[0].split()
        memory = f"{int(first[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cores": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def command() -> str:
    return " ".join(shlex.quote(part) for part in [Path(sys.executable).name, *sys.argv])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(name: str, rows: list[dict[str, Any]], notes: dict[str, Any] | None = None) -> Path:
    """Print and store the results as benchmarks/results/<name>.json and .md; returns the .md path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
    }
    document = {**header, "machine": machine(), "notes": notes or {}, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    text = (
        f"## {name}\n\n`{header['command']}` on {document['machine']['cores']} cores, "
        f"{document['machine']['memory']}, Python {document['machine']['python']} ({header['when']})\n\n"
        + markdown_table(rows)
    )
    if notes:
        text += "\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n"
    md = RESULTS / f"{name}.md"
    md.write_text(text, encoding="utf-8")
    print(text)
    return md
