"""JSON requests and responses, with validation errors reported to the client.

    python -m trio_bocaws examples.json_api:app

Each request is ``{"id": ..., "op": "add" | "mul" | "neg", "args": [numbers]}``; each
response carries the same ``id`` and either ``"result"`` or ``"error"`` (a code and a
message). A bad request gets an error response, and the connection stays open.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from trio_bocaws import App, WebSocket

app = App()

Operation = Callable[[list[float]], float]
# Each operation: how many arguments it takes (None: any number), and what it does.
OPERATIONS: dict[str, tuple[int | None, Operation]] = {
    "add": (None, math.fsum),
    "mul": (None, math.prod),
    "neg": (1, lambda args: -args[0]),
}


class InvalidRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def evaluate(request: Any) -> float:
    if not isinstance(request, dict):
        raise InvalidRequest("not-an-object", "a request is a JSON object")
    operation = request.get("op")
    if operation not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise InvalidRequest("unknown-op", f"op must be one of {known}, not {operation!r}")
    args = request.get("args")
    if not isinstance(args, list) or not all(
        isinstance(arg, (int, float)) and not isinstance(arg, bool) for arg in args
    ):
        raise InvalidRequest("bad-args", "args must be a list of numbers")
    arity, function = OPERATIONS[operation]
    if arity is not None and len(args) != arity:
        raise InvalidRequest("bad-args", f"{operation} takes {arity} argument(s), not {len(args)}")
    result: float = function(args)
    return result


@app.websocket_route("/rpc")
async def rpc(ws: WebSocket) -> None:
    async for text in ws:
        try:
            request = json.loads(text)
        except json.JSONDecodeError as exc:
            await ws.send_json({"id": None, "error": {"code": "bad-json", "message": str(exc)}})
            continue
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            await ws.send_json({"id": request_id, "result": evaluate(request)})
        except InvalidRequest as invalid:
            error = {"code": invalid.code, "message": invalid.message}
            await ws.send_json({"id": request_id, "error": error})
