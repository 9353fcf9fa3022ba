"""A protocol fuzzer for trio_bocaws on hypercorn's trio worker.

Random and malformed sessions over HTTP/1.1 and HTTP/2 (plain and TLS) against a real
server running trio_bocaws views, while a bystander connection keeps echoing. See
``reliability/README.md``; ``python -m reliability.fuzz --sessions 10000`` runs a campaign.
"""

from ._actions import Session as Session
from ._actions import Transport as Transport
from ._actions import sessions as sessions
from ._campaign import KNOWN_CRASHES as KNOWN_CRASHES
from ._campaign import Report as Report
from ._campaign import campaign as campaign
from ._campaign import minimize as minimize
from ._target import FuzzTarget as FuzzTarget
from ._target import Outcome as Outcome

__all__ = [
    "KNOWN_CRASHES",
    "FuzzTarget",
    "Outcome",
    "Report",
    "Session",
    "Transport",
    "campaign",
    "minimize",
    "sessions",
]
