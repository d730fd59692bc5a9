"""A Ray cluster for the length of one command: joined at an address, or started here.

scheda builds no cluster of its own: it runs on Ray. `--ray ADDRESS` (or `RAY_ADDRESS`)
joins a running cluster (`ray start --head` on one machine, `ray start --address
HEAD:6379` on each of the others); `--ray` alone starts a cluster on this machine for
the command and stops it when the command ends. Ray is an extra (`scheda[ray]`): it is
imported here, when a command asks for it, and never by a command run without --ray.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import ModuleType

from scheda.errors import UsageError

RAY_INSTALL = "`make install-ray` (or `pip install 'scheda[ray]'`)"
# A local cluster moves items and results, a few kB each: Ray's smallest object store will do.
LOCAL_OBJECT_STORE = 128 * 2**20
CONNECT_TIMEOUT_S = 5.0
HEAD_START_TIMEOUT_S = 180.0  # a busy two-core machine takes a minute to start Ray's agents


def import_ray() -> ModuleType:
    """Ray, or one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed: run {RAY_INSTALL}") from None
    return ray


def host_port(address: str) -> tuple[str, int] | None:
    """The host and port an address names (`HOST:PORT`, `ray://HOST:PORT`); None for `auto`."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """Fail in seconds, on one line, where nothing listens: Ray itself retries for a minute."""
    target = host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"--ray {address}: no Ray cluster answers there ({reason}); "
            "start one with `ray start --head`, or leave the address out for a local one"
        ) from None


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, on loopback, each different."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_head(head: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise UsageError(f"--ray: the local Ray cluster did not start (exit {head.returncode})")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise UsageError(f"--ray: the local Ray cluster did not start in {HEAD_START_TIMEOUT_S:.0f} s")


@contextmanager
def local_cluster(num_cpus: int | None = None) -> Iterator[str]:
    """A Ray head node on this machine, in a process group of its own, stopped after.

    Not on loopback alone: Ray rewrites 127.0.0.1 in an address it joins into the
    machine's own address, so a head bound to loopback cannot be joined.

    Started as `ray start --head --block` with every agent's port given: without them the
    raylet waits for its agents to report theirs, 15 s at most, and aborts where Python
    starts slower than that (a busy machine). `ray.init()` alone cannot give those ports.
    """
    gcs, grpc, listen, metrics, runtime_env = _free_ports(5)
    command = [
        *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"),
        *(f"--port={gcs}", "--include-dashboard=false"),
        *(f"--dashboard-agent-grpc-port={grpc}", f"--dashboard-agent-listen-port={listen}"),
        *(f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"),
        f"--object-store-memory={LOCAL_OBJECT_STORE}",
        "--disable-usage-stats",
        *([f"--num-cpus={num_cpus}"] if num_cpus else []),
    ]
    # Ray turns token authentication on for a head where a token file exists, and the
    # driver's default is off: both are given the same, the user's choice or off.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for_head(head, gcs)
        yield f"127.0.0.1:{gcs}"
    finally:
        # `ray start --block` stops the processes it started when it is told to stop.
        with suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, connected for the duration: to `address`, to RAY_ADDRESS, or to a local cluster.

    A process already connected (a test's cluster, a notebook's) is used as it is and left
    connected. A local cluster started here is stopped after.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
        with _joined(ray, address):
            yield ray
        return
    with local_cluster(num_cpus) as local, _joined(ray, local):
        yield ray


@contextmanager
def _joined(ray: ModuleType, address: str) -> Iterator[None]:
    """This process a driver of the cluster at `address` until the block ends."""
    try:
        # Ray's own start-up lines and the workers' output would tear through the progress bar.
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--ray {address}: Ray could not connect ({first})") from None
    try:
        yield
    finally:
        ray.shutdown()
