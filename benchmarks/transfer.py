"""Measure promotions of large apps: wall time, bytes sent per site and peak memory, against "the limit".

    .venv/bin/python benchmarks/transfer.py [--sizes-mb 50,500,2048] [--sites 1,3,5] [--streams 1,3]
                                            [--modes overwrite,duplicate] [--bandwidth-mb 100]

The sandbox sites (dev and up to five targets) run in their own process (`qs-promoter sandbox
up`), each transfer limited to --bandwidth-mb MB/s as a real network would be; a temporary
Prefect server runs in another. This process runs the promotion flow itself (the worker's job),
so its peak RSS is the memory a promotion costs. For Overwrite, each target stream first holds a
small app of the same name, which the promotion replaces. "The limit" is one export plus one
upload at the bandwidth (2 x size / bandwidth): a promotion to any number of sites cannot beat
it, since every site needs the bytes once; ours/limit shows the overhead.

The small-app case, where the fixed cost of a flow run shows (issue 9 asks for it: 50 MB, one
site, one stream), is part of the default cases and is printed on its own line at the end; alone:

    .venv/bin/python benchmarks/transfer.py --sizes-mb 50 --sites 1 --streams 1 --modes overwrite

Before the cases, one 1 MB promotion runs unmeasured (--no-warm-up skips it): as in the
long-lived executor, the first run's one-time costs (imports, the Prefect client, the flow's
first registration) are not a promotion's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HOME = Path(tempfile.mkdtemp(prefix="qsp-bench-prefect-"))
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_HOME / "results")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from prefect_server import prefect_server  # noqa: E402
from results import write  # noqa: E402

from promoter.flows.handle import handle_app_change  # noqa: E402
from promoter.qrs.client import QrsClient  # noqa: E402
from promoter.qrs.tls import site_tls  # noqa: E402
from promoter.sandbox.synthetic import make_app_file  # noqa: E402
from promoter.sandbox.world import MANAGER, REP, World, build_world, publish_as, set_properties  # noqa: E402
from promoter.settings import Settings, SiteSettings, UnpublishSettings, write_settings  # noqa: E402

MB = 1_000_000
STREAMS = ("Everyone", "Review", "Finance")


@contextmanager
def sandbox(names: list[str], folder: Path) -> Iterator[dict[str, SiteSettings]]:
    """`qs-promoter sandbox up` in its own process; yields the sites' settings once all listen."""
    exe = Path(sys.executable).with_name("qs-promoter")
    args = [str(exe), "sandbox", "up", "--certs", str(folder / "certs"), "--data", str(folder / "data")]
    for name in names:
        args += ["--site", f"{name}=127.0.0.1:0"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        sites: dict[str, SiteSettings] = {}
        assert process.stdout is not None
        while len(sites) < len(names):
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the sandbox stopped before all sites listened")
            name, url, cert_dir = line.rstrip("\n").split("\t")
            port = int(url.rsplit(":", 1)[1])
            sites[name] = SiteSettings(host="127.0.0.1", port=port, cert_dir=Path(cert_dir))
        yield sites
    finally:
        process.terminate()
        process.wait(timeout=30)


class PeakRss:
    """Peak resident memory of this process while the block runs, sampled every 20 ms (Linux)."""

    def __init__(self) -> None:
        self.peak = self.baseline = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss() -> int:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def control(site: SiteSettings, method: str, path: str, **kw: Any) -> Any:
    assert site.cert_dir is not None
    with httpx.Client(base_url=site.base_url, verify=site_tls(site.cert_dir), trust_env=False) as http:
        response = http.request(method, path, **kw)
        response.raise_for_status()
        return response.json() if response.content else None


async def prepare_streams(settings: Settings, world: World) -> None:
    for name in settings.target_sites:
        async with QrsClient.for_site(settings, name) as target:
            for stream in STREAMS:
                if stream not in world.target_streams[name]:
                    created = await target.create_entity("stream", {"name": stream})
                    world.target_streams[name][stream] = created["id"]


async def place_existing(
    settings: Settings, world: World, sites: list[str], streams: tuple[str, ...], name: str, tmp: Path
) -> None:
    """Overwrite needs something to overwrite: a small app of the same name in each target stream."""
    small = make_app_file(tmp / "small.qvf", 20_000, seed="old")
    for site in sites:
        async with QrsClient.for_site(settings, site) as target:
            for stream in streams:
                app = await target.upload_app(small, name)
                await target.publish_app(app.id, world.target_streams[site][stream])


async def clean(settings: Settings) -> None:
    """Delete every app on every site, so the next case starts empty and the disk does not fill."""
    for site in ["source", *settings.target_sites]:
        async with QrsClient.for_site(settings, site) as qrs:
            for app in await qrs.apps():
                await qrs.delete_app(app.id)


async def one_case(
    settings: Settings,
    world: World,
    app_file: Path,
    size: int,
    sites: int,
    streams: int,
    mode: str,
    bandwidth: int,
    tmp: Path,
    index: int,
) -> dict[str, Any]:
    targets = list(settings.target_sites)[:sites]
    wanted = STREAMS[:streams]
    name = f"Bench {size // MB} MB #{index}"
    if mode == "overwrite":
        await place_existing(settings, world, targets, wanted, name, tmp)
    app = await publish_as(settings, REP, app_file, name, world.sales_stream_id)
    await set_properties(
        settings, MANAGER, app.id, world,
        {
            "PromoteToServer": [f"{t} - {mode.capitalize()}" for t in targets],
            "PromoteToStream": list(wanted),
            "PromotionApproval": ["Approve"],
        },
    )  # fmt: skip
    before = {t: control(settings.site(t), "GET", "/sandbox/traffic") for t in targets}
    with PeakRss() as rss:
        started = time.perf_counter()
        await handle_app_change(app.id, "updated")
        wall = time.perf_counter() - started
    after = {t: control(settings.site(t), "GET", "/sandbox/traffic") for t in targets}
    sent = [after[t].get("bytes in", 0) - before[t].get("bytes in", 0) for t in targets]
    uploads = [
        after[t].get("POST /qrs/app/upload", 0) - before[t].get("POST /qrs/app/upload", 0) for t in targets
    ]
    limit = 2 * size / bandwidth
    await clean(settings)
    return {
        "size MB": size // MB,
        "sites": sites,
        "streams": streams,
        "mode": mode,
        "wall s": round(wall, 1),
        "limit s": round(limit, 1),
        "ours/limit": round(wall / limit, 2),
        "MB sent per site": round(max(sent) / MB, 1),
        "uploads per site": max(uploads),
        "peak RSS growth MB": round((rss.peak - rss.baseline) / MB, 1),
    }


async def run(args: argparse.Namespace, sites: dict[str, SiteSettings], tmp: Path) -> list[dict[str, Any]]:
    targets = {name: site for name, site in sites.items() if name != "dev"}
    settings = Settings(
        source_site=sites["dev"],
        target_sites=targets,
        cert_root=tmp / "certs",
        ledger_url=f"sqlite:///{(tmp / 'ledger.db').as_posix()}",
        work_dir=tmp / "work",
        unpublish=UnpublishSettings(auto=False),
    )
    os.environ["QSP_CONFIG"] = str(write_settings(settings, tmp / "qs-promoter.toml"))
    bandwidth = int(args.bandwidth_mb * MB)
    for site in sites.values():
        control(site, "PUT", "/sandbox/bandwidth", json={"bytesPerSecond": bandwidth})
    world = await build_world(settings)
    await prepare_streams(settings, world)
    if args.warm_up:
        warm_up = make_app_file(tmp / "warm-up.qvf", MB)
        await one_case(settings, world, warm_up, MB, 1, 1, "overwrite", bandwidth, tmp, 0)
        warm_up.unlink()
    rows = []
    index = 0
    for size_mb in args.sizes_mb:
        size = int(size_mb * MB)
        app_file = make_app_file(tmp / f"app-{size_mb}.qvf", size)
        for count in args.sites:
            for streams in args.streams:
                for mode in args.modes:
                    index += 1
                    row = await one_case(
                        settings, world, app_file, size, count, streams, mode, bandwidth, tmp, index
                    )
                    print(row, flush=True)
                    rows.append(row)
        app_file.unlink()
    return rows


def numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=numbers, default=[50, 500, 2048])
    parser.add_argument("--sites", type=lambda t: [int(x) for x in numbers(t)], default=[1, 3, 5])
    parser.add_argument("--streams", type=lambda t: [int(x) for x in numbers(t)], default=[1, 3])
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["overwrite", "duplicate"])
    parser.add_argument("--bandwidth-mb", type=float, default=100.0)
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--name", default="transfer")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qsp-bench-transfer-"))
    names = ["dev", *(f"t{i}" for i in range(1, max(args.sites) + 1))]
    with sandbox(names, tmp) as sites, prefect_server():
        rows = asyncio.run(run(args, sites, tmp))
    notes = {
        "bandwidth per transfer": f"{args.bandwidth_mb:g} MB/s",
        "sandbox": "own process",
        "warm-up": "one 1 MB promotion before the cases" if args.warm_up else "none",
    }
    small = small_app(rows)
    if small is not None:
        notes[SMALL_APP] = f"{small['wall s']} s against a {small['limit s']} s limit ({small['mode']})"
    write(args.name, rows, notes)
    if small is not None:
        print(f"{SMALL_APP}: {notes[SMALL_APP]}")


SMALL_APP = "small app (50 MB, 1 x 1)"


def small_app(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 50 MB, one site, one stream case (overwrite if both modes ran), if it was run."""
    cases = [row for row in rows if (row["size MB"], row["sites"], row["streams"]) == (50, 1, 1)]
    return min(cases, key=lambda row: row["mode"] != "overwrite", default=None)


if __name__ == "__main__":
    main()
