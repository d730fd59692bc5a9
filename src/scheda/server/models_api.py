"""Loading and unloading a served model by hand: `POST /models/load` and `/models/unload`.

llama.cpp's router names these routes so, and takes `{"model": ID}`: a script
warms a model before its users come, or frees its memory; the studio's model
tab has a button for each. A model loads as a request would load it (idle
models unloaded for room, least recently used first; a 503 with Retry-After
when busy ones leave none); one that cannot fit the budget even alone is a
400 with the numbers; one with requests in flight is not unloaded (409).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, cast

from fastapi import APIRouter, Request
from pydantic import Field

from scheda.server.openapi import answers
from scheda.server.pool import ModelPool
from scheda.server.schemas import Strict

router = APIRouter()


class ModelRequest(Strict):
    model: Annotated[str, Field(min_length=1)]  # a served model's id, as /v1/models lists it


@router.post("/models/load", responses=answers(400, 404, 503))
async def load(body: ModelRequest, request: Request) -> dict[str, Any]:
    """Load the model now, if it is not loaded; answers when it is."""
    pool = cast(ModelPool, request.app.state.pool)
    entry = pool.get(body.model)
    await asyncio.to_thread(pool.load, entry)
    return {"success": True, **pool.describe(entry)}


@router.post("/models/unload", responses=answers(400, 404, 409))
def unload(body: ModelRequest, request: Request) -> dict[str, Any]:
    """Unload the model now; `unloaded` says whether it was loaded."""
    pool = cast(ModelPool, request.app.state.pool)
    entry = pool.get(body.model)
    unloaded = pool.unload(entry)
    return {"success": True, "unloaded": unloaded, **pool.describe(entry)}
