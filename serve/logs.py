"""Logging with the request id on every line (a contextvar set by the gateway's middleware)."""

from __future__ import annotations

import contextvars
import logging
import re

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def valid_request_id(value: str) -> bool:
    """A client-chosen X-Request-ID is kept only if it is short and plain (it goes into logs)."""
    return bool(value) and bool(_VALID_ID.match(value))


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str = "info", stream=None) -> None:
    """Gateway logs (`medtok.serve`) with request ids; uvicorn's own lines in the same format."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    for name in ("medtok.serve", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
