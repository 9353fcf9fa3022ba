"""Authentication that refuses the handshake: the client sees the status and the body.

    python -m trio_bocaws examples.auth:app

A client presents a token, as ``Authorization: Bearer <token>`` or ``?token=<token>``
(browsers cannot set headers on a WebSocket, so pages use the query string). No token:
HTTP 401 with a ``WWW-Authenticate`` header; an unknown token: 403. An authenticated view
reads the user from ``ws.user``.
"""

from __future__ import annotations

import hmac

from trio_bocaws import App, RejectConnection, WebSocket

# A stand-in for a real session store.
TOKENS = {"s3cr3t-ada": "ada", "s3cr3t-bob": "bob"}


def token_of(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip()
    return ws.query_params.get("token")


async def authenticate(ws: WebSocket) -> str:
    token = token_of(ws)
    if token is None:
        raise RejectConnection(401, "a token is required", {"www-authenticate": "Bearer"})
    for known, user in TOKENS.items():
        if hmac.compare_digest(token.encode(), known.encode()):
            return user
    raise RejectConnection(403, "unknown token")


app = App(authenticate=authenticate)


@app.websocket_route("/me")
async def me(ws: WebSocket) -> None:
    await ws.send_json({"user": ws.user})
    async for message in ws:
        await ws.send_json({"user": ws.user, "echo": message})
