"""Timeouts and cancellation, and what the client sees."""

from __future__ import annotations

from typing import Any

import trio

from trio_bocaws import App, WebSocket, WebSocketConfig

app = App()

# [quiz]
QUESTIONS = [("2 + 2", 4), ("6 * 7", 42)]
ANSWER_TIME = 30.0


@app.websocket_route("/quiz", value_type="json")
async def quiz(ws: WebSocket) -> None:
    score = 0
    for question, answer in QUESTIONS:
        await ws.send({"question": question})
        with trio.move_on_after(ANSWER_TIME) as timer:
            reply = await ws.receive()
        if timer.cancelled_caught:
            await ws.send({"too_late": question})
            continue
        if reply == answer:
            score += 1
    await ws.send({"score": score})
    # [end quiz]


# [session]
SESSION_LIMIT = 15 * 60.0
SESSION_EXPIRED = 4008


@app.websocket_route("/session")
async def session(ws: WebSocket) -> None:
    with trio.move_on_after(SESSION_LIMIT):
        async for message in ws:
            await ws.send(message)
        return  # the client left first
    await ws.close(SESSION_EXPIRED, "session expired, log in again")
    # [end session]


# [deadline]
@app.websocket_route("/report")
async def report(ws: WebSocket) -> None:
    with trio.fail_after(5):  # TooSlowError if this takes longer
        await ws.send(await build_report())


async def build_report() -> str:
    await trio.sleep(10)  # a slow database, say
    return "report"
    # [end deadline]


# [bare]
async def timed_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: a cancel scope around `async with ws` ends the connection."""
    if scope["type"] != "websocket":
        return
    with trio.move_on_after(SESSION_LIMIT):
        async with WebSocket(scope, receive, send) as ws:
            async for message in ws:
                await ws.send(message)
    # [end bare]


# [config]
strict = WebSocketConfig(
    cancelled_close_code=4008,
    cancelled_close_reason="time is up",
    close_timeout=2.0,
    idle_timeout=120.0,
)


@app.websocket_route("/strict", config=strict)
async def strict_echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)
    # [end config]
