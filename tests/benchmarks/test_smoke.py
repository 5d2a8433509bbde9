"""Smoke-sized runs of the benchmarks, so they never rot: tiny loads, the same code paths, real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.slow


def run_benchmark(script: str, args: list[str], prefect_api: str, out: Path) -> list[dict[str, object]]:
    env = {**os.environ, "QSP_BENCH_PREFECT_API_URL": prefect_api, "QSP_BENCH_RESULTS": str(out)}
    env.pop("QSP_CONFIG", None)
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--name", "smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "smoke.md").is_file()
    return json.loads((out / "smoke.json").read_text(encoding="utf-8"))["rows"]


def test_intake_benchmark_loses_nothing_and_filters_irrelevant_updates(
    prefect_api: str, tmp_path: Path
) -> None:
    """A small intake run: every app's newest change reaches a flow run once; plain app updates reach none."""
    args = ["--notifications", "200", "--senders", "10", "--apps", "10", "--irrelevant", "30"]

    relevant, irrelevant = run_benchmark("intake.py", args, prefect_api, tmp_path)

    assert (relevant["lost"], relevant["duplicate runs"]) == (0, 0)
    assert irrelevant["flow runs"] == 0


def test_transfer_benchmark_uploads_once_per_site(prefect_api: str, tmp_path: Path) -> None:
    """A 2 MB promotion to two sites and two streams: one upload per site, the app's bytes once each."""
    args = ["--sizes-mb", "2", "--sites", "2", "--streams", "2", "--modes", "overwrite,duplicate"]

    rows = run_benchmark("transfer.py", args, prefect_api, tmp_path)

    assert [(r["mode"], r["uploads per site"], r["MB sent per site"]) for r in rows] == [
        ("overwrite", 1, 2.0),
        ("duplicate", 1, 2.0),
    ]


def test_end_to_end_benchmark_on_postgresql_with_two_workers(prefect_api: str, tmp_path: Path) -> None:
    """Two approvals one at a time, two at once and three at the executors' pace, through the demo's
    whole stack on PostgreSQL with two workers: each is measured until its promotion completes, the
    burst's are promoted once each (ledger and target site), the executors' and the server's CPU
    per approval and the executors' memory are read, and the server records the runs' task runs."""
    args = ["--runs", "2", "--burst", "2", "--soak", "3", "--database", "postgresql", "--workers", "2"]

    (row,) = run_benchmark("end_to_end.py", args, prefect_api, tmp_path)

    counts = (row["database"], row["workers"], row["runs"], row["burst"], row["soak"])
    assert counts == ("postgresql", 2, 2, 2, 3)
    assert 0 < row["p50 s"] <= row["max s"]
    assert row["all complete after s"] > 0
    once = ("burst promoted once (ledger)", "burst on target once", "burst lost", "burst twice")
    assert [row[column] for column in once] == [2, 2, 0, 0]
    assert row["soak not promoted"] == 0
    for phase in ("latency", "burst", "soak"):
        assert row[f"{phase}: executor CPU-s/approval"] > 0
        assert row[f"{phase}: server CPU-s/approval"] > 0
    assert 0 < row["executor RSS MB"] <= row["executor peak RSS MB"]
    assert row["task runs/approval"] > 0
    assert row["flow runs"] >= 14  # a publish run and a change run per approval
