"""Measure app upload and export throughput (MB/s) through a sandbox site on loopback.

    .venv/bin/python benchmarks/transfer_throughput.py [--size-mb 200] [--repeat 1]

The sandbox site runs in this process (its own thread and event loop), the client in the main
thread, both over real mutual TLS; on a small machine the two share the CPU, so the figures are
a floor for one client talking to one QRS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from promoter.qrs.client import QrsClient
from promoter.sandbox.server import Sandbox
from promoter.sandbox.synthetic import make_app_file
from promoter.settings import SiteSettings

MB = 1024 * 1024


async def measure(
    site: SiteSettings, cert_dir: Path, file: Path, size_mb: float, work: Path, repeat: int
) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"upload": [], "export": []}
    async with QrsClient(site, cert_dir, name="bench") as qrs:
        await qrs.about()  # the TLS handshake is not part of the transfer
        for run in range(repeat):
            started = time.perf_counter()
            app = await qrs.upload_app(file, f"bench-{run}")
            rates["upload"].append(size_mb / (time.perf_counter() - started))

            dest = work / f"export-{run}.qvf"
            started = time.perf_counter()
            await qrs.export_app(app.id, dest)
            rates["export"].append(size_mb / (time.perf_counter() - started))
            dest.unlink()
            await qrs.delete_app(app.id)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qsp-bench-") as folder:
        work = Path(folder)
        file = make_app_file(work / "app.qvf", args.size_mb * MB, seed="bench")
        with Sandbox({"bench": ("127.0.0.1", 0)}, work / "certs", work / "data") as sandbox:
            bench = sandbox.sites["bench"]
            site = SiteSettings(host=bench.host, port=bench.port)
            rates = asyncio.run(measure(site, bench.cert_dir, file, args.size_mb, work, args.repeat))

    print(f"app size: {args.size_mb} MB, runs: {args.repeat}")
    for direction, values in rates.items():
        print(
            f"{direction:>6}: median {statistics.median(values):7.1f} MB/s"
            f"  (min {min(values):.1f}, max {max(values):.1f})"
        )


if __name__ == "__main__":
    main()
