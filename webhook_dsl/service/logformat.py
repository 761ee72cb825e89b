"""Turns the service's log records into lines on stderr: text (``time LEVEL logger: message key=value``) or
JSON, one object per line, the same fields either way. uvicorn's own lines go through the same handler, so a
log collector never sees the two formats mixed.

The access line is one record (``middleware._log_access``); these formatters decide only how it looks. What
a record holds never includes a header, a query string or a request body, so no API key or secret reaches a
line in either format, under ``serve``, ``uvicorn`` or gunicorn.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

__all__ = ["FIELDS", "LOG_FORMATS", "JsonFormatter", "StderrHandler", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
#: The fields a record may carry (``extra=``) besides its message: the access line's, and a trigger call's.
FIELDS = ("request_id", "method", "path", "status", "duration_ms", "company", "trigger", "category")
#: Those a text line adds after the message (the access message already says method, path, status and time).
_TEXT_FIELDS = ("request_id", "company", "trigger", "category")
#: The loggers of uvicorn whose lines ours replace or carry: its access log (ours replaces it: uvicorn's prints
#: query strings) and its error log (carried through our handler, in our format).
_UVICORN = ("uvicorn", "uvicorn.error")
_UVICORN_ACCESS = "uvicorn.access"

_second = (-1, "")  # the last second formatted, reused: a busy service logs many lines a second


def _utc(created: float) -> str:
    """``2025-01-31T12:00:00.123Z``."""
    global _second
    whole = int(created)
    seen, text = _second
    if seen != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line: time (UTC), level, logger, pid, message, then whichever of
    ``FIELDS`` the record carries, and ``exception`` (its traceback as one string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker, under serve --workers
            "message": record.getMessage(),
        }
        attributes = record.__dict__
        for name in FIELDS:
            value = attributes.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2025-01-31 12:00:00,123 INFO webhook_dsl.access: POST /session/S1/triggers/t 200 3.1ms request_id=...``:
    the format ``serve`` always wrote, with the request id and a trigger call's fields after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging.Formatter's name
        line = super().formatMessage(record)
        attributes = record.__dict__
        extra = [f"{name}={attributes[name]}" for name in _TEXT_FIELDS if attributes.get(name) is not None]
        return f"{line} {' '.join(extra)}" if extra else line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written (as logging's last resort does), so a
    replaced stderr (a test's capture, a daemon's redirection) gets the lines, never a closed stream."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(log_format: str = "text", level: str | int = "info") -> Callable[[], None]:
    """Send every log line to stderr in ``log_format`` (``text`` or ``json``) from ``level`` up, uvicorn's
    included, and turn uvicorn's own access log off (the service writes its own, without query strings).
    Returns a function that puts the loggers back as they were (for a ``serve`` run inside a test)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"the log format is text or json, not {log_format!r}")
    root = logging.getLogger()
    touched = [root, *(logging.getLogger(name) for name in (*_UVICORN, _UVICORN_ACCESS))]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in touched]
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    access = logging.getLogger(_UVICORN_ACCESS)
    access.handlers = []
    access.propagate = False  # no handler anywhere: uvicorn then writes no access line at all

    def restore() -> None:
        for logger, handlers, old_level, propagate in saved:
            logger.handlers = handlers
            logger.setLevel(old_level)
            logger.propagate = propagate

    return restore
