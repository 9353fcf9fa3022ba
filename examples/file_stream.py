"""Binary streaming: a file sent in chunks, then a summary the client can check.

    FILES_DIR=/some/dir python -m trio_bocaws examples.file_stream:app

The client asks for ``/files/<name>``; the server sends the file as binary messages of
at most ``CHUNK`` bytes, then one text message ``{"done": true, "size": ..., "sha256": ...}``
and closes. Only files directly inside ``FILES_DIR`` are served.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from trio_bocaws import App, RejectConnection, WebSocket

CHUNK = 64 * 1024
FILES_DIR = Path(os.environ.get("FILES_DIR", ".")).resolve()

app = App()


def resolve(name: str) -> Path:
    path = (FILES_DIR / name).resolve()
    if path.parent != FILES_DIR or not path.is_file():
        raise RejectConnection(404, f"no file named {name!r}")
    return path


@app.websocket_route("/files/{name}")
async def download(ws: WebSocket, name: str) -> None:
    path = resolve(name)  # refused before the handshake is answered
    digest = hashlib.sha256()
    size = 0
    async with await trio.open_file(path, "rb") as file:
        while chunk := await file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            await ws.send_bytes(chunk)
    await ws.send_json({"done": True, "size": size, "sha256": digest.hexdigest()})
