"""The studio's Hub routes (`/api/hub`): the search, a repository's card without downloading
it, and a pull.

    GET  /api/hub/search?q=&gpu=&memory=&context=&limit=&sort=&fits=
         `scheda search --json`: the Hub's repositories whose name holds `q`, each read
         without downloading (or from the search cache), judged on the target (this host,
         a GPU, or `memory` GB) and ranked best first
    GET  /api/hub/card?repo=org/name[:QUANT]&file=&context=&gpu=&memory=
         the spec sheet read on the Hub (`scheda card`), what the read took, the model's
         need at the context the engines take, and for a GGUF repository each file with
         its need; each with a verdict on this host and on the device asked about
    POST /api/hub/pull  {"repo", "file", "context", "gpu", "memory", "force"}
         `scheda pull` as server-sent events: the plan, the bytes as they come, then the
         model, which joins the served ones (the pool learns it) and the pickers

A search is one answer, not a stream: its repositories are read eight at once
and kept by commit, so it takes seconds cold and a tenth of one warm. A client
that leaves stops it: the reads in flight end, no more begin (what was read is
kept: asking again answers from the cache). A model that will not fit the device is
refused before the pull's stream starts (409, with what would fit instead),
unless `force`. A client that leaves mid-download stops it; the bytes so far
stay in the cache, and the next pull continues them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from scheda import settings
from scheda.display.render import card_rows, remote_caption
from scheda.errors import APIError, HubError, PullRefusedError, UsageError
from scheda.files.pull import Plan, plan, pull
from scheda.formulas import hardware
from scheda.formulas.fit import estimate
from scheda.formulas.fit_report import file_fits
from scheda.formulas.hardware import Device
from scheda.readers.hub import parse_ref
from scheda.resolve import resolve
from scheda.search import rows
from scheda.search.hub_search import MAX_LIMIT
from scheda.server.errors import error_body, sse
from scheda.server.openapi import answers
from scheda.server.pool import ModelPool, served_model
from scheda.server.schemas import Strict

router = APIRouter(prefix="/api/hub")
MAX_CONTEXT = 1 << 24
MAX_MEMORY_GB = 1 << 20
PROGRESS_EVERY_S = 0.2  # a progress event at most this often: the page redraws on each


def _target(gpu: str | None, memory: float | None) -> Device:
    """The device asked about: a GPU name's smallest (what fits the smaller of an a100's two
    sizes fits both), a budget of `memory` GB, or this host."""
    if gpu and memory is not None:
        raise APIError("give gpu or memory, not both", "memory")
    try:
        if gpu:
            return min(hardware.find(gpu), key=lambda d: d.usable)
        return hardware.host() if memory is None else hardware.custom(memory)
    except UsageError as exc:  # an unknown GPU: the message lists the known ones
        raise APIError(str(exc), "gpu" if gpu else "memory") from None


def _devices(gpu: str | None, memory: float | None = None) -> list[Device]:
    """This host, and the device asked about."""
    target = _target(gpu, memory)
    return [target] if target.key == "host" else [hardware.host(), target]


def _hub_reference(repo: str) -> None:
    """Only a Hub repository: these routes read no path on the server's machine."""
    if parse_ref(repo) is None:
        raise APIError(f"{repo!r} is not a Hub repository: give org/name or org/name:QUANT", "repo")


# -- the search ----------------------------------------------------------------------------


SEARCHES = 4  # searches read at once (each reads `rows.WORKERS` repositories at once); more wait
_SEARCHES = ThreadPoolExecutor(max_workers=SEARCHES, thread_name_prefix="hub-search")


@router.get("/search", responses=answers(400, 502), response_model=None)
async def search_hub(
    request: Request,
    q: str = "",
    gpu: str | None = None,
    memory: Annotated[float | None, Query(gt=0, le=MAX_MEMORY_GB)] = None,
    context: Annotated[int | None, Query(ge=16, le=MAX_CONTEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    sort: Literal["downloads", "likes", "recent"] = "downloads",
    fits: bool = False,
) -> dict[str, Any] | Response:
    target = _target(gpu, memory)
    stop = threading.Event()
    watcher = asyncio.ensure_future(_hang_up(request, stop))
    try:
        result = await asyncio.get_running_loop().run_in_executor(
            _SEARCHES,
            partial(rows.search, q, target, context, sort, limit, fits, stop=stop),
        )
    except rows.Stopped:
        return Response(status_code=204)  # to nobody: the client is gone
    finally:
        stop.set()  # also when the request itself is cancelled (a stopping server)
        watcher.cancel()
    return result.to_dict()


async def _hang_up(request: Request, stop: threading.Event) -> None:
    """Set `stop` when the client disconnects: after the request, `receive` gives nothing
    more until then (as server/runner.py watches a whole answer)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stop.set()


# -- a repository's card, and its pull --------------------------------------------------------


# 403: the Hub refused the token (gated, private); 502: the Hub failed or is out of reach.
@router.get("/card", responses=answers(400, 404, 502))
def hub_card(
    repo: str,
    file: str | None = None,
    context: Annotated[int | None, Query(ge=16, le=MAX_CONTEXT)] = None,
    gpu: str | None = None,
    memory: Annotated[float | None, Query(gt=0, le=MAX_MEMORY_GB)] = None,
) -> dict[str, Any]:
    _hub_reference(repo)
    spec = resolve(repo, file)
    devices = _devices(gpu, memory)
    used = settings.context_for(context, spec.context)
    remote = spec.remote
    files = file_fits(spec, remote.ggufs, used, 1, devices) if remote and remote.ggufs else []
    need = estimate(spec, "file", used).total
    return {
        "reference": spec.path if remote else repo,
        "name": spec.name,
        "rows": [[label, cells[0]] for label, cells in card_rows([spec])],
        "caption": remote_caption(spec),
        "spec": spec.to_dict(),
        "context": used,
        "devices": [{"key": d.key, "name": d.label, "usable": d.usable} for d in devices],
        "need": {"total": need, "fits": {d.key: need <= d.usable for d in devices}},
        "files": [f.to_dict() for f in files],
    }


class PullBody(Strict):
    repo: str
    file: str | None = None
    context: Annotated[int | None, Field(ge=16, le=MAX_CONTEXT)] = None
    gpu: str | None = None
    memory: Annotated[float | None, Field(gt=0, le=MAX_MEMORY_GB)] = None
    force: bool = False


@router.post("/pull", responses=answers(400, 404, 409, 502, stream=True))
def hub_pull(body: PullBody, request: Request) -> StreamingResponse:
    _hub_reference(body.repo)
    devices = _devices(body.gpu, body.memory)
    chosen = plan(body.repo, body.file, body.context, devices[-1])
    if not chosen.fits and not body.force:
        raise PullRefusedError(chosen.refusal())
    pool: ModelPool = request.app.state.pool
    return StreamingResponse(
        _stream(chosen, body.force, pool, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    chosen: Plan, force: bool, pool: ModelPool, request: Request
) -> AsyncIterator[str]:
    """The download in a worker thread; its progress and end as events here."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stop = threading.Event()
    last = [0.0]

    def put(event: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            loop.call_soon_threadsafe(events.put_nowait, event)

    def progress(done: int, total: int) -> None:
        if stop.is_set():  # the client left: stop here; the bytes so far are kept
            raise HubError("the pull was stopped: its client left")
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            put({"progress": done, "total": total})

    def work() -> None:
        try:
            pulled = pull(chosen, force, progress)
            entry = pool.add(served_model(pulled.reference, **pool.defaults))
            put({"done": True, "pulled": pulled.to_dict(), "model": entry.describe()})
        except Exception as exc:  # sent to the page as the stream's last event
            put({"error": error_body(exc)})

    yield sse({"plan": chosen.to_dict()})
    threading.Thread(target=work, name=f"pull-{chosen.reference}", daemon=True).start()
    try:
        while True:
            event = await events.get()
            yield sse(event)
            if "done" in event or "error" in event:
                return
    finally:
        stop.set()
