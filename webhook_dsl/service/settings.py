"""Turns ``WEBHOOK_DSL_*`` environment variables (and ``serve``'s flags, laid over them) into one
``ServiceConfig``: what ``create_app()`` with no arguments serves, and what ``serve --workers`` hands to each
worker process (``ServiceConfig.to_env``), so that a flag, a variable and a worker read the same setting.

Every value is checked here, and a wrong one is one line naming the variable (or flag) and what to write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, NoReturn

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ..runtime.catalog import TriggerCatalog, TriggerLoadError
from ..runtime.guard import NetworkSpecError, parse_network
from ..storage.base import DEFAULT_MAX_CLIENT_DATA_BYTES, Store, company_id_problem
from ..storage.database_url import open_store, passwords_masked, sqlite_path
from .errors import _one_line
from .logformat import configure_logging
from .middleware import ServiceSettings

__all__ = [
    "ENV_PREFIX",
    "STARTUP_FAILURE",
    "ServiceConfig",
    "ServiceConfigError",
    "app_inputs",
    "disk_headroom_problem",
    "env_name",
    "purge_old_logs",
]

log = logging.getLogger("webhook_dsl.service")

ENV_PREFIX = "WEBHOOK_DSL_"

#: A list setting in one environment variable: comma-separated (``127.0.0.0/8,10.0.0.0/8``) or a JSON array.
_List = Annotated[tuple[str, ...], NoDecode]


def env_name(field: str) -> str:
    """The environment variable of a ``ServiceConfig`` field: ``allow_networks`` -> ``WEBHOOK_DSL_ALLOW_NETWORKS``."""
    return ENV_PREFIX + field.upper()


class ServiceConfigError(ValueError):
    """A setting that cannot be used; str() is one line naming the variable (or flag) and what to write."""


class ServiceConfig(BaseSettings):
    """Everything the service reads at start-up, from ``WEBHOOK_DSL_<FIELD>`` (``WEBHOOK_DSL_DATABASE``...).

    Build it with ``ServiceConfig.load()``, which words a wrong value as one line. Keyword arguments win over
    the environment: ``serve`` passes the flags it was given, so a flag overrides its variable.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database: str = "webhooks.db"
    #: The folder of trigger files (or one file), as ``serve --triggers`` takes it.
    triggers: str | None = None
    allow_networks: _List = ()
    allow_hosts: _List = ()
    deny_networks: _List = ()
    deny_hosts: _List = ()
    #: The overall deadline of a webhook call, in seconds (``RuntimeSettings.deadline`` when unset).
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    max_client_data_bytes: int = Field(DEFAULT_MAX_CLIENT_DATA_BYTES, ge=2)
    max_requests_per_company: int = Field(64, ge=0)  # 0: no limit
    large_body_share: float = Field(0.1, ge=0, le=1)  # 0: no limit
    min_free_disk_mb: int = Field(64, ge=0)  # 0: no check
    key_cache_seconds: float = Field(10.0, ge=0, allow_inf_nan=False)
    anonymous_company: str | None = None
    dashboard: bool = True
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: bool = True
    #: When set, ``GET /metrics`` needs ``Authorization: Bearer <token>``.
    metrics_token: SecretStr | None = None
    #: How often a replica asks the store whether a trigger changed (0: never).
    trigger_poll_seconds: float = Field(2.0, ge=0, allow_inf_nan=False)
    #: Call log records older than this many days are purged every hour (unset: kept for ever).
    log_retention_days: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("allow_networks", "allow_hosts", "deny_networks", "deny_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"not a JSON array ({error.msg}); write a,b or a JSON array of strings") from None
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise ValueError("write a,b or a JSON array of strings")
            return tuple(items)
        return tuple(item.strip() for item in text.split(",") if item.strip())

    @field_validator("allow_networks", "deny_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                parse_network(network)
            except NetworkSpecError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        sqlite_path(value)  # ValueError: says what to write
        return value

    @field_validator("anonymous_company")
    @classmethod
    def _company(cls, value: str | None) -> str | None:
        if value is not None and (problem := company_id_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, flags: Mapping[str, str] | None = None) -> ServiceConfig:
        """The environment's settings with ``overrides`` laid over them. ``flags`` names the option each
        override came from (``{"timeout": "--timeout"}``), for the message. ``ServiceConfigError`` if a value
        is wrong: every wrong one on one line, each named as the user wrote it."""
        given = dict(overrides or {})
        try:
            return cls(**given)
        except ValidationError as error:
            raise ServiceConfigError(_describe(error, given, flags or {})) from None
        except SettingsError as error:  # a value the environment source could not read at all
            raise ServiceConfigError(f"{ENV_PREFIX}*: {_one_line(error)}") from None

    def service_settings(self) -> ServiceSettings:
        """The in-process settings of ``create_app`` (limits, dashboard, access log, metrics...)."""
        return ServiceSettings(
            max_body_bytes=self.max_body_bytes,
            key_cache_seconds=self.key_cache_seconds,
            access_log=self.access_log,
            dashboard=self.dashboard,
            anonymous_company=self.anonymous_company,
            max_client_data_bytes=self.max_client_data_bytes,
            max_requests_per_company=self.max_requests_per_company or None,
            large_body_share=self.large_body_share or None,
            metrics=self.metrics,
            metrics_token=self.metrics_token.get_secret_value() if self.metrics_token else None,
            log_retention_days=self.log_retention_days,
            trigger_poll_seconds=self.trigger_poll_seconds,
        )

    def runtime_options(self) -> dict[str, Any]:
        """What goes to ``Runtime``: the destinations webhooks may reach, and the deadline when set."""
        options: dict[str, Any] = {
            "allow_networks": list(self.allow_networks),
            "allow_hosts": list(self.allow_hosts),
            "deny_networks": list(self.deny_networks),
            "deny_hosts": list(self.deny_hosts),
        }
        if self.timeout is not None:
            options["deadline"] = self.timeout
        return options

    def to_env(self) -> dict[str, str | None]:
        """Every setting as the environment variable that gives it back (None: the variable must be unset), for
        worker processes: ``ServiceConfig.load()`` in a worker with these set equals this config."""
        variables: dict[str, str | None] = {}
        for field, value in self.model_dump(mode="json").items():
            if field == "metrics_token":
                value = self.metrics_token.get_secret_value() if self.metrics_token else None
            if value is None:
                variables[env_name(field)] = None
            elif isinstance(value, str):
                variables[env_name(field)] = value
            else:
                variables[env_name(field)] = json.dumps(value)
        return variables


def _describe(error: ValidationError, given: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    """A ValidationError as one line: ``NAME=VALUE: what is wrong`` per wrong setting, joined by "; "."""
    parts: list[str] = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = flags.get(field, field) if field in given else env_name(field)
        message = problem["msg"].removeprefix("Value error, ")
        if field == "metrics_token":
            parts.append(f"{name}: {message}")
            continue
        shown = problem.get("input")
        if isinstance(shown, str | int | float) and not isinstance(shown, bool):
            text = str(shown)
            parts.append(f"{name}={text if len(text) <= 80 else text[:77] + '...'}: {message}")
        else:
            parts.append(f"{name}: {message}")
    return passwords_masked("; ".join(parts))


_MB = 1024 * 1024


def disk_headroom_problem(database_file: str, minimum_mb: int, option: str = "--min-free-disk-mb") -> str | None:
    """Why the service must not start with this SQLite file's filesystem so full, or None. On a full disk every
    write fails; better one clear line at start-up than a service whose every write is a 503."""
    if minimum_mb <= 0:
        return None
    directory = os.path.dirname(os.path.abspath(database_file))
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)  # a folder still to be made: the filesystem it will be made on
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None  # nothing to measure (permissions, a vanished folder): opening the database says what is wrong
    if free >= minimum_mb * _MB:
        return None
    return (
        f"not started: {free // _MB} MB free on the filesystem holding {directory} (the database "
        f"{database_file}), under the minimum of {minimum_mb} MB; free some space, or set {option} "
        "lower (0 turns the check off)"
    )


#: How often the log retention purge runs, in seconds.
PURGE_INTERVAL_SECONDS = 3600.0


async def purge_old_logs(
    store: Store, days: float, interval: float = PURGE_INTERVAL_SECONDS, clock: Callable[[], float] = time.time
) -> None:
    """Delete call log records older than ``days``, now and then every ``interval`` seconds, until cancelled.
    A failed purge is logged and tried again next time: retention must never stop the service. With several
    workers each purges; a purge that finds nothing costs one indexed delete."""
    while True:
        try:
            purged = await store.purge_logs(clock() - days * 86400)
        except Exception as error:
            log.warning("log retention: the purge failed, next try in %.0f s: %s", interval, _one_line(error))
        else:
            if purged:
                log.info("log retention: %d call log record(s) older than %g days purged", purged, days)
        await asyncio.sleep(interval)


#: The exit status of a service that could not start: uvicorn's own for that case, so that its worker
#: supervisor stops instead of starting a worker again and again on a configuration that cannot work.
STARTUP_FAILURE = 3


def app_inputs(
    store: Store | None,
    catalog: TriggerCatalog | None,
    settings: ServiceSettings | None,
    config: ServiceConfig | None,
    runtime_options: Mapping[str, Any],
) -> tuple[Store, TriggerCatalog, ServiceSettings, dict[str, Any]]:
    """What ``create_app`` serves: the pieces it was given, the rest from ``config`` (by default the
    environment's). Explicit ``settings`` and ``runtime_options`` win over the config's.

    With no store or no catalog given, the app is serving on its own (``uvicorn --factory``, a worker of
    ``serve --workers``): it sets up the process's logging (``log_format``), and a setting it cannot use ends
    the process with one line and ``STARTUP_FAILURE`` rather than a traceback."""
    if config is None and store is not None and catalog is not None:
        return store, catalog, settings or ServiceSettings(), dict(runtime_options)
    on_its_own = store is None or catalog is None
    try:
        config = config or ServiceConfig.load()
    except ServiceConfigError as error:
        if not on_its_own:
            raise
        wanted = os.environ.get(env_name("log_format"), "").strip().lower()
        configure_logging("json" if wanted == "json" else "text")  # the one setting a failure line needs
        _not_started(str(error))
    if on_its_own:
        configure_logging(config.log_format, config.log_level)
    try:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # metrics of several workers (service/metrics.py)
        if on_its_own and shared is not None and config.metrics and not os.path.isdir(shared):
            raise ServiceConfigError(f"PROMETHEUS_MULTIPROC_DIR={shared}: no such folder; make an empty one first")
        if catalog is None:
            catalog = load_catalog(config, env_name("triggers"))
        if store is None:
            store = open_configured_store(config, env_name("database"), env_name("min_free_disk_mb"))
    except ServiceConfigError as error:
        if not on_its_own:
            raise
        _not_started(str(error))
    options = {**config.runtime_options(), **runtime_options}
    return store, catalog, settings or config.service_settings(), options


def load_catalog(config: ServiceConfig, option: str) -> TriggerCatalog:
    """The triggers of ``config.triggers``; ``ServiceConfigError`` with every error of every file."""
    if config.triggers is None:
        raise ServiceConfigError(f"{option} is not set: give the folder of trigger files (or one trigger file)")
    try:
        return TriggerCatalog.load(config.triggers)
    except TriggerLoadError as error:
        raise ServiceConfigError(f"{error}\nthe triggers in {config.triggers} have errors") from None


def open_configured_store(config: ServiceConfig, option: str, disk_option: str) -> Store:
    """The store ``config.database`` names, once its filesystem has room (SQLite); ``ServiceConfigError``."""
    database_file = sqlite_path(config.database)  # checked by ServiceConfig already
    if database_file is not None:
        problem = disk_headroom_problem(database_file, config.min_free_disk_mb, disk_option)
        if problem is not None:
            raise ServiceConfigError(problem.removeprefix("not started: "))
    try:
        return open_store(config.database)
    except ValueError as error:
        raise ServiceConfigError(f"{option}: {error}") from None


def _not_started(message: str) -> NoReturn:
    """End a service that cannot start: the reason logged in the configured format, and ``STARTUP_FAILURE``."""
    log.error("not started: %s", message)
    sys.stderr.flush()
    raise SystemExit(STARTUP_FAILURE)
