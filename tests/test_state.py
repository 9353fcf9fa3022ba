"""The transition table on its own: every state, every transition, every refusal."""

from __future__ import annotations

import itertools

import pytest

from trio_bocaws import (
    WebSocketClosedError,
    WebSocketDisconnect,
    WebSocketState,
    WebSocketStateError,
)
from trio_bocaws._state import Transition, next_state

S = WebSocketState
T = Transition

ALLOWED = {
    (S.CONNECTING, T.ACCEPT): S.CONNECTED,
    (S.CONNECTING, T.REJECT): S.REJECTED,
    (S.CONNECTING, T.PEER_CLOSE): S.DISCONNECTED,
    (S.CONNECTED, T.SEND): S.CONNECTED,
    (S.CONNECTED, T.RECEIVE): S.CONNECTED,
    (S.CONNECTED, T.CLOSE): S.CLOSED,
    (S.CONNECTED, T.PEER_CLOSE): S.DISCONNECTED,
    (S.REJECTED, T.PEER_CLOSE): S.REJECTED,
    (S.CLOSED, T.PEER_CLOSE): S.CLOSED,
    (S.DISCONNECTED, T.PEER_CLOSE): S.DISCONNECTED,
}
REFUSED = [pair for pair in itertools.product(S, T) if pair not in ALLOWED]


def test_the_table_covers_every_pair() -> None:
    assert len(ALLOWED) + len(REFUSED) == len(S) * len(T) == 30


@pytest.mark.parametrize(("state", "transition"), list(ALLOWED))
def test_allowed(state: WebSocketState, transition: Transition) -> None:
    assert next_state(state, transition) is ALLOWED[state, transition]


@pytest.mark.parametrize(("state", "transition"), REFUSED)
def test_refused_with_an_error_that_names_it(
    state: WebSocketState, transition: Transition
) -> None:
    if state is S.DISCONNECTED:
        # The client has gone: the error carries its close code and reason.
        with pytest.raises(WebSocketDisconnect) as gone:
            next_state(state, transition, (4001, "bye"))
        assert (gone.value.code, gone.value.reason) == (4001, "bye")
        return
    expected = WebSocketClosedError if state in (S.CLOSED, S.REJECTED) else WebSocketStateError
    with pytest.raises(expected) as refused:
        next_state(state, transition)
    assert type(refused.value) is expected
    message = str(refused.value)
    assert message.startswith(f"cannot {transition.value}")
    if state is S.CONNECTING:
        assert "before the connection is accepted" in message
    elif state is S.CONNECTED:
        assert "already accepted" in message
    else:
        assert f"already {state.value} by the application" in message


def test_a_disconnect_without_a_known_code_is_1006() -> None:
    with pytest.raises(WebSocketDisconnect) as gone:
        next_state(S.DISCONNECTED, T.SEND)
    assert gone.value.code == 1006


def test_the_state_errors_are_runtime_errors_as_in_bocadillo() -> None:
    with pytest.raises(RuntimeError):
        next_state(S.CONNECTING, T.SEND)
    with pytest.raises(RuntimeError):
        next_state(S.CLOSED, T.CLOSE)
