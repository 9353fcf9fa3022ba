"""Metrics through the OpenTelemetry metrics API (the optional ``metrics`` extra).

Off by default, and then nothing here runs and :mod:`opentelemetry` is never imported:
the App keeps ``None`` instead of a :class:`Metrics`, and each hook is one ``is not None``
test (per connection, refused handshake, dropped room message, and message).

Per message there is no OpenTelemetry call either way. With metrics on, a connection's
block (:class:`~trio_bocaws._lifetime.Lifetime`) holds a :class:`ConnectionMetrics` that
counts its messages in two plain ints, and the message counters get each connection's
totals when it ends: an SDK ``Counter.add`` costs about 4 us, two per
echoed message would add about 5% to the per-message path, where the ints add 0.2%
(``benchmarks/README.md``). So ``trio_bocaws.messages.*`` advance when
connections close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import trio

from ._connection_log import VIEW, ConnectionRecord
from ._state import WebSocketState
from ._websocket import WebSocket

__all__ = ["ConnectionMetrics", "Metrics", "metrics_from"]

# The reasons of trio_bocaws.handshakes.refused (and VIEW, the connection log's).
ORIGIN: Final = "origin"
AUTH: Final = "auth"
CAP: Final = "cap"
NO_ROUTE: Final = "no_route"
BAD_PARAMETERS: Final = "bad_parameters"

_INSTALL: Final = "metrics need OpenTelemetry's API: pip install 'trio-bocaws[metrics]'"


def metrics_from(option: Any) -> Metrics | None:
    """The App's ``metrics`` argument, read once: ``None`` when metrics are off.

    Raises:
        TypeError: ``option`` is neither a bool, ``None`` nor a meter provider.
        ImportError: Metrics are asked for but ``opentelemetry-api`` is not installed.
    """
    if option is None or option is False:
        return None
    if option is True:
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise ImportError(f"App(metrics=True): {_INSTALL}") from exc
        # The global provider; until the application sets one, the API's proxy, whose
        # instruments start recording once it is set.
        return Metrics(metrics.get_meter_provider())
    if not callable(getattr(option, "get_meter", None)):
        raise TypeError(
            "metrics must be True, False, or an OpenTelemetry MeterProvider, "
            f"not {type(option).__name__}"
        )
    return Metrics(option)


class Metrics:
    """The instruments, made once per App from a meter provider."""

    def __init__(self, provider: Any) -> None:
        from . import __version__

        meter = provider.get_meter("trio_bocaws", __version__)
        self.active = meter.create_up_down_counter(
            "trio_bocaws.connections.active",
            unit="{connection}",
            description="WebSocket connections open or in their handshake, by route",
        )
        self.closed = meter.create_counter(
            "trio_bocaws.connections.closed",
            unit="{connection}",
            description="WebSocket connections ended, by route, close code and who closed",
        )
        self.duration = meter.create_histogram(
            "trio_bocaws.connection.duration",
            unit="s",
            description="How long accepted WebSocket connections lasted, by route",
        )
        self.received = meter.create_counter(
            "trio_bocaws.messages.received",
            unit="{message}",
            description="Messages received from clients, by route (added when a connection ends)",
        )
        self.sent = meter.create_counter(
            "trio_bocaws.messages.sent",
            unit="{message}",
            description="Messages sent to clients, by route (added when a connection ends)",
        )
        self.refused = meter.create_counter(
            "trio_bocaws.handshakes.refused",
            unit="{handshake}",
            description="WebSocket handshakes refused, by reason",
        )
        self.dropped = meter.create_counter(
            "trio_bocaws.room.messages.dropped",
            unit="{message}",
            description="Room messages dropped for members that fell behind, by room",
        )
        self._routes: dict[str, dict[str, str]] = {}
        self._reasons = {
            reason: {"reason": reason}
            for reason in (ORIGIN, AUTH, CAP, NO_ROUTE, BAD_PARAMETERS, VIEW)
        }

    def refused_handshake(self, reason: str) -> None:
        self.refused.add(1, self._reasons[reason])

    def connection_opened(self, route: str) -> ConnectionMetrics:
        """Count a connection that reached a route; what to call when it ends."""
        attributes = self._routes.get(route)
        if attributes is None:
            attributes = self._routes[route] = {"route": route}
        self.active.add(1, attributes)
        return ConnectionMetrics(self, attributes)

    def room_drop_counter(self, room: str) -> Callable[[], None]:
        """What a room's member calls for each message it drops."""
        attributes = {"room": room}
        add = self.dropped.add
        return lambda: add(1, attributes)


class ConnectionMetrics(ConnectionRecord):
    """One connection's share of the metrics, from its route to its end: a
    :class:`~trio_bocaws._connection_log.ConnectionRecord` that is also counted."""

    __slots__ = ("_attributes", "_metrics")

    def __init__(self, metrics: Metrics, attributes: dict[str, str]) -> None:
        super().__init__()
        self._metrics = metrics
        self._attributes = attributes

    def ended(self, ws: WebSocket) -> None:
        """The App is done with the connection: record how it went (and log its line)."""
        metrics = self._metrics
        attributes = self._attributes
        metrics.active.add(-1, attributes)
        if self.received:
            metrics.received.add(self.received, attributes)
        if self.sent:
            metrics.sent.add(self.sent, attributes)
        if self.closed_by is None:
            refusal = self.refusal
            if refusal is not None:
                metrics.refused_handshake(refusal[1])
            elif ws.state is WebSocketState.REJECTED:  # (takes in a close reported since)
                metrics.refused_handshake(VIEW)  # (refused where no block reported it)
        else:
            closed = {**attributes, "close_code": self.close_code, "closed_by": self.closed_by}
            metrics.closed.add(1, closed)
            metrics.duration.record(trio.current_time() - self.opened, attributes)
        super().ended(ws)
