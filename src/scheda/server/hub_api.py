"""The studio's Hub routes (`/api/hub`): a repository's card without downloading it, and a pull.

    GET  /api/hub/card?repo=org/name[:QUANT]&file=&context=&gpu=
         the spec sheet read on the Hub (`scheda card`), what the read took, the model's
         need at the context the engines take, and for a GGUF repository each file with
         its need; each with a verdict on this host and on the device asked about
    POST /api/hub/pull  {"repo", "file", "context", "gpu", "force"}
         `scheda pull` as server-sent events: the plan, the bytes as they come, then the
         model, which joins the served ones (the pool learns it) and the pickers

A model that will not fit the device is refused before the stream starts (409,
with what would fit instead), unless `force`. A client that leaves mid-download
stops it; the bytes so far stay in the cache, and the next pull continues them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from scheda import settings
from scheda.display.render import card_rows, remote_caption
from scheda.errors import APIError, HubError, PullRefusedError
from scheda.files.pull import Plan, plan, pull
from scheda.formulas import hardware
from scheda.formulas.fit import estimate
from scheda.formulas.fit_report import file_fits
from scheda.formulas.hardware import Device
from scheda.readers.hub import parse_ref
from scheda.resolve import resolve
from scheda.server.errors import error_body, sse
from scheda.server.openapi import answers
from scheda.server.pool import ModelPool, served_model
from scheda.server.schemas import Strict

router = APIRouter(prefix="/api/hub")
MAX_CONTEXT = 1 << 24
PROGRESS_EVERY_S = 0.2  # a progress event at most this often: the page redraws on each


def _devices(gpu: str | None) -> list[Device]:
    """This host, and the device asked about (the smallest a name matches)."""
    host = hardware.host()
    if not gpu or hardware.find(gpu)[0].key == "host":
        return [host]
    return [host, min(hardware.find(gpu), key=lambda d: d.usable)]


def _hub_reference(repo: str) -> None:
    """Only a Hub repository: these routes read no path on the server's machine."""
    if parse_ref(repo) is None:
        raise APIError(f"{repo!r} is not a Hub repository: give org/name or org/name:QUANT", "repo")


# 403: the Hub refused the token (gated, private); 502: the Hub failed or is out of reach.
@router.get("/card", responses=answers(400, 404, 502))
def hub_card(
    repo: str,
    file: str | None = None,
    context: Annotated[int | None, Query(ge=16, le=MAX_CONTEXT)] = None,
    gpu: str | None = None,
) -> dict[str, Any]:
    _hub_reference(repo)
    spec = resolve(repo, file)
    devices = _devices(gpu)
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
    force: bool = False


@router.post("/pull", responses=answers(400, 404, 409, 502, stream=True))
def hub_pull(body: PullBody, request: Request) -> StreamingResponse:
    _hub_reference(body.repo)
    devices = _devices(body.gpu)
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
