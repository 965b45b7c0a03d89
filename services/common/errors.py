"""Domain errors that mean "the caller must change the request".

Kept free of grpc so that validation code (audio formats, token arrays) can raise it
anywhere; `barkstream.services.common.status` turns it into INVALID_ARGUMENT at the RPC edge.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request the caller must fix; the message says what to change.

    A ValueError so that plain-Python callers (tests, the embedded mode) can treat it as one.
    """
