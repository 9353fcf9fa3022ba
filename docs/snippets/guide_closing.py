"""Errors, close codes and clients that leave."""

from __future__ import annotations

import json
import logging

from trio_bocaws import App, WebSocket, WebSocketDisconnect

logger = logging.getLogger("averages")
app = App()

# [codes]
# Close codes of this application: 4000-4999 are reserved for private use.
NOT_A_NUMBER = 4001
TOO_MANY = 4002
# [end codes]


# [average]
@app.websocket_route("/average")
async def average(ws: WebSocket, limit: int = 100) -> None:
    numbers: list[float] = []
    async for text in ws:
        try:
            number = json.loads(text)
        except json.JSONDecodeError:
            await ws.send("that is not JSON; try again")  # tell the client, carry on
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            await ws.close(NOT_A_NUMBER, "numbers only")
            return
        if len(numbers) == limit:
            await ws.close(TOO_MANY, f"at most {limit} numbers")
            return
        numbers.append(number)
        await ws.send(f"average: {sum(numbers) / len(numbers):g}")
    # [end average]


# [fragile]
@app.websocket_route("/ratio")
async def ratio(ws: WebSocket) -> None:
    async for text in ws:
        a, b = map(int, text.split("/"))
        await ws.send(str(a / b))  # "1/0": ZeroDivisionError, the client sees 1011
    # [end fragile]


# [tracked]
@app.websocket_route("/tracked", caught_close_codes=(1000,))
async def tracked(ws: WebSocket) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except WebSocketDisconnect as exc:
        # Any close code but 1000 lands here: record it, then let it go on.
        logger.warning("client left with %d %r", exc.code, exc.reason)
        raise
    # [end tracked]


# [goodbyes]
@app.websocket_route("/goodbyes", caught_close_codes=all)
async def goodbyes(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)
    # The loop ends quietly whatever the code; the code is still there.
    logger.info("client left with %s", ws.close_code)
    # [end goodbyes]
