"""Which store a ``--database`` value names: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a plain
path, or ``postgresql://...``. The backend is imported only when it is the one named."""

from __future__ import annotations

import re

from .base import Store

__all__ = ["open_store", "passwords_masked", "sqlite_path"]

_PASSWORD_IN_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)


def passwords_masked(text: str) -> str:
    """``text`` (a ``--database`` value, or a message quoting one) with every URL's password, as user info
    (``user:PASSWORD@``) or as a ``password=`` parameter, shown as ***: messages end up in terminals, CI logs
    and bug reports."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1:***@", text))


def _is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_target(url: str) -> str:
    """What SQLite opens for a ``--database`` value that is not PostgreSQL's; ValueError if it is neither."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return path[1:] or ":memory:"
    if "://" in url:
        raise ValueError(f"{url!r}: the database is sqlite:///FILE or postgresql://USER@HOST/DB")
    return url


def sqlite_path(url: str) -> str | None:
    """The file a ``--database`` value names when it is SQLite, as ``open_store`` reads it; None for
    PostgreSQL and for an in-memory or ``file:`` URI database (no file of ours to look at)."""
    if _is_postgresql(url):
        return None
    target = _sqlite_target(url)
    return None if target in ("", ":memory:") or target.startswith("file:") else target


def open_store(url: str) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, a plain path, or ``postgresql://...``."""
    if _is_postgresql(url):
        try:
            from .postgres import PostgresStore
        except ImportError as error:
            raise ValueError(
                f"PostgreSQL needs the postgres extra ({error.name} is not installed): "
                "pip install 'webhook-dsl[postgres]'"
            ) from None

        return PostgresStore(url)
    from .sqlite import SQLiteStore

    return SQLiteStore(_sqlite_target(url))
