"""Free loopback ports: for what a test starts listening (a broker, a cluster, a Connect worker,
a metrics server, the development stack), and for an address where nothing listens.

They are picked below the kernel's ephemeral range (`ip_local_port_range`, from 32768 by
default), where no outgoing connection is ever given its local port: between a port's pick and
its server's bind no client can take it, and a client reconnecting to a server stopped on it
(a broker a test restarts, with a Connect worker's dozen clients retrying it) cannot connect to
itself (TCP's self-connect, when the local port a connect gets is the port it dials) and hold
the port the server is about to bind again."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

# The shared broker's ports (kafka/broker.sh): never handed out, even while nothing listens there.
RESERVED_PORTS = {9092, 9093}
# Below the ephemeral range, above the ports services usually take (PostgreSQL's 5432/5433,
# Kafka's, Connect's 8083, ...).
LOWEST = 20000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all sockets are held until every port is picked)."""
    highest = _ephemeral_start() - 1
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            if highest - LOWEST < 1000:
                sock.bind(("127.0.0.1", 0))  # no room below the ephemeral range: the kernel's pick
            else:
                try:
                    sock.bind(("127.0.0.1", random.randint(LOWEST, highest)))
                except OSError:
                    continue  # taken, or in TIME_WAIT
            port = sock.getsockname()[1]
            if port not in RESERVED_PORTS and port not in ports:
                ports.append(port)
        return ports


def free_port() -> int:
    """A free loopback port: nothing listens on it until the test starts something there."""
    [port] = free_ports(1)
    return port
