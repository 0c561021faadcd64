"""Kafka connection settings and the admin client, built once from Django settings.

Producers, consumers and admin clients all take `connection_config()`, so the contract's
security variables apply to every connection the project opens.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    NoError,
    NotCoordinatorError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector


class KafkaBridgeError(Exception):
    """Base class of the errors kafka_bridge raises to its callers."""


class BrokerUnavailable(KafkaBridgeError):
    """No broker answered within the configured bound."""


class BrokerAuthenticationFailed(BrokerUnavailable):
    """A broker answered but rejected the SASL credentials.

    A `BrokerUnavailable`, so that every caller that copes with an unreachable broker (health
    check, status page, kafka_ping) copes with this too, with a message that says why.
    """


# kafka-python backs off up to 30 s between reconnects; after a broker restart that leaves
# clients idle for half a minute. The Java client's default is 1 s. (The producer's and the
# consumer's options may set their own.)
RECONNECT_BACKOFF_MAX_MS = 1000


def bootstrap_servers() -> str:
    return ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)


def connection_config() -> dict[str, Any]:
    """kafka-python keyword arguments shared by every client: bootstrap, TLS and SASL."""
    protocol = settings.KAFKA_SECURITY_PROTOCOL
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.KAFKA_BOOTSTRAP_SERVERS),
        "security_protocol": protocol,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.KAFKA_SASL_MECHANISM or "PLAIN"
        config["sasl_plain_username"] = settings.KAFKA_SASL_USERNAME
        config["sasl_plain_password"] = settings.KAFKA_SASL_PASSWORD
        config["kafka_client"] = _RejectedLoginEndsBootstrapClient
    if protocol.endswith("SSL") and settings.KAFKA_SSL_CAFILE:
        config["ssl_cafile"] = settings.KAFKA_SSL_CAFILE
    return config


def short_lived_client_config() -> dict[str, Any]:
    """`connection_config()` for a client built for one page or check and closed after it (the
    admin client, the topic browser's consumer), with `_NetClient`: each page or check against
    an absent broker builds one, and must leave no socket or selector of it open."""
    return {"kafka_client": _NetClient, **connection_config()}


class SaslLoginRejected(SaslAuthenticationFailedError):
    """A bootstrap server refused the SASL login. Its text is one line naming the mechanism, the
    user (never the password), the servers and the broker's reason."""

    @classmethod
    def from_config(cls, config: dict[str, Any], *, reason: str) -> SaslLoginRejected:
        servers = config["bootstrap_servers"]
        servers = servers if isinstance(servers, str) else ",".join(servers)
        return cls(
            f"SASL {config['sasl_mechanism']} authentication failed for user "
            f"{config['sasl_plain_username']!r} at {servers}: {reason}"
        )

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.description


class _FailedConnectsClosed(KafkaConnectionManager):
    """kafka-python's connection manager, except that the socket of a connection attempt that
    fails is closed at once.

    kafka-python 3.0.12 leaves that to the garbage collector: the socket stays referenced from
    the frames of the error's traceback, which the error's own reference cycle keeps alive, so a
    broker that refuses connections costs a descriptor per attempt until a full collection runs.
    """

    async def _build_transport(self, node, timeout_at=None):
        try:
            return await super()._build_transport(node, timeout_at=timeout_at)
        except BaseException as exc:
            # The frames below this one have ended; clearing their locals drops the last
            # reference to the socket (or TLS transport) they made, and that closes it.
            traceback.clear_frames(exc.__traceback__)
            raise


class _RejectedLoginEndsBootstrap(_FailedConnectsClosed):
    """kafka-python's connection manager, except that a bootstrap server refusing the SASL login
    ends the bootstrap at once with `SaslLoginRejected`.

    kafka-python 3.0 retries a refused login until `bootstrap_timeout_ms` (30 s by default) runs
    out and then says only "Unable to bootstrap": its cache of authentication failures is never
    filled, as `KafkaConnection.initialize` reports the failure through the connection's future
    instead of raising. Wrong credentials do not fix themselves, so waiting only hides the cause.
    Only bootstraps are affected; a connected client reconnects as kafka-python always does.
    """

    # A broker refuses a login by answering with an error and closing the connection.
    # kafka-python 3.0.12 drops a response that arrives together with the close, so about half
    # of the refusals reach us as a bare disconnect in the middle of the login. Two of those in
    # a row are taken as a refusal too: a broker that is merely going away fails the TCP
    # connect or the ApiVersions request, not the login.
    LOGIN_DISCONNECTS_TAKEN_AS_REFUSAL = 2

    def __init__(self, *args, **configs):
        super().__init__(*args, **configs)
        self._rejected: SaslLoginRejected | None = None
        self._login_disconnects = 0

    def get_connection(self, node_id, *args, **kwargs):
        during_bootstrap = not self.bootstrapped and self.cluster.is_bootstrap(node_id)
        # The bootstrap loop retries only on NodeNotReadyError from here: this ends it. The next
        # bootstrap, if the client lives on, starts with a clean slate.
        if during_bootstrap and self._rejected is not None:
            rejected, self._rejected, self._login_disconnects = self._rejected, None, 0
            raise rejected
        conn = super().get_connection(node_id, *args, **kwargs)
        if during_bootstrap:
            conn.init_future.add_errback(self._bootstrap_connection_failed, conn)
        return conn

    def _bootstrap_connection_failed(self, conn, error: Exception) -> None:
        if isinstance(error, (SaslAuthenticationFailedError, UnsupportedSaslMechanismError)):
            # kafka-python words a refusal "SaslAuthenticationFailedError: <the broker's message>".
            reason = str(error.args[0]) if error.args else error.description
            reason = reason.removeprefix(f"{type(error).__name__}: ")
            self._rejected = SaslLoginRejected.from_config(self.config, reason=reason)
        elif isinstance(error, KafkaConnectionError) and conn.broker_version_data is not None:
            # The broker answered ApiVersions on this connection; the login is all that follows.
            self._login_disconnects += 1
            if self._login_disconnects >= self.LOGIN_DISCONNECTS_TAKEN_AS_REFUSAL:
                self._rejected = SaslLoginRejected.from_config(
                    self.config,
                    reason=f"the broker closed the connection during the login {self._login_disconnects} "
                    "times in a row (wrong credentials, or a mechanism it does not offer)",
                )
        else:
            self._login_disconnects = 0


class _NetClient(KafkaNetClient):
    """kafka-python's client around `_FailedConnectsClosed`. A manager that cannot be built (a
    malformed bootstrap address raises ValueError) closes the selector built for it, whose epoll
    descriptor and wake-up socket pair kafka-python would leave open."""

    manager_class: type[KafkaConnectionManager] = _FailedConnectsClosed

    def __init__(self, net=None, manager=None, **configs):
        net = NetworkSelector(**configs) if net is None else net
        if manager is None:
            try:
                manager = self.manager_class(net, **configs)
            except BaseException:
                net.close()
                raise
        super().__init__(net=net, manager=manager, **configs)


class _RejectedLoginEndsBootstrapClient(_NetClient):
    """The `kafka_client` of every SASL connection: kafka-python's own client around
    `_RejectedLoginEndsBootstrap`."""

    manager_class = _RejectedLoginEndsBootstrap


class ClosedOnFailedBootstrap:
    """Mixed into a kafka-python client class (admin client, consumer): an `__init__` that fails
    closes what it started.

    kafka-python 3.0 starts a client's I/O thread (with its selector and wake-up socket pair) and
    only then bootstraps, in `__init__`; when the bootstrap fails, the exception leaves all of it
    running, as no one holds the client to close it. Every health check, status page or topic
    page against an absent broker would leave one more thread and a few descriptors behind.
    """

    def __init__(self, **configs):
        try:
            super().__init__(**configs)
        except BaseException:
            self._close_half_built()
            raise

    def _close_half_built(self) -> None:
        # What `close()` does, for the parts `__init__` got to: the client closes the manager's
        # connections, then the selector, which stops and joins the I/O thread first.
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            metrics.close()


class _AdminClient(ClosedOnFailedBootstrap, KafkaAdminClient):
    """kafka-python's admin client, whose group calls wait for the group's coordinator.

    A broker answers FindCoordinator with COORDINATOR_NOT_AVAILABLE while it creates or loads
    `__consumer_offsets` (the first group a fresh broker meets, a broker just restarted), and
    with COORDINATOR_LOAD_IN_PROGRESS while it loads the group's partition. Both are retriable
    and the Java admin client retries them; kafka-python raises the first answer. Here the call
    is repeated until its request timeout has passed, and only then does the error surface.
    """

    # NOT_COORDINATOR too: a broker that has just created `__consumer_offsets` names itself the
    # coordinator of a group before its partition is active there, and then answers the group's
    # own requests with NOT_COORDINATOR for a moment; the Java client finds the coordinator again.
    _COORDINATOR_NOT_READY = (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError)

    def list_groups(self, *args, **kwargs):
        # A broker loading its `__consumer_offsets` partitions answers ListGroups with
        # COORDINATOR_LOAD_IN_PROGRESS too: the status page on a broker just started.
        return self._when_coordinator_ready(super().list_groups, *args, **kwargs)

    def describe_groups(self, *args, **kwargs):
        return self._when_coordinator_ready(super().describe_groups, *args, **kwargs)

    def list_group_offsets(self, *args, **kwargs):
        return self._when_coordinator_ready(super().list_group_offsets, *args, **kwargs)

    def alter_group_offsets(self, *args, **kwargs):
        # Its answer carries an error per partition instead of raising one: a coordinator not
        # ready fails every partition, and is waited out like the other calls' errors.
        def altered():
            results = super(_AdminClient, self).alter_group_offsets(*args, **kwargs)
            errors = {error for error in results.values() if error is not NoError}
            if errors and all(issubclass(error, self._COORDINATOR_NOT_READY) for error in errors):
                raise next(iter(errors))(f"OffsetCommit failed for every partition of group {args[0]!r}")
            return results

        return self._when_coordinator_ready(altered)

    def delete_groups(self, *args, **kwargs):
        return self._when_coordinator_ready(super().delete_groups, *args, **kwargs)

    def _when_coordinator_ready(self, call, *args, **kwargs):
        deadline = time.monotonic() + self.config["request_timeout_ms"] / 1000
        backoff = 0.05
        while True:
            try:
                return call(*args, **kwargs)
            except self._COORDINATOR_NOT_READY:
                if time.monotonic() + backoff > deadline:
                    raise
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


@contextmanager
def admin_client(*, timeout_ms: int | None = None) -> Iterator[KafkaAdminClient]:
    """An admin client whose bootstrap and requests are bounded by `timeout_ms`.

    Raises `BrokerUnavailable` with the bootstrap servers named when nothing answers, and
    `BrokerAuthenticationFailed` at once when a broker rejects the SASL credentials. On every
    path, a failed bootstrap included, the client's I/O thread and sockets are closed.
    """
    timeout_ms = timeout_ms or settings.KAFKA_ADMIN_TIMEOUT_MS
    try:
        client = _AdminClient(
            **short_lived_client_config(),
            client_id="orderflow-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except SaslLoginRejected as exc:
        raise BrokerAuthenticationFailed(str(exc)) from exc
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap_servers()} within {timeout_ms / 1000:g} s ({type(exc).__name__})"
        ) from exc
    try:
        yield client
    finally:
        client.close()
