"""The server's model pool: loaded on first use, least recently used unloaded first, idle
models unloaded after the keep-alive."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scheda.engines.base import Embedder, Engine
from scheda.errors import APIError, ModelNotServedError, ServerBusyError, UsageError
from scheda.server.pool import ModelPool, ServedModel, embedder, generator, served_model
from tests.serving import wait_for


@pytest.fixture(scope="module")
def two(minilm_path: Path) -> tuple[ServedModel, ServedModel]:
    # A small context, one thread: loads stay quick on a busy small host.
    chat = served_model("default", context=256, parallel=2, threads=1)
    embed = served_model(str(minilm_path), threads=1)
    return chat, embed


def test_the_need_is_fits_estimate(two: tuple[ServedModel, ServedModel]) -> None:
    from scheda.formulas.fit import estimate

    chat, embed = two
    assert chat.kind == "chat" and embed.kind == "embedding"
    from scheda.engines.llamacpp import prompt_cache_mib

    # Two slots of the served context each: llama.cpp gives every slot the whole context; and
    # the prompts the slots give up are kept in as much memory again as their KV cache.
    fit = estimate(chat.spec, "file", chat.context * 2)
    assert chat.need == fit.total + fit.kv_cache
    assert prompt_cache_mib(chat.path, chat.context * 2) == -(-fit.kv_cache // 2**20)
    assert chat.need > embed.need > 0


def test_least_recently_used_leaves_to_make_room(two: tuple[ServedModel, ServedModel]) -> None:
    chat, embed = two
    pool = ModelPool([chat, embed], budget=chat.need + embed.need - 1, queue=2, parallel=2)
    try:
        with pool.lease(chat) as engine:
            assert generator(engine).count_tokens("hello") > 0
        assert pool.loaded() == [chat.id]
        with pool.lease(embed) as encoder:
            vectors, _ = embedder(encoder).embed(["hello"])
            assert len(vectors[0]) == 384
        assert pool.loaded() == [embed.id]  # the chat model was unloaded to make room
        with pool.lease(chat):
            assert pool.loaded() == [chat.id]
    finally:
        pool.close()
    assert pool.loaded() == []


def test_both_stay_when_both_fit(two: tuple[ServedModel, ServedModel]) -> None:
    chat, embed = two
    pool = ModelPool([chat, embed], budget=chat.need + embed.need, queue=2, parallel=2)
    try:
        with pool.lease(chat), pool.lease(embed):
            pass
        assert sorted(pool.loaded()) == sorted([chat.id, embed.id])
    finally:
        pool.close()


def test_a_busy_model_is_never_unloaded(two: tuple[ServedModel, ServedModel]) -> None:
    chat, embed = two
    pool = ModelPool([chat, embed], budget=chat.need + embed.need - 1, queue=2, parallel=2)
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pool.lease(embed):
            busy.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert busy.wait(60)
        with pytest.raises(ServerBusyError) as error, pool.lease(chat):
            pass
        assert error.value.status == 503 and "busy" in str(error.value)
        assert pool.loaded() == [embed.id]
    finally:
        release.set()
        holder.join()
        pool.close()


def test_admission_stops_at_slots_plus_queue(two: tuple[ServedModel, ServedModel]) -> None:
    chat, _ = two
    pool = ModelPool([chat], budget=chat.need, queue=1, parallel=2)
    leases = [pool.lease(chat) for _ in range(3)]  # two slots and one waiting
    try:
        for lease in leases:
            lease.__enter__()
        with pytest.raises(ServerBusyError) as error, pool.lease(chat):
            pass
        assert error.value.status == 503
    finally:
        for lease in leases:
            lease.__exit__(None, None, None)
        pool.close()
    assert chat.active == 0


def test_unknown_model_is_a_404(two: tuple[ServedModel, ServedModel]) -> None:
    chat, _ = two
    pool = ModelPool([chat], budget=chat.need, queue=1, parallel=2)
    assert pool.get(None) is chat
    with pytest.raises(ModelNotServedError) as error:
        pool.get("nope")
    assert error.value.status == 404 and "default" in str(error.value)


def test_a_model_over_the_whole_budget_is_refused_at_start(
    two: tuple[ServedModel, ServedModel],
) -> None:
    chat, _ = two
    with pytest.raises(UsageError, match="budget"):
        ModelPool([chat], budget=chat.need - 1, queue=1, parallel=2)


def test_two_models_with_one_name_are_refused(two: tuple[ServedModel, ServedModel]) -> None:
    chat, _ = two
    with pytest.raises(UsageError, match="both be served"):
        ModelPool([chat, chat], budget=2 * chat.need, queue=1, parallel=2)


def test_the_pool_hands_each_kind_its_own_interface(
    two: tuple[ServedModel, ServedModel],
) -> None:
    """A chat model leases an Engine, an encoder an Embedder; each route's narrowing
    (generator, embedder) refuses the other kind in one line, naming the field."""
    chat, embed = two
    pool = ModelPool([chat, embed], budget=chat.need + embed.need, queue=2, parallel=2)
    try:
        with pool.lease(chat) as engine, pool.lease(embed) as encoder:
            assert isinstance(engine, Engine) and not isinstance(engine, Embedder)
            assert isinstance(encoder, Embedder) and not isinstance(encoder, Engine)
            assert generator(engine) is engine and embedder(encoder) is encoder
            for narrow, loaded, wanted in (
                (generator, encoder, "chat"),
                (embedder, engine, "embedding"),
            ):
                with pytest.raises(APIError, match=f"name an? {wanted} model") as refused:
                    narrow(loaded)
                assert refused.value.param == "model" and refused.value.status == 400
    finally:
        pool.close()


# -- on demand: one load for many, keep-alive, a found model too large ----------------------


@pytest.fixture
def small() -> ServedModel:
    return served_model("default", context=256, parallel=2, threads=1)


def test_two_first_requests_wait_for_one_load_and_keep_alive_0_ends_it(small: ServedModel) -> None:
    """Two requests for a model not loaded: one load, both told to wait for it (the second
    too, unless the load was over before it came); keep-alive 0 unloads it with the last."""
    pool = ModelPool([small], budget=small.need, queue=2, parallel=2, keep_alive=0)
    told: list[int] = []
    start, both = threading.Barrier(2), threading.Barrier(2)

    def ask(i: int) -> None:
        start.wait()
        with pool.lease(small, lambda: told.append(i)) as engine:
            assert generator(engine).count_tokens("hello") > 0
            both.wait()  # neither ends before the other holds the model

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pool.loads == 1 and told and set(told) <= {0, 1}
        assert pool.loaded() == []  # gone with the last request
    finally:
        pool.close()


def test_an_idle_model_leaves_after_its_keep_alive(small: ServedModel) -> None:
    pool = ModelPool([small], budget=small.need, queue=2, parallel=2, keep_alive=0.3)
    told: list[str] = []
    try:
        with pool.lease(small):
            time.sleep(0.5)  # longer than the keep-alive: a busy model stays
            assert pool.loaded() == [small.id]
        with pool.lease(small, lambda: told.append("loading")):
            pass  # still loaded: nobody waits
        assert told == []
        assert wait_for(lambda: pool.loaded() == [], within=5)
    finally:
        pool.close()
    assert pool._reaper is not None and not pool._reaper.is_alive()  # stopped on close


def test_a_found_model_over_the_budget_is_listed_not_loaded(small: ServedModel) -> None:
    from dataclasses import replace

    found = replace(small, id="found", found=True, need=small.need * 10)
    pool = ModelPool([small, found], budget=small.need, queue=2, parallel=2)
    assert pool.describe(found)["fit"] == {"need": found.need, "budget": small.need, "fits": False}
    with pytest.raises(APIError, match=r"found needs .* at a context of 256 on 2 slots, more than"):
        pool.load(found)
    with pytest.raises(UsageError, match="budget"):  # one named on the command line: refused
        ModelPool([replace(found, found=False)], budget=small.need, queue=2, parallel=2)


def test_a_request_whose_client_left_stops_waiting_for_a_load(small: ServedModel) -> None:
    """While another request's load holds the turn, one whose client hangs up leaves at once
    (its admission freed), rather than when the load is over."""
    pool = ModelPool([small], budget=small.need, queue=2, parallel=2)
    cancel = threading.Event()
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            with pool.lease(small, cancel=cancel):
                pass
        except APIError as exc:
            failed.append(exc)

    with pool._loading:  # another request's load, under way
        waiting = threading.Thread(target=ask)
        waiting.start()
        assert wait_for(lambda: small.active == 1, within=5)
        cancel.set()
        waiting.join(timeout=5)
        assert not waiting.is_alive() and small.active == 0
    (error,) = failed
    assert isinstance(error, APIError) and error.status == 499
    assert pool.loads == 0
    pool.close()
