"""Completions of webhook calls that were sent but could not be recorded, kept on local disk until the
store takes them.

A call's record is begun in the store before its request leaves (``Store.begin_call``) and completed
after the answer (``Store.finish_call``). When the completion cannot be stored (a full disk, a database
restarting), the call still happened: its completion is appended here, flushed to disk, and replayed
into the store as soon as it accepts writes. A completion is applied at most once (the store completes
a begun record only once), so replaying twice is harmless.

The file is allocated in full when it is opened, so appending to it needs no new disk blocks: it keeps
working on the disk that just filled up, which is when it is needed. Each process has a file of its
own, locked while it runs; a file left by a process that died is replayed by the next one to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger("webhook_dsl.storage")

_MAGIC = b"WDSLJRN1"
_HEADER = struct.Struct("<8sQ")  # magic, generation
_ENTRY = struct.Struct("<IQI")  # payload length, generation, CRC-32 of the payload
#: Bytes allocated when a journal file is opened; it grows (if the disk allows) when full.
DEFAULT_JOURNAL_BYTES = 4 * 1024 * 1024


def journal_base(store: Any) -> str | None:
    """Where a store's journals go: beside a SQLite file, in the temp dir for PostgreSQL (named after the
    database), nowhere (memory only) for an in-memory database."""
    kind = getattr(store, "kind", "")
    if kind == "sqlite":
        path = str(getattr(store, "path", ""))
        if path in ("", ":memory:") or path.startswith("file:"):
            return None
        return path + ".calls"
    dsn = getattr(store, "dsn", None)
    if isinstance(dsn, str):
        name = hashlib.sha256(f"{dsn}|{getattr(store, 'schema', None)}".encode()).hexdigest()[:16]
        return str(Path(tempfile.gettempdir()) / f"webhook-dsl-{name}.calls")
    return None


class CallJournal:
    """This process's journal: ``append`` an entry (durable when it returns True), ``entries`` to replay,
    ``forget`` the first n once they are stored. Entries also live in memory, so a journal whose file could
    not be written still replays everything while the process runs."""

    def __init__(self, base: str | None, size: int = DEFAULT_JOURNAL_BYTES) -> None:
        self.base = base
        self.size = size
        self._entries: list[dict[str, Any]] = []
        self._fd: int | None = None
        self._generation = 0
        self._offset = _HEADER.size
        self.path: Path | None = None
        if base is not None:
            self.path = Path(f"{base}.{os.getpid()}.journal")
            try:
                self._open(self.path)
            except OSError as error:
                log.error(
                    "the call journal %s cannot be opened (%s): unrecorded calls are kept in memory only",
                    self.path,
                    error,
                )
                self._close()

    def _open(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = os.fstat(fd).st_size
        if current < self.size:
            os.posix_fallocate(fd, 0, self.size)
        else:
            self.size = current
        self._entries = _read(fd)  # a file with our pid left by an earlier process of the same number
        self._generation = _generation(fd) + 1
        self._write_header()
        for entry in self._entries:
            self._write_entry(entry)

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def recover_orphans(self) -> int:
        """Take in the entries of journals whose process is gone (their lock is free), then delete those
        files; return how many entries were taken."""
        if self.base is None:
            return 0
        taken = 0
        base = Path(self.base)
        for other in sorted(base.parent.glob(base.name + ".*.journal")):
            if other == self.path:
                continue
            try:
                fd = os.open(other, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # its process is alive and replays it itself
            try:
                entries = _read(fd)
                for entry in entries:
                    self.append(entry)
                taken += len(entries)
                other.unlink()
            finally:
                os.close(fd)
        return taken

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def append(self, entry: dict[str, Any]) -> bool:
        """Keep an entry; True when it is on disk (written and flushed), False when it is in memory only."""
        self._entries.append(entry)
        if self._fd is None:
            return False
        try:
            self._write_entry(entry)
            return True
        except OSError as error:
            log.error("the call journal %s cannot be written (%s): the entry is kept in memory only", self.path, error)
            return False

    def forget(self, count: int) -> None:
        """Drop the first ``count`` entries (stored now): a new generation, the rest written again."""
        self._entries = self._entries[count:]
        if self._fd is None:
            return
        try:
            self._generation += 1
            self._offset = _HEADER.size
            self._write_header()
            for entry in self._entries:
                self._write_entry(entry)
        except OSError as error:
            log.error("the call journal %s cannot be rewritten: %s", self.path, error)

    def close(self) -> None:
        """Close the file; delete it when nothing is left to replay (else the next process replays it)."""
        if self._fd is not None and not self._entries and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._close()

    def _write_header(self) -> None:
        assert self._fd is not None
        os.pwrite(self._fd, _HEADER.pack(_MAGIC, self._generation), 0)
        os.fdatasync(self._fd)

    def _write_entry(self, entry: dict[str, Any]) -> None:
        assert self._fd is not None
        payload = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        data = _ENTRY.pack(len(payload), self._generation, zlib.crc32(payload)) + payload
        end = self._offset + len(data) + _ENTRY.size  # room for the next entry's header: zeros end the journal
        if end > self.size:
            grown = max(self.size * 2, end)
            os.posix_fallocate(self._fd, 0, grown)  # ENOSPC on a full disk: the caller keeps it in memory
            self.size = grown
        os.pwrite(self._fd, data + bytes(_ENTRY.size), self._offset)
        os.fdatasync(self._fd)
        self._offset += len(data)


def _generation(fd: int) -> int:
    header = os.pread(fd, _HEADER.size, 0)
    if len(header) < _HEADER.size:
        return 0
    magic, generation = _HEADER.unpack(header)
    return int(generation) if magic == _MAGIC else 0


def _read(fd: int) -> list[dict[str, Any]]:
    """The entries of the journal's current generation, up to the first that is missing or torn."""
    generation = _generation(fd)
    if generation == 0:
        return []
    entries: list[dict[str, Any]] = []
    offset = _HEADER.size
    while True:
        head = os.pread(fd, _ENTRY.size, offset)
        if len(head) < _ENTRY.size:
            break
        length, entry_generation, crc = _ENTRY.unpack(head)
        if length == 0 or entry_generation != generation:
            break
        payload = os.pread(fd, length, offset + _ENTRY.size)
        if len(payload) < length or zlib.crc32(payload) != crc:
            break  # torn by a crash mid-write: it was never acknowledged as written
        try:
            entries.append(json.loads(payload.decode("utf-8", "surrogatepass")))
        except ValueError:
            break
        offset += _ENTRY.size + length
    return entries
