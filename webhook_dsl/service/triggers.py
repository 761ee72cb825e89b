"""Triggers a company uploads, kept as versions in the store, and the task that brings them to every replica.

``PUT /triggers/{name}`` compiles a trigger document as the folder's files are compiled and appends it as
the next version of the company's trigger ``name``; ``GET /triggers/{name}/versions`` lists the versions,
``POST /triggers/{name}/rollback`` appends an old version's document again, ``DELETE /triggers/{name}``
appends a deletion. History is append-only: a version never changes. The folder's triggers stay, shared as
before; a name has one source, so a name the folder has cannot be uploaded (409).

Each replica keeps the uploads in its ``TriggerCatalog`` (``runtime/catalog.py``). ``TriggerSync`` loads
them at start-up, polls ``Store.triggers_revision`` every ``poll_seconds`` and reloads when it moved; the
replica that stored a version applies it at once. Writes and reloads take one lock, so a reload never
undoes a version this replica has just applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import DiagnosticsError
from ..runtime.catalog import TriggerCatalog, compile_upload
from ..runtime.trigger import Trigger
from ..storage.base import Store, TriggerVersion, describe_json_type
from .auth import company_of
from .errors import ApiError, JSONResponse, _one_line
from .middleware import _LargeBody, expect_json
from .openapi import TRIGGER_NAME_PATTERN

__all__ = ["MAX_PROBLEMS", "TriggerSync", "routes"]

log = logging.getLogger("webhook_dsl.triggers")

#: A 422 lists at most this many problems (a document can have thousands); its message says how many more.
MAX_PROBLEMS = 100

_TRIGGER_NAME = re.compile(TRIGGER_NAME_PATTERN)


class TriggerSync:
    """Keeps one replica's catalog equal to the store's current trigger versions.

    ``start()`` loads them (before the app serves) and starts the polling task; ``stop()`` ends it.
    ``poll_seconds`` (``ServiceSettings.trigger_poll_seconds``) 0 or None: no polling, for one replica (its
    own writes are applied at once anyway)."""

    def __init__(self, store: Store, catalog: TriggerCatalog, poll_seconds: float | None) -> None:
        self.store = store
        self.catalog = catalog
        self.poll_seconds = poll_seconds
        #: The store's revision the catalog holds; None: reload at the next poll whatever it says.
        self.revision: int | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock serves one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def reload(self) -> None:
        """Read the revision, then every current version, and swap the compiled set in. The revision is read
        first: a version written after it makes the next poll reload again rather than be missed."""
        async with self.lock():
            revision = await self.store.triggers_revision()
            versions = await self.store.current_triggers()
            compiled = await asyncio.to_thread(self.catalog.compile_uploads, versions)
            self.catalog.replace_uploads(compiled)
            self.revision = revision

    async def poll(self) -> bool:
        """One look at the store's revision; reload when it moved. True when it reloaded."""
        if await self.store.triggers_revision() == self.revision:
            return False
        await self.reload()
        return True

    async def write(
        self, company_id: str, name: str, document: str | None, digest: str, trigger: Trigger | None
    ) -> TriggerVersion:
        """Append a version and apply it to this replica's catalog at once."""
        async with self.lock():
            version = await self.store.put_trigger_version(company_id, name, document, digest)
            self.catalog.apply_upload(version, trigger)
            return version

    async def start(self) -> None:
        await self.reload()
        if self.poll_seconds:
            self._task = asyncio.create_task(self._run(self.poll_seconds), name="webhook-dsl trigger poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.poll()
            except Exception as error:  # an outage or a bug: the replica keeps what it has and tries again
                if not self._failing:
                    log.warning(
                        "cannot reload the uploaded triggers (retrying every %s s): %s", seconds, _one_line(error)
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("the uploaded triggers are reloaded again")
                self._failing = False


# -- endpoints ----------------------------------------------------------------------------------


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not _TRIGGER_NAME.match(name):
        raise ApiError(400, "bad_request", "a trigger name is 1-64 letters, digits, '_' or '-'")
    return name


def _sync(request: Request) -> TriggerSync:
    sync: TriggerSync = request.app.state.trigger_sync
    return sync


def _folder_conflict(catalog: TriggerCatalog, company: str, name: str) -> None:
    if catalog.folder_trigger(company, name) is not None:
        raise ApiError(
            409,
            "trigger_conflict",
            f"trigger {name!r} comes from the service's trigger folder, and a name has one source; upload it "
            "under another name (or remove the file from the folder and restart the service)",
        )


def _invalid(error: DiagnosticsError, what: str) -> Response:
    """A 422 whose ``problems`` give each problem's line and column (as ``webhook-dsl check --format json``)."""
    shown = error.diagnostics[:MAX_PROBLEMS]
    more = len(error.diagnostics) - len(shown)
    where = "; ".join(f"{d.source}:{d.line}:{d.column}: {d.message}" for d in shown[:5])
    if len(error.diagnostics) > 5:
        where += f"; ... and {len(error.diagnostics) - 5} more"
    body: dict[str, Any] = {
        "code": "invalid_trigger",
        "message": f"{what} does not compile: {where}",
        "problems": [d.to_dict() for d in shown],
    }
    if more:
        body["problems_not_shown"] = more
    return JSONResponse({"error": body}, status_code=422, headers={"Cache-Control": "no-store"})


async def _compiled(document: str, name: str) -> Trigger:
    """``compile_upload`` off the event loop (a large document takes a while), charged to the company like
    any large body."""
    with _LargeBody(len(document)):
        return await asyncio.to_thread(compile_upload, document, name)


def _current(versions: list[TriggerVersion]) -> TriggerVersion | None:
    return versions[0] if versions and versions[0].document is not None else None


async def _append(
    request: Request, company: str, name: str, current: TriggerVersion | None, document: str, trigger: Trigger
) -> Response:
    """``document`` (compiled: ``trigger``) as the next version of ``name``, 201; or, when it is the current
    version's content already, that version, 200: the same content makes no new version."""
    if current is not None and current.digest == trigger.version:
        return JSONResponse(current.to_dict(), headers={"Cache-Control": "no-store"})
    version = await _sync(request).write(company, name, document, trigger.version, trigger)
    return JSONResponse(version.to_dict(), status_code=201, headers={"Cache-Control": "no-store"})


async def put_trigger(request: Request) -> Response:
    """Upload a trigger document as the next version of the company's trigger ``name``."""
    company = await company_of(request)
    name = _name(request)
    expect_json(request, "send the trigger document as JSON (Content-Type: application/json)")
    catalog: TriggerCatalog = request.app.state.catalog
    _folder_conflict(catalog, company, name)
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "bad_request", "send the trigger's JSON document as the body (as in the trigger folder)")
    try:
        document = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the body is not UTF-8 text; send the trigger document as UTF-8") from None
    try:
        trigger = await _compiled(document, name)
    except DiagnosticsError as error:
        return _invalid(error, "the trigger")
    if trigger.name != name:
        raise ApiError(
            400,
            "bad_request",
            f"the document's name is {trigger.name!r} but the path says {name!r}; they must be the same "
            f"(PUT /triggers/{trigger.name}, or change the document's name)",
        )
    store: Store = request.app.state.store
    current = _current(await store.trigger_versions(company, name))
    return await _append(request, company, name, current, document, trigger)


async def _versions(request: Request, company: str, name: str) -> list[TriggerVersion]:
    store: Store = request.app.state.store
    versions = await store.trigger_versions(company, name)
    if not versions:
        catalog: TriggerCatalog = request.app.state.catalog
        folder = " (it comes from the service's trigger folder, which keeps no versions)"
        raise ApiError(
            404,
            "trigger_not_found",
            f"no uploaded trigger {name!r} for this API key's company"
            + (folder if catalog.folder_trigger(company, name) is not None else f"; PUT /triggers/{name} uploads one"),
        )
    return versions


async def list_versions(request: Request) -> Response:
    company = await company_of(request)
    name = _name(request)
    versions = await _versions(request, company, name)
    return JSONResponse({"name": name, "versions": [v.to_dict() for v in versions]})


async def rollback(request: Request) -> Response:
    """Make an old version current again by appending its document as a new version."""
    company = await company_of(request)
    name = _name(request)
    expect_json(request, 'send {"version": N} as JSON (Content-Type: application/json)')
    body = await request.body()
    try:
        document = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        document = None
    number = document.get("version") if isinstance(document, dict) and set(document) == {"version"} else None
    if isinstance(number, float) and number.is_integer():  # 3.0 is the integer 3 to JSON Schema, so here too
        number = int(number)
    if type(number) is not int or number < 1:
        got = describe_json_type(number) if isinstance(document, dict) and "version" in document else "no version"
        raise ApiError(
            400, "bad_request", f'send {{"version": N}}, N a version number from GET /triggers/{name}/versions ({got})'
        )
    catalog: TriggerCatalog = request.app.state.catalog
    versions = await _versions(request, company, name)
    target = next((v for v in versions if v.version == number), None)
    if target is None:
        raise ApiError(
            404,
            "version_not_found",
            f"trigger {name!r} has no version {number} (its versions are 1 to {versions[0].version})",
        )
    if target.document is None:
        raise ApiError(
            409,
            "version_deleted",
            f"version {number} of {name!r} is its deletion; roll back to a version with a document",
        )
    _folder_conflict(catalog, company, name)
    try:
        trigger = await _compiled(target.document, name)
    except DiagnosticsError as error:
        return _invalid(error, f"version {number}")
    return await _append(request, company, name, _current(versions), target.document, trigger)


async def delete_trigger(request: Request) -> Response:
    """Stop an uploaded trigger: a deletion version is appended; a rollback can bring it back."""
    company = await company_of(request)
    name = _name(request)
    versions = await _versions(request, company, name)
    current = _current(versions)
    if current is None:
        raise ApiError(
            404,
            "trigger_not_found",
            f"uploaded trigger {name!r} is deleted already (version {versions[0].version}); "
            f"POST /triggers/{name}/rollback brings a version back",
        )
    version = await _sync(request).write(company, name, None, current.digest, None)
    return JSONResponse(version.to_dict(), headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    """The trigger management routes, for ``create_app``'s route list."""
    return [
        Route("/triggers/{name}", put_trigger, methods=["PUT"]),
        Route("/triggers/{name}", delete_trigger, methods=["DELETE"]),
        Route("/triggers/{name}/versions", list_versions, methods=["GET"]),
        Route("/triggers/{name}/rollback", rollback, methods=["POST"]),
    ]
