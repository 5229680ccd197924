"""Errors the gateway's logic raises; handlers turn them into the one JSON error shape.

::

    CellgateError (status 500)
    ├── BadRequest (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── Conflict (409)   also raised for tasks.TransitionConflict
    ├── TooLarge (413)   code over Gateway.max_code_bytes
    ├── Unprocessable (422) well-formed but refused, e.g. an Idempotency-Key reused for another request
    └── Unavailable (503) e.g. no agent serves the target
        └── StoreUnavailable  the store did not answer within Gateway.store_timeout, or cannot be reached
"""

from __future__ import annotations


class CellgateError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CellgateError):
    status = 400


class Unauthorized(CellgateError):
    status = 401


class Forbidden(CellgateError):
    status = 403


class NotFound(CellgateError):
    status = 404


class Conflict(CellgateError):
    status = 409


class TooLarge(CellgateError):
    status = 413


class Unprocessable(CellgateError):
    status = 422


class Unavailable(CellgateError):
    status = 503


class StoreUnavailable(Unavailable):
    """The store did not answer in time or cannot be reached (``Store.run``); a write that is
    retried until it commits (``kernels.Recorder``) retries on this, and only on this."""
