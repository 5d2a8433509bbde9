"""Measure promotions of large apps beside curl moving the same bytes on the same sandbox, in one run.

    .venv/bin/python benchmarks/transfer.py [--cases 50:1x1:overwrite,200:3x2:duplicate,2048:5x1:duplicate]
                                            [--bandwidth-mb 100]
    .venv/bin/python benchmarks/transfer.py --sizes-mb 2 --sites 2 --streams 2 --modes overwrite,duplicate

The sandbox sites (dev and the targets) run in processes of their own (`qs-promoter sandbox up`,
one process per site, as separate machines), each transfer limited to --bandwidth-mb MB/s as a
real network would be; a temporary Prefect server runs in another process. This process runs the
promotion flow itself, as the executor does (flow runs in its own event loop), so its peak RSS and
CPU seconds are what a promotion costs. For Overwrite, each target stream first holds a small app
of the same name, which the promotion replaces.

Each case is measured three ways on the same sites, one after another:
- ours: the promotion (export, every site's upload, copies, publish, verification, the ledger and
  the Prefect run around them);
- curl: the least any tool can do for the same bytes: curl downloads the export once, then uploads
  it to every site at once (one curl per site);
- the original's method: the export, then one upload per stream, one site after another (curl).
"Transfer" is the time during which our export or an upload was in flight (from the QRS client's
DEBUG log); "fixed cost" is the rest of our wall time: everything that is not moving bytes.

Before the cases, one 1 MB promotion runs unmeasured (--no-warm-up skips it): as in the
long-lived executor, the first run's one-time costs (imports, the Prefect client, the flow's
first registration) are not a promotion's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

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
from promoter.qrs.client import QrsClient, qlik_user_header  # noqa: E402
from promoter.qrs.models import AppExportResponse  # noqa: E402
from promoter.qrs.tls import site_tls  # noqa: E402
from promoter.sandbox.synthetic import make_app_file  # noqa: E402
from promoter.sandbox.world import MANAGER, REP, World, build_world, publish_as, set_properties  # noqa: E402
from promoter.services.prefect_clients import share_tls_context  # noqa: E402
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


class TransferSpans(logging.Handler):
    """When bytes were in flight during the block: the export's download and each upload, as the QRS
    client logs them at DEBUG (an upload's "POST /qrs/app/upload -> 201 in N ms", a download's
    "downloaded N bytes in S s"). Their union is the transfer time; the rest of a promotion's wall
    time is its fixed cost."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.spans: list[tuple[float, float]] = []
        self._log = logging.getLogger("promoter.qrs")

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        end = time.perf_counter() - (time.time() - record.created)
        if "downloaded" in record.msg and len(args) == 3:
            self.spans.append((end - float(args[2]), end))
        elif len(args) == 5 and args[1] == "POST" and args[2] == "/qrs/app/upload":
            self.spans.append((end - float(args[4]) / 1000, end))

    def in_flight(self) -> float:
        """Seconds during which at least one transfer ran."""
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def __enter__(self) -> TransferSpans:
        self._saved = (self._log.level, self._log.propagate)
        self._log.setLevel(logging.DEBUG)
        self._log.propagate = False  # the DEBUG lines are for this count, not for the console
        self._log.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._log.removeHandler(self)
        self._log.setLevel(self._saved[0])
        self._log.propagate = self._saved[1]


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


XRFKEY = "benchmarkxrfkey0"


def curl_command(site: SiteSettings, url: str, *args: str) -> list[str]:
    """curl with the site's QMC certificates, the Xrfkey and the X-Qlik-User, silent, failing on 4xx/5xx."""
    assert site.cert_dir is not None
    folder = site.cert_dir
    return [
        "curl", "--silent", "--show-error", "--fail",
        "--cacert", str(folder / "root.pem"),
        "--cert", str(folder / "client.pem"), "--key", str(folder / "client_key.pem"),
        "-H", f"X-Qlik-Xrfkey: {XRFKEY}",
        "-H", f"X-Qlik-User: {qlik_user_header(site.user_directory, site.user_id)}",
        *args, url,
    ]  # fmt: skip


async def curl_download_command(settings: Settings, app_id: Any, dest: Path) -> list[str]:
    """Step one of the export (QRS prepares the file) by our client; the download itself is curl's."""
    async with QrsClient.for_site(settings, "source") as qrs:
        export = await qrs._one(AppExportResponse, "POST", f"/app/{app_id}/export/{uuid4()}")
    site = settings.site("source")
    path = export.download_path
    url = f"{site.base_url}{path}{'&' if '?' in path else '?'}xrfkey={XRFKEY}"
    return curl_command(site, url, "--output", str(dest))


def curl_upload_command(site: SiteSettings, file: Path, name: str) -> list[str]:
    url = f"{site.base_url}/qrs/app/upload?name={quote(name, safe='')}&keepdata=true&xrfkey={XRFKEY}"
    # -T streams the file with its Content-Length (--data-binary would read it all into memory).
    return curl_command(
        site, url, "-X", "POST", "-T", str(file), "-H", "Content-Type: application/vnd.qlik.sense.app",
        "--output", os.devnull,
    )  # fmt: skip


def run_at_once(commands: list[list[str]]) -> None:
    processes = [subprocess.Popen(command) for command in commands]
    failed = [process.args for process in processes if process.wait() != 0]
    if failed:
        raise RuntimeError(f"curl failed: {failed}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def curl_times(
    settings: Settings, app_id: Any, targets: list[str], streams: int, tmp: Path, original: bool
) -> dict[str, float | None]:
    """curl moving the same bytes: one download, then every site's upload at once; and, when
    ``original``, the original's method: one download, then one upload per stream, site after site."""
    dest = tmp / "curl-export.qvf"
    sites = [settings.site(t) for t in targets]
    download = await curl_download_command(settings, app_id, dest)
    cpu, started = children_cpu(), time.perf_counter()
    run_at_once([download])
    run_at_once([curl_upload_command(site, dest, f"curl {i}") for i, site in enumerate(sites)])
    times: dict[str, float | None] = {
        "curl": time.perf_counter() - started, "curl cpu": children_cpu() - cpu, "original": None,
    }  # fmt: skip
    if original:
        download = await curl_download_command(settings, app_id, dest)
        started = time.perf_counter()
        run_at_once([download])
        for site in sites:
            for stream in range(streams):
                run_at_once([curl_upload_command(site, dest, f"original {stream}")])
        times["original"] = time.perf_counter() - started
    dest.unlink()
    return times


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


async def clean(settings: Settings, keep: Any = None) -> None:
    """Delete every app on every site (but ``keep``), so the next case starts empty and the disk
    does not fill."""
    for site in ["source", *settings.target_sites]:
        async with QrsClient.for_site(settings, site) as qrs:
            for app in await qrs.apps():
                if app.id != keep:
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
    with PeakRss() as rss, TransferSpans() as spans:
        cpu, started = time.process_time(), time.perf_counter()
        await handle_app_change(app.id, "updated")
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = {t: control(settings.site(t), "GET", "/sandbox/traffic") for t in targets}
    sent = [after[t].get("bytes in", 0) - before[t].get("bytes in", 0) for t in targets]
    uploads = [
        after[t].get("POST /qrs/app/upload", 0) - before[t].get("POST /qrs/app/upload", 0) for t in targets
    ]
    await clean(settings, keep=app.id)
    # The original's method moves sites x streams uploads one after another: measured where it
    # takes minutes, not tens of minutes.
    curl: dict[str, float | None] = {"curl": None, "curl cpu": None, "original": None}
    if shutil.which("curl"):  # without curl, the case is measured alone
        curl = await curl_times(
            settings, app.id, targets, streams, tmp, original=size * sites * streams <= 2 * 10**9
        )
    await clean(settings)
    original, least = curl["original"], curl["curl"]
    return {
        "size MB": size // MB,
        "sites": sites,
        "streams": streams,
        "mode": mode,
        "wall s": round(wall, 2),
        "CPU s": round(cpu, 2),
        "curl s": None if least is None else round(least, 2),
        "curl CPU s": None if curl["curl cpu"] is None else round(curl["curl cpu"], 2),
        "ours/curl": None if least is None else round(wall / least, 2),
        "original s": None if original is None else round(original, 2),
        "ours/original": None if original is None else round(wall / original, 2),
        "transfer s": round(spans.in_flight(), 2),
        "fixed cost s": round(wall - spans.in_flight(), 2),
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
    files: dict[int, Path] = {}
    for index, (size_mb, count, streams, mode) in enumerate(args.cases, start=1):
        size = int(size_mb * MB)
        if size not in files:
            for old in files.values():  # cases of one size follow each other: one file at a time
                old.unlink()
            files = {size: make_app_file(tmp / f"app-{size_mb:g}.qvf", size)}
        row = await one_case(settings, world, files[size], size, count, streams, mode, bandwidth, tmp, index)
        print(row, flush=True)
        rows.append(row)
    for old in files.values():
        old.unlink()
    return rows


def numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


Case = tuple[float, int, int, str]  # size in MB, sites, streams, mode
# The cases issue 12 sets targets for: the fixed cost, the 200 MB comparison with the original,
# and 2 GB to five sites.
CASES = "50:1x1:overwrite,200:3x2:duplicate,2048:5x1:duplicate"


def cases(text: str) -> list[Case]:
    """SIZE_MB:SITESxSTREAMS:MODE,... -> cases."""
    found = []
    for part in text.split(","):
        size, shape, mode = part.split(":")
        sites, streams = shape.split("x")
        found.append((float(size), int(sites), int(streams), mode))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=cases, default=cases(CASES), help=f"default {CASES}")
    parser.add_argument(
        "--sizes-mb", type=numbers, help="a grid instead of --cases: sizes x sites x streams x modes"
    )
    parser.add_argument("--sites", type=lambda t: [int(x) for x in numbers(t)], default=[1, 3, 5])
    parser.add_argument("--streams", type=lambda t: [int(x) for x in numbers(t)], default=[1, 3])
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["overwrite", "duplicate"])
    parser.add_argument("--bandwidth-mb", type=float, default=100.0)
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--name", default="transfer")
    args = parser.parse_args()
    if args.sizes_mb:
        args.cases = [
            (size, count, streams, mode)
            for size in args.sizes_mb
            for count in args.sites
            for streams in args.streams
            for mode in args.modes
        ]
    tmp = Path(tempfile.mkdtemp(prefix="qsp-bench-transfer-"))
    names = ["dev", *(f"t{i}" for i in range(1, max(case[1] for case in args.cases) + 1))]
    share_tls_context()  # as `qs-promoter executor` does
    with sandbox(names, tmp) as sites, prefect_server():
        rows = asyncio.run(run(args, sites, tmp))
    notes = {
        "bandwidth per transfer": f"{args.bandwidth_mb:g} MB/s",
        "sandbox": "one process per site",
        "warm-up": "one 1 MB promotion before the cases" if args.warm_up else "none",
    }
    small = small_app(rows)
    if small is not None:
        notes[SMALL_APP] = (
            f"fixed cost {small['fixed cost s']} s: {small['wall s']} s against curl's {small['curl s']} s"
            f" ({small['mode']})"
        )
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
