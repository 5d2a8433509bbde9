import asyncio, time, logging
from prefect import flow
from prefect.concurrency.asyncio import concurrency
from promoter.tasks import run
from tests.e2e.conftest import IN_PROCESS_FLOWS
pytestmark = IN_PROCESS_FLOWS

@flow
async def probe() -> list:
    t0 = time.perf_counter()
    out = []
    await run.ensure_limits({"qsp-a": 1, "qsp-site-x": 2, "qsp-site-y": 2})
    out.append(("limits", time.perf_counter() - t0))
    async with concurrency("qsp-a", occupy=1, strict=True):
        out.append(("a", time.perf_counter() - t0))
        async def one(name):
            async with concurrency(name, occupy=1, strict=True):
                out.append((name, time.perf_counter() - t0))
                await asyncio.sleep(0.5)
            out.append((name + " released", time.perf_counter() - t0))
        await asyncio.gather(one("qsp-site-x"), one("qsp-site-y"))
    return out

async def test_probe(prefect_api, caplog):
    logging.getLogger("prefect._internal.concurrency").setLevel(logging.DEBUG)
    for _ in range(2):
        print(await probe())
