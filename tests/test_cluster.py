"""The local Ray cluster `--ray` starts: nothing of it listens beyond this machine.

Ray rewrites a loopback address into the machine's own, so a cluster started as Ray
starts one by default listens on the network. `scheda.engines.cluster` starts it on loopback:
every listening socket of the cluster's processes (the head, its GCS, raylet, agents,
and the workers it started) and of this driver is on 127.0.0.0/8, found from the
processes' own socket tables.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import psutil
import pytest

from scheda.engines.cluster import host_port, is_loopback

pytestmark = pytest.mark.ray

pytest.importorskip("ray", reason="Ray is not installed: run `make install-ray`")


def listening(process: psutil.Process) -> list[tuple[str, int]]:
    """The addresses a process listens on; an IPv4 address on a dual-stack socket as IPv4."""
    try:
        return [
            (plain_ip(c.laddr.ip), c.laddr.port)
            for c in process.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def plain_ip(address: str) -> str:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def pid() -> int:
    return os.getpid()


def owner(port: int) -> psutil.Process:
    """The process that listens on a port of this machine."""
    for process in psutil.process_iter():
        if any(p == port for _, p in listening(process)):
            return process
    raise AssertionError(f"nothing listens on port {port}")


def test_the_local_cluster_listens_on_loopback_only(ray_cluster: Any) -> None:
    ray = ray_cluster
    # A worker process started for a task, beside the head's own processes.
    assert ray.get(ray.remote(pid).options(num_cpus=1).remote()) != os.getpid()
    address = ray.get_runtime_context().gcs_address
    target = host_port(address)
    assert target is not None and is_loopback(target[0]), address
    gcs = owner(target[1])
    # `ray start --block`, whose process group holds the whole cluster: GCS, raylet,
    # agents and every worker the raylet started.
    head = gcs.parent()
    assert head is not None and "start" in head.cmdline()
    processes = [head, *head.children(recursive=True), psutil.Process()]
    sockets = {(process.pid, *s) for process in processes for s in listening(process)}
    assert len({pid for pid, _, _ in sockets}) >= 4, sockets  # GCS, raylet, a worker, here
    assert (gcs.pid, target[0], target[1]) in sockets
    outside = sorted(s for s in sockets if not ipaddress.ip_address(s[1]).is_loopback)
    assert not outside, f"listening beyond loopback: {outside}"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("10.0.0.7", False),
        ("head.example", False),
    ],
)
def test_which_addresses_are_joined_on_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
