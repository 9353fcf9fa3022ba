"""The public API: what is exported, from where, and that nothing private leaks."""

from __future__ import annotations

import importlib.resources
import inspect
import types

import pytest

import trio_bocaws
import trio_bocaws.websockets


def test_all_matches_the_public_names() -> None:
    # Submodules (hypercorn_fixes, testing, websockets) are public but not re-exported;
    # "@py_builtins" and the like come from pytest rewriting the package's asserts.
    public = {
        name
        for name, value in vars(trio_bocaws).items()
        if not name.startswith(("_", "@")) and not isinstance(value, types.ModuleType)
    }
    assert set(trio_bocaws.__all__) == public


@pytest.mark.parametrize("name", trio_bocaws.__all__)
def test_each_export_is_defined_in_a_private_module(name: str) -> None:
    value = getattr(trio_bocaws, name)
    module = getattr(value, "__module__", None) or type(value).__module__
    assert module.startswith("trio_bocaws._"), (name, module)


def test_bocadillo_import_path() -> None:
    assert trio_bocaws.websockets.WebSocket is trio_bocaws.WebSocket
    assert trio_bocaws.websockets.WebSocketDisconnect is trio_bocaws.WebSocketDisconnect
    assert set(trio_bocaws.websockets.__all__) == {"WebSocket", "WebSocketDisconnect"}


def test_bocadillo_signatures() -> None:
    """The seed's signatures, parameter for parameter (keyword-only additions allowed)."""
    ws = trio_bocaws.WebSocket
    expected = {
        "__init__": [
            "self",
            "scope",
            "receive",
            "send",
            "auto_accept",
            "value_type",
            "receive_type",
            "send_type",
            "caught_close_codes",
        ],
        "accept": ["self", "subprotocol"],
        "reject": ["self"],
        "close": ["self", "code"],
        "ensure_closed": ["self", "code"],
        "receive_text": ["self"],
        "send_text": ["self", "data"],
        "receive_bytes": ["self"],
        "send_bytes": ["self", "data"],
        "receive_json": ["self"],
        "send_json": ["self", "data"],
        "receive_event": ["self"],
        "send_event": ["self", "event"],
        "receive": ["self"],
        "send": ["self", "message"],
    }
    for method, names in expected.items():
        parameters = list(inspect.signature(getattr(ws, method)).parameters.values())
        positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional[: len(names)] == names, method
    defaults = inspect.signature(ws.__init__).parameters
    assert defaults["auto_accept"].default is True
    assert inspect.signature(ws.close).parameters["code"].default == 1000


def test_py_typed_is_shipped() -> None:
    files = importlib.resources.files("trio_bocaws")
    assert files.joinpath("py.typed").is_file()
