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
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from scheda.errors import UsageError

RAY_INSTALL = "`make install-ray` (or `pip install 'scheda[ray]'`)"
# A local cluster moves items and results, a few kB each: Ray's smallest object store will do.
LOCAL_OBJECT_STORE = 128 * 2**20
CONNECT_TIMEOUT_S = 5.0


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


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, connected for the duration: to `address`, to RAY_ADDRESS, or to a local cluster.

    A process already connected (a test's cluster, a notebook's) is used as it is and left
    connected. A local cluster started here listens on loopback only and is stopped after.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own start-up lines and the workers' output would tear through the progress bar.
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **quiet)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--ray {where}: Ray could not connect ({first})") from None
    try:
        yield ray
    finally:
        ray.shutdown()
