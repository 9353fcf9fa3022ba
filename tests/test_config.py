from __future__ import annotations

from typing import Any

import attrs
import pytest

from trio_bocaws import ALL_CLOSE_CODES, CloseCodes, WebSocketConfig


def test_defaults() -> None:
    config = WebSocketConfig()
    assert config.auto_accept is True
    assert (config.receive_type, config.send_type) == ("text", "text")
    assert config.caught_close_codes == CloseCodes((1000, 1001))
    assert config.cancelled_close_code == 1001
    assert config.close_timeout > 0


def test_frozen_and_evolvable() -> None:
    config = WebSocketConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.auto_accept = False  # type: ignore[misc]
    assert attrs.evolve(config, auto_accept=False).auto_accept is False


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        WebSocketConfig(False)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"receive_type": "xml"}, "receive_type must be one of 'text', 'bytes', 'json', 'event'"),
        ({"send_type": None}, "send_type must be one of"),
        ({"auto_accept": "yes"}, "auto_accept"),
        ({"close_timeout": 0}, "close_timeout must be a number of seconds above 0"),
        ({"close_timeout": True}, "close_timeout"),
        ({"cancelled_close_code": 1006}, "cancelled_close_code: cannot close"),
        ({"cancelled_close_reason": "x" * 200}, "cancelled_close_reason: a close reason"),
        ({"max_buffered_messages": 0}, "max_buffered_messages must be an int of at least 1"),
        ({"caught_close_codes": (1000, "1001")}, "caught_close_codes contains '1001'"),
        ({"caught_close_codes": (999,)}, "from 1000 to 4999"),
        ({"caught_close_codes": "1000"}, "tuple of ints"),
        ({"caught_close_codes": 1000}, "tuple of ints"),
    ],
)
def test_invalid_values_name_the_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", "\\(")):
        WebSocketConfig(**options)


def test_caught_close_codes_conversions() -> None:
    assert WebSocketConfig(caught_close_codes=all).caught_close_codes is ALL_CLOSE_CODES
    assert WebSocketConfig(caught_close_codes=None).caught_close_codes == CloseCodes((1000, 1001))
    none = WebSocketConfig(caught_close_codes=()).caught_close_codes
    assert 1000 not in none and list(none) == []
    some = WebSocketConfig(caught_close_codes=[4001, 1000]).caught_close_codes
    assert list(some) == [1000, 4001]
    assert repr(some) == "CloseCodes((1000, 4001))"
    assert repr(ALL_CLOSE_CODES) == "CloseCodes(all)"
    assert ALL_CLOSE_CODES.is_all and not some.is_all
    with pytest.raises(TypeError, match="cannot be listed"):
        list(ALL_CLOSE_CODES)
    assert hash(CloseCodes((1000,))) == hash(CloseCodes([1000]))


def test_from_mapping() -> None:
    config = WebSocketConfig.from_mapping({"value_type": "json", "close_timeout": 1.5})
    assert (config.receive_type, config.send_type, config.close_timeout) == ("json", "json", 1.5)
    with pytest.raises(TypeError, match="unknown WebSocket option\\(s\\): colour"):
        WebSocketConfig.from_mapping({"colour": "blue"})


def test_with_options_maps_bocadillo_keywords() -> None:
    base = WebSocketConfig()
    assert base.with_options() is base
    config = base.with_options(value_type="bytes", receive_type="json", auto_accept=False)
    assert (config.receive_type, config.send_type, config.auto_accept) == ("bytes", "bytes", False)
    assert base.with_options(caught_close_codes=all).caught_close_codes is ALL_CLOSE_CODES
