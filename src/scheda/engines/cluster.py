"""A Ray cluster for the length of one command: joined at an address, or started here.

scheda builds no cluster of its own: it runs on Ray. `--ray ADDRESS` (or `RAY_ADDRESS`)
joins a running cluster (`ray start --head` on one machine, `ray start --address
HEAD:6379` on each of the others); `--ray` alone starts a cluster on this machine for
the command and stops it when the command ends. Ray is an extra (`scheda[ray]`): it is
imported here, when a command asks for it, and never by a command run without --ray.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import ModuleType

from scheda.errors import UsageError, install_hint

RAY_INSTALL = install_hint("ray")
# A local cluster moves items and results, a few kB each: Ray's smallest object store will do.
LOCAL_OBJECT_STORE = 128 * 2**20
CONNECT_TIMEOUT_S = 5.0
HEAD_START_TIMEOUT_S = 180.0  # a busy two-core machine takes a minute to start Ray's agents
STOP_GRACE_S = 3.0
LOOPBACK = "127.0.0.1"
# Ray rewrites a loopback address into the machine's own (so that other nodes may join),
# unless this is "0": the switch Ray keeps for laptops, read by every Ray process.
RAY_ON_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, on loopback, each different."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_head(head: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise UsageError(f"--ray: the local Ray cluster did not start (exit {head.returncode})")
        with suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        time.sleep(0.5)
    raise UsageError(f"--ray: the local Ray cluster did not start in {HEAD_START_TIMEOUT_S:.0f} s")


@contextmanager
def local_cluster(num_cpus: int | None = None) -> Iterator[str]:
    """A Ray head node on this machine's loopback, in a process group of its own, stopped after.

    Nothing of it listens beyond this machine: it is given 127.0.0.1 as its address, and
    Ray's switch that keeps a loopback address as it is (`RAY_ON_LOOPBACK`). It keeps its
    files in a temporary folder of its own, so it never meets another cluster on the
    machine (Ray's default folder is shared by every cluster started without one).

    Started as `ray start --head --block` with every agent's port given: without them the
    raylet waits for its agents to report theirs, 15 s at most, and aborts where Python
    starts slower than that (a busy machine). `ray.init()` alone cannot give those ports.
    """
    gcs, grpc, listen, metrics, runtime_env = _free_ports(5)
    # Ray's socket paths must fit in 107 bytes: a short folder under the system's temp.
    files = tempfile.mkdtemp(prefix="scheda-ray-")
    command = [
        *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"),
        *(f"--node-ip-address={LOOPBACK}", f"--port={gcs}", "--include-dashboard=false"),
        *(f"--dashboard-agent-grpc-port={grpc}", f"--dashboard-agent-listen-port={listen}"),
        *(f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"),
        f"--object-store-memory={LOCAL_OBJECT_STORE}",
        f"--temp-dir={files}",
        "--disable-usage-stats",
        *([f"--num-cpus={num_cpus}"] if num_cpus else []),
    ]
    # Ray turns token authentication on for a head where a token file exists, and the
    # driver's default is off: both are given the same, the user's choice or off.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **RAY_ON_LOOPBACK},
    )
    try:
        _wait_for_head(head, gcs)
        yield f"{LOOPBACK}:{gcs}"
    finally:
        _stop(head)
        shutil.rmtree(files, ignore_errors=True)


def _stop(head: subprocess.Popen[bytes]) -> None:
    """Every process of the local cluster stopped: they are all in the head's group.

    SIGTERM first, as `ray stop` does; Ray's processes take their time to drain on a
    busy machine, and nothing of a cluster made for one command is worth waiting for,
    so what is left after a few seconds is killed.
    """
    with suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        head.wait(timeout=STOP_GRACE_S)
    with suppress(ProcessLookupError):
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
    target = host_port(address)
    try:
        with _loopback_kept(ray, target is not None and is_loopback(target[0])):
            # Ray's start-up lines and the workers' output would tear through the progress bar.
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--ray {address}: Ray could not connect ({first})") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _loopback_kept(ray: ModuleType, loopback: bool) -> Iterator[None]:
    """While the driver connects: a loopback address kept as it is (`RAY_ON_LOOPBACK`).

    Ray reads that switch when it is imported, and this process may have imported Ray
    before (a test session, a second command): the value Ray read is set for the call.
    Once connected, the driver's address is its node's, whatever the switch says.
    """
    if not loopback:
        yield
        return
    constants = ray._private.ray_constants
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before
