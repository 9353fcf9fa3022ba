"""Bocadillo's import path: ``from trio_bocaws.websockets import WebSocket``.

A Bocadillo app written against ``bocadillo.websockets`` changes only this import.
"""

from ._errors import WebSocketDisconnect as WebSocketDisconnect
from ._websocket import WebSocket as WebSocket

__all__ = ["WebSocket", "WebSocketDisconnect"]
