"""`scheda serve --ray`: the model as a Ray Serve deployment, scheda the ingress.

The session's real local Ray cluster (tests/conftest.py), this process its driver; a
real `scheda serve default --ray ADDRESS --replicas 2` joins it, and the clients of the
plain server talk to it unchanged. One replica is killed under a request.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from scheda.cli import ray_alone
from scheda.engines.base import Embedder, Engine
from scheda.server.ray_pool import RemoteEngine, Replicas
from tests.commands import scheda as scheda_command
from tests.serving import Server, free_port, wait_for

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

# Serve's controller and two replicas, each a Ray worker that imports scheda and loads the
# model: about a minute on a busy two-core machine.
RAY_START_S = 400
REPLACED_WITHIN_S = 240
# About twenty seconds of answer at one thread, were it not cancelled.
LONG = {
    "messages": [{"role": "user", "content": "Count to ten thousand."}],
    "max_tokens": 900,
    "ignore_eos": True,
}
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def cluster(ray_cluster: Any) -> Any:
    """The session's local cluster (tests/conftest.py), this process its driver."""
    return ray_cluster


@pytest.fixture(scope="module")
def served(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two replicas of the embedded model, a slot and a thread each, behind scheda."""
    address = cluster.get_runtime_context().gcs_address
    args = ["default", "--ray", address, "--replicas", "2", "--parallel", "1"]
    args += ["--threads", "1", "--context", "1024"]
    s = Server(args, tmp_path_factory.mktemp("serve-ray"), start_timeout=RAY_START_S)
    try:
        yield s
    finally:
        s.stop()  # the server deletes its application; Serve's controller is the test's
        serve.shutdown()


@pytest.fixture(scope="module")
def client(served: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0, timeout=120)


def replicas(served: Server) -> dict[str, dict[str, int]]:
    """Each replica's requests taken and held, as the server's /health counts them."""
    return dict(served.request("GET", "/health")[1]["replicas"]["default"])


def test_the_clients_of_scheda_serve_work_unchanged(served: Server, client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="default",
        messages=ASK,
        max_tokens=8,
        temperature=0,
    )
    text = whole.choices[0].message.content
    assert text  # the model's own answer, greedy: the stream below must match it
    chunks = client.chat.completions.create(
        model="default",
        messages=ASK,
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    prompt = "The capital of France is"
    plain = client.completions.create(model="default", prompt=prompt, max_tokens=2, temperature=0)
    assert plain.choices[0].text.startswith(" Paris")
    pieces = client.completions.create(
        model="default", prompt=prompt, max_tokens=2, temperature=0, stream=True
    )
    assert "".join(p.choices[0].text for p in pieces) == plain.choices[0].text
    answer = client.responses.create(model="default", input=ASK[0]["content"], max_output_tokens=8)
    assert answer.output_text and answer.usage is not None
    claude = anthropic.Anthropic(base_url=served.url, api_key="none", max_retries=0)
    message = claude.messages.create(model="default", max_tokens=8, messages=ASK)
    assert message.content and message.usage.output_tokens > 0
    count = claude.messages.count_tokens(model="default", messages=ASK)
    assert count.input_tokens > 5  # the chat template's text, tokenized on a replica


def test_requests_spread_over_both_replicas(served: Server, client: openai.OpenAI) -> None:
    """Four at once, one slot a replica: Serve's router gives each replica some."""

    def ask(i: int) -> str:
        answer = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=12,
        )
        return answer.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(ask, range(4)))
    counts = replicas(served)
    assert len(counts) == 2 and all(c["requests"] > 0 for c in counts.values()), counts
    assert all(c["active"] == 0 for c in counts.values()), counts


def test_a_client_that_leaves_frees_its_replica(served: Server, client: openai.OpenAI) -> None:
    """A whole answer and a stream, one on each replica's one slot; both clients hang up.
    The replicas stop their engines: two short requests then take the slots at once."""
    conns = [served.send("/v1/chat/completions", {**LONG, "stream": s}) for s in (False, True)]
    try:
        assert wait_for(lambda: sum(c["active"] for c in replicas(served).values()) == 2, 60)
        time.sleep(1)  # generating by now
    finally:
        for conn in conns:
            conn.close()
    assert wait_for(lambda: all(c["active"] == 0 for c in replicas(served).values()), 10)
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        short = {"model": "default", "messages": ASK, "max_tokens": 4}
        assert all(pool.map(lambda _: client.chat.completions.create(**short), range(2)))
    assert time.monotonic() - started < 8  # not behind the abandoned answers' 900 tokens


def test_a_lost_replica_ends_its_request_in_one_line_and_is_replaced(
    cluster: Any, served: Server, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Tell me a very long story."}],
        max_tokens=400,  # within the context, and still running when the replica dies
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    next(chunks)  # under way on one replica
    [busy] = [r for r, c in replicas(served).items() if c["active"]]
    kill_replica(cluster, busy)
    killed = time.monotonic()
    with pytest.raises(openai.APIError) as lost:
        for _ in chunks:
            pass
    assert time.monotonic() - killed < 30  # Ray tells at once; nothing waits for a timeout
    message = str(lost.value.message)
    assert "lost mid-answer" in message and "retry" in message and "\n" not in message
    later = client.chat.completions.create(
        model="default",
        messages=ASK,
        max_tokens=4,
    )
    assert later.choices[0].message.content  # the other replica, or the lost one's heir
    assert replaced(cluster, busy), "Serve did not start a replica in place of the lost one"
    assert replicas(served)[busy]["active"] == 0


def kill_replica(cluster: Any, replica: str) -> None:
    """Kill a replica's Ray actor (its process ends), found by the id the server counts."""
    named = cluster.util.list_named_actors(all_namespaces=True)
    [actor] = [a for a in named if a["name"].endswith(f"#{replica}")]
    cluster.kill(cluster.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)


def replaced(cluster: Any, lost: str) -> bool:
    """Whether, within REPLACED_WITHIN_S, two replicas run again and the lost one is not
    among them (Serve's status alone may still count it before the controller sees it)."""
    deadline = time.monotonic() + REPLACED_WITHIN_S
    while time.monotonic() < deadline:
        named = cluster.util.list_named_actors(all_namespaces=True)
        alive = [a["name"] for a in named if a["name"].startswith("SERVE_REPLICA::")]
        apps = [a for a in serve.status().applications.values() if a.status == "RUNNING"]
        states = [d.replica_states for a in apps for d in a.deployments.values()]
        running = bool(states) and all(s == {"RUNNING": 2} for s in states)
        if running and len(alive) == 2 and not any(n.endswith(f"#{lost}") for n in alive):
            return True
        time.sleep(1)
    return False


# -- the command's bad input, in one line --------------------------------------------------------


def scheda(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return scheda_command(*args, data=data, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "--replicas is for --ray"),
        (["--ray", "--replicas", "3:1"], "--replicas 3:1: give a number of replicas"),
        (["--ray", "--replicas", "two"], "--replicas two: give a number of replicas"),
        (["--ray", "--budget", "4"], "--budget is this machine's memory"),
        (["--ray", "127.0.0.1:9"], "--ray 127.0.0.1:9: no Ray cluster answers there"),
    ],
)
def test_bad_ray_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = scheda("serve", "default", *args, "--port", str(free_port()), data=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith(f"error: {message}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_importing_the_server_loads_no_ray() -> None:
    """Every server module, the Ray ones too: Ray loads only when a model is deployed."""
    code = (
        "import json, pkgutil, importlib, sys, scheda.server as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module('scheda.server.' + m.name)\n"
        "import scheda.cli.serve\n"
        "print(json.dumps('ray' in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) is False, done.stderr


def test_replicas_as_ray_serve_takes_them() -> None:
    assert Replicas.parse("2").deployment_options(4) == {"num_replicas": 2}
    scaling = Replicas.parse("0:3").deployment_options(4)["autoscaling_config"]
    assert scaling == {"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 4}
    assert (
        str(Replicas.parse("1")) == "1 replica" and str(Replicas.parse("1:4")) == "1 to 4 replicas"
    )


def test_ray_alone_before_a_model() -> None:
    assert ray_alone(["serve", "--ray", "default"]) == ["serve", "--ray", "local", "default"]
    assert ray_alone(["serve", "--ray", "auto", "m"]) == ["serve", "--ray", "auto", "m"]
    assert ray_alone(["serve", "m", "--ray", "10.0.0.1:6379"]) == [
        "serve",
        "m",
        "--ray",
        "10.0.0.1:6379",
    ]


def _calls(interface: type) -> list[str]:
    """The methods an interface declares (an ABC's abstract ones, a protocol's own)."""
    if getattr(interface, "_is_protocol", False):
        own = vars(interface).items()
        return sorted(n for n, v in own if inspect.isfunction(v) and not n.startswith("_"))
    return sorted(getattr(interface, "__abstractmethods__", ()))


@pytest.mark.parametrize("interface", [Engine, Embedder], ids=["Engine", "Embedder"])
def test_remote_engine_implements_each_call_as_the_interface_declares_it(interface: type) -> None:
    """RemoteEngine stands in for the engine on a replica: every call of both interfaces is
    its own (sent to the replica), with the interface's own signature."""
    calls = _calls(interface)
    assert "close" in calls and "tokenize" in calls
    for name in calls:
        ours, declared = getattr(RemoteEngine, name), getattr(interface, name)
        assert ours is not declared, f"RemoteEngine.{name} is the interface's, not sent on"
        assert inspect.signature(ours, eval_str=True) == inspect.signature(
            declared, eval_str=True
        ), name
    assert not RemoteEngine.__abstractmethods__
