"""Child process for test_memory: upload one app file, export it back, print the peak RSS as JSON.

Run as ``python -m tests.qrs.peak_memory '<json>'`` so the measurement covers only this process:
imports, TLS, the client and the transfer, but not the sandbox serving it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path

from promoter.qrs.client import QrsClient
from promoter.settings import SiteSettings


async def transfer(job: dict[str, str | int]) -> int:
    site = SiteSettings(host=str(job["host"]), port=int(job["port"]))
    async with QrsClient(site, Path(str(job["cert_dir"])), name="dev") as qrs:
        app = await qrs.upload_app(Path(str(job["file"])), str(job["name"]))
        return await qrs.export_app(app.id, Path(str(job["dest"])))


def main() -> None:
    job = json.loads(sys.argv[1])
    exported = asyncio.run(transfer(job))
    # Linux reports ru_maxrss in KiB.
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"exported": exported, "peak_kib": peak_kib}))


if __name__ == "__main__":
    main()
