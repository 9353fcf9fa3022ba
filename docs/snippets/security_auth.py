"""Who is connecting: the site's session cookie, checked before the handshake is answered."""

from __future__ import annotations

from trio_bocaws import App, RejectConnection, WebSocket

# A stand-in for the site's session store: session id -> user name.
SESSIONS = {"q8Xz2vLw": "ada", "Hk3mP0sT": "grace"}
ADMINS = {"grace"}


def cookie(ws: WebSocket, name: str) -> str | None:
    # Split by hand: http.cookies gives up on the whole header at the first cookie it
    # finds invalid, and another app on the same domain may have set one.
    for pair in ws.headers.get("cookie", "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None


def session_user(ws: WebSocket) -> str:
    session = cookie(ws, "session")
    user = SESSIONS.get(session) if session is not None else None
    if user is None:
        # 403, not 401: a 401 must offer a scheme (WWW-Authenticate) the client could
        # answer with credentials, and a cookie is not one.
        raise RejectConnection(403, "log in first")
    return user


def admin_user(ws: WebSocket) -> str:
    user = session_user(ws)
    if user not in ADMINS:
        raise RejectConnection(403, "admins only")
    return user


app = App(authenticate=session_user)  # for every route, unless it says otherwise


@app.websocket_route("/inbox")
async def inbox(ws: WebSocket) -> None:
    await ws.send_text(f"messages for {ws.user}")


@app.websocket_route("/admin", authenticate=admin_user)  # a stricter hook
async def admin(ws: WebSocket) -> None:
    await ws.send_text(f"admin console for {ws.user}")


@app.websocket_route("/status", authenticate=None)  # public: no hook runs
async def status(ws: WebSocket) -> None:
    await ws.send_text(f"up (user: {ws.user})")
