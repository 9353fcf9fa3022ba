"""Bocadillo's WebSocket API for Trio, served by hypercorn's trio worker."""

from . import hypercorn_fixes as _hypercorn_fixes
from ._app import App as App
from ._app import AppConfig as AppConfig
from ._asyncapi import AsyncAPIConfig as AsyncAPIConfig
from ._broadcast import Broadcast as Broadcast
from ._broadcast import BroadcastConfig as BroadcastConfig
from ._broadcast import BroadcastError as BroadcastError
from ._broadcast import BroadcastOverflow as BroadcastOverflow
from ._broadcast import Message as Message
from ._broadcast import Room as Room
from ._broadcast import Subscription as Subscription
from ._config import ALL_CLOSE_CODES as ALL_CLOSE_CODES
from ._config import CloseCodes as CloseCodes
from ._config import WebSocketConfig as WebSocketConfig
from ._datastructures import URL as URL
from ._datastructures import Address as Address
from ._endpoint import WebSocketEndpoint as WebSocketEndpoint
from ._endpoint import handles as handles
from ._errors import MessageValidationError as MessageValidationError
from ._errors import RejectConnection as RejectConnection
from ._errors import TrioBocawsError as TrioBocawsError
from ._errors import UnexpectedMessageType as UnexpectedMessageType
from ._errors import WebSocketClosedError as WebSocketClosedError
from ._errors import WebSocketDisconnect as WebSocketDisconnect
from ._errors import WebSocketStateError as WebSocketStateError
from ._http import HTMLPage as HTMLPage
from ._room_history import HistoryGap as HistoryGap
from ._room_history import RoomConfig as RoomConfig
from ._room_presence import PresenceChange as PresenceChange
from ._room_presence import PresenceWatch as PresenceWatch
from ._routing import ParameterError as ParameterError
from ._routing import WebSocketRoute as WebSocketRoute
from ._serve import ServerConfig as ServerConfig
from ._serve import run as run
from ._serve import serve as serve
from ._typed import TypedMessages as TypedMessages
from ._typed import message_converter as message_converter
from ._websocket import WebSocket as WebSocket
from ._websocket import WebSocketState as WebSocketState

__version__ = "0.1.0.dev0"

__all__ = [
    "ALL_CLOSE_CODES",
    "URL",
    "Address",
    "App",
    "AppConfig",
    "AsyncAPIConfig",
    "Broadcast",
    "BroadcastConfig",
    "BroadcastError",
    "BroadcastOverflow",
    "CloseCodes",
    "HTMLPage",
    "HistoryGap",
    "Message",
    "MessageValidationError",
    "ParameterError",
    "PresenceChange",
    "PresenceWatch",
    "RejectConnection",
    "Room",
    "RoomConfig",
    "ServerConfig",
    "Subscription",
    "TrioBocawsError",
    "TypedMessages",
    "UnexpectedMessageType",
    "WebSocket",
    "WebSocketClosedError",
    "WebSocketConfig",
    "WebSocketDisconnect",
    "WebSocketEndpoint",
    "WebSocketRoute",
    "WebSocketState",
    "WebSocketStateError",
    "handles",
    "message_converter",
    "run",
    "serve",
]

_hypercorn_fixes.install_unless_disabled()
