"""Free loopback ports: for what a test starts listening (a broker, a cluster, a metrics server,
the development stack), and for an address where nothing listens."""

from __future__ import annotations

import contextlib
import socket

# The shared broker's ports (kafka/broker.sh): never handed out, even while nothing listens there.
RESERVED_PORTS = {9092, 9093}


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all sockets are held until every port is picked)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in RESERVED_PORTS:
                ports.append(port)
        return ports


def free_port() -> int:
    """A free loopback port: nothing listens on it until the test starts something there."""
    [port] = free_ports(1)
    return port
