"""Close-code and handshake rules, including property tests over the whole code range."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_bocaws._validation import (
    validate_accept_headers,
    validate_close_code,
    validate_close_reason,
    validate_subprotocol,
)

SENDABLE = {1000, 1001, 1002, 1003, *range(1007, 1014), *range(3000, 5000)}


@given(st.integers(min_value=-10, max_value=70_000))
def test_exactly_the_sendable_codes_are_accepted(code: int) -> None:
    if code in SENDABLE:
        assert validate_close_code(code) == code
    else:
        with pytest.raises(ValueError, match=f"code {code}"):
            validate_close_code(code)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (1005, "reserved for reporting a closure locally"),
        (1006, "reserved for reporting a closure locally"),
        (1015, "reserved for reporting a closure locally"),
        (1004, "reserved by RFC 6455"),
        (2000, "reserved by RFC 6455"),
        (403, "looks like an HTTP status; use reject()"),
        (5000, "range from 1000 to 4999"),
    ],
)
def test_refusals_explain_why(code: int, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", "\\(").replace(")", "\\)")):
        validate_close_code(code)


@given(st.text(max_size=200))
def test_reasons_up_to_123_utf8_bytes(reason: str) -> None:
    if len(reason.encode()) <= 123:
        assert validate_close_reason(reason) == reason
    else:
        with pytest.raises(ValueError, match="123 bytes"):
            validate_close_reason(reason)


def test_subprotocol_must_be_offered() -> None:
    assert validate_subprotocol(None, []) is None
    assert validate_subprotocol("b", ["a", "b"]) == "b"
    with pytest.raises(ValueError, match="it offered none"):
        validate_subprotocol("a", [])
    with pytest.raises(ValueError, match="it offered 'x', 'y'"):
        validate_subprotocol("a", ["x", "y"])


def test_headers_are_lower_cased_and_encoded() -> None:
    assert validate_accept_headers({"X-Trace": "abc"}) == [(b"x-trace", b"abc")]
    assert validate_accept_headers([("X-Trace", "abc"), (b"x-raw", b"\xe9")]) == [
        (b"x-trace", b"abc"),
        (b"x-raw", b"\xe9"),
    ]
    assert validate_accept_headers(None) == []


@given(st.binary(min_size=1, max_size=20))
def test_header_values_with_control_characters_are_refused(value: bytes) -> None:
    if any(byte in value for byte in b"\r\n\x00"):
        with pytest.raises(ValueError, match="invalid value"):
            validate_accept_headers([("x-value", value)])
