"""The ``webhook-dsl`` command: check, render and compile webhook configs at deploy time.

Exit status: 0 when everything is fine, 1 when an input is wrong (the errors are
printed on stderr as ``FILE:LINE:COLUMN: message``), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ._version import __version__
from .errors import ConfigError, DiagnosticsError, PlanFormatError, WebhookDslError
from .language.compiler import compile_webhook
from .language.names import MIN_SECRET_LENGTH
from .language.plan import PLAN_FORMAT, WebhookPlan, dump_plans, load_plans
from .runtime.calls import EVENT_LOOPS, run
from .runtime.masking import Masker, shown_request
from .runtime.trigger import Trigger, compile_trigger, is_trigger_document
from .storage.base import DEFAULT_MAX_CLIENT_DATA_BYTES
from .storage.database_url import passwords_masked

if TYPE_CHECKING:
    from .runtime.catalog import TriggerCatalog
    from .storage.base import Session, SessionSummary, Store

__all__ = ["main"]

T = TypeVar("T")

_DESCRIPTION = """\
Compile and try webhook configs written in the webhook-dsl template language.

A config is JSON whose strings may hold $variables ($session.id, $order_number,
$images[0], ${name}) and whose values may be a bare variable ("all": $images).
Variables are substituted longest name first and encoded for where they land:
percent-encoded in the URL, literal (but never CR/LF) in headers, JSON-escaped
in the body."""

_EPILOG = """\
examples:
  webhook-dsl check examples/webhooks/*.json
  webhook-dsl render examples/webhooks/create_ticket.json --vars examples/variables.json
  webhook-dsl render examples/webhooks/check_order.json --var order_number=A-17 --var erp_token=t0k
  webhook-dsl compile examples/webhooks/*.json -o plans.json
  webhook-dsl render plans.json --source examples/webhooks/check_order.json --vars examples/variables.json

exit status: 0 ok, 1 a config or variable is wrong (errors on stderr), 2 bad usage.
The language is specified in specs/language.md."""


class _InputError(Exception):
    """A file we cannot read or a --var we cannot use; printed as is, exit 1."""


def _read(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise _InputError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _InputError(f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


def _load_variables(args: argparse.Namespace) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for path in args.vars or ():
        text = _read(path)
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise _InputError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
        if not isinstance(loaded, dict):
            raise _InputError(f"{path}:1:1: variables must be a JSON object mapping names to values")
        variables.update(loaded)
    for item in args.var or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _InputError(f"--var {item!r}: expected NAME=VALUE")
        variables[name] = value
    for item in args.var_json or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _InputError(f"--var-json {item!r}: expected NAME=JSON")
        try:
            variables[name] = json.loads(value)
        except json.JSONDecodeError as error:
            raise _InputError(f"--var-json {name}: invalid JSON at column {error.colno}: {error.msg}") from None
    return variables


def _plans_from(path: str) -> list[WebhookPlan]:
    """A config file compiles to one plan; a file written by ``compile`` holds several."""
    text = _read(path)
    if _is_plan_file(text):
        return load_plans(text)
    if is_trigger_document(text, path):
        return [compile_trigger(text, source=path).plan]
    return [compile_webhook(text, source=path)]


def _is_plan_file(text: str) -> bool:
    """Whether a file is what ``compile`` writes: plain JSON whose ``format`` is the plan format."""
    try:
        document = json.loads(text)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("format") == PLAN_FORMAT


def _credential_warnings(trigger: Trigger) -> list[str]:
    """clientData keys named like credentials that the trigger does not declare secret: a hint, since only a
    declaration masks a value (a name is never a reason to mask)."""
    from .runtime.masking import looks_like_credential

    return [
        f'clientData key {key!r} looks like a credential; declare it in "secrets" '
        f"(or use a company secret, $secrets.{key}) so it is masked in logs and LLM messages"
        for key in trigger.client_data_keys
        if looks_like_credential(key) and key not in trigger.secret_names
    ]


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    failed = 0
    report: list[dict[str, object]] = []
    warned: list[dict[str, object]] = []
    for path in args.files:
        try:
            text = _read(path)
            if is_trigger_document(text, path):
                trigger = compile_trigger(text, source=path)
                undefined = trigger.undefined_references()
                if undefined:
                    raise ConfigError(undefined)
                for warning in _credential_warnings(trigger):  # printed, never a failure
                    print(f"{path}: warning: {warning}", file=err)
                    warned.append({"source": path, "message": warning})
                plan = trigger.plan
            else:
                plan = compile_webhook(text, source=path)
        except DiagnosticsError as error:
            failed += 1
            if args.format == "json":
                report.extend(d.to_dict() for d in error.diagnostics)
            else:
                print(error, file=err)
        except _InputError as error:
            failed += 1
            if args.format == "json":
                report.append({"source": path, "line": 0, "column": 0, "message": str(error)})
            else:
                print(error, file=err)
        else:
            if args.format == "text" and not args.quiet:
                refs = " ".join(plan.references) or "no variables"
                print(f"{path}: ok ({plan.method}; {refs})", file=out)
    if args.format == "json":
        print(json.dumps({"ok": failed == 0, "errors": report, "warnings": warned}, indent=2), file=out)
    elif failed and len(args.files) > 1:
        print(f"{failed} of {len(args.files)} file(s) have errors", file=err)
    return 1 if failed else 0


def _render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One JSON object per rendered request, each on its own line whatever the number of files (JSON Lines),
    so that a script reads 1 and N alike; ``--pretty`` indents them for a reader."""
    variables = _load_variables(args)
    failed = 0
    indent, separators = (2, None) if args.pretty else (None, (",", ":"))
    for path in args.files:
        try:
            plans = _plans_from(path)
            if args.source is not None:
                plans = [p for p in plans if p.source == args.source]
                if not plans:
                    raise _InputError(f"{path}: no plan compiled from {args.source!r}")
            for plan in plans:
                rendered = plan.render(variables, lenient=args.lenient)
                if args.show_secrets:
                    request = rendered.to_dict()
                else:
                    masker = Masker.for_call(variables, plan.secrets)
                    request = shown_request(rendered, masker, plan, variables, plan.secrets)
                shown = {"source": plan.source, **request}
                print(json.dumps(shown, ensure_ascii=False, indent=indent, separators=separators), file=out)
        except (WebhookDslError, _InputError) as error:
            failed += 1
            print(error, file=err)
    return 1 if failed else 0


def _compile(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    plans = []
    failed = 0
    for path in args.files:
        try:
            plans.append(compile_webhook(_read(path), source=path))
        except (DiagnosticsError, _InputError) as error:
            failed += 1
            print(error, file=err)
    if failed:
        print(f"nothing written: {failed} of {len(args.files)} file(s) have errors", file=err)
        return 1
    text = dump_plans(plans)
    if args.output == "-":
        out.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(plans)} plan(s) to {args.output}", file=err)
    return 0


def _database(args: argparse.Namespace) -> str:
    """The ``--database`` value (absent when a command was given none), else $WEBHOOK_DSL_DATABASE, else
    webhooks.db."""
    return str(getattr(args, "database", None) or os.environ.get("WEBHOOK_DSL_DATABASE") or "webhooks.db")


#: What every command that touches storage says of ``--database``.
_DATABASE_HELP = (
    "where sessions, logs, keys and secrets are kept: a SQLite FILE, sqlite:///FILE, sqlite:////ABSOLUTE/FILE "
    "or postgresql://USER:PASSWORD@HOST/DB (default: $WEBHOOK_DSL_DATABASE, else webhooks.db)"
)


def _no_session(args: argparse.Namespace, session_id: str, note: str = "", *, to_use: bool) -> _InputError:
    """The error for a session that is not there; ``to_use``: the command needs it, so say how to make it."""
    company = getattr(args, "company_id", None)
    of = f" of company {company!r}" if company else ""
    message = f"no session {session_id!r}{of} in {passwords_masked(_database(args))}{note}"
    if to_use:
        put = f"webhook-dsl session put {session_id}" + (f" --company-id {company}" if company else "")
        message += f"; create it with '{put} ...'"
    return _InputError(message)


def _with_store(
    args: argparse.Namespace,
    work: Callable[[Store], Awaitable[T]],
    *,
    existing: bool = False,
    session_id: str | None = None,
    to_use: bool = True,
) -> T:
    """Open the store ``--database`` names (``_database``: SQLite, as a path or URL, or PostgreSQL), run ``work``
    on it on an event loop, and close it. Every command that touches storage comes through here (serve opens
    its own, for the service's lifetime), so all take the same values and fail alike: one line and exit status
    1, never a traceback, the URL's password masked.

    ``existing``: a SQLite file that does not exist is an error instead of a new empty database (a command that
    reads would answer "nothing" for a misspelt path). ``session_id``: the session ``work`` needs; when it is
    not there the error says so, and how to create it when the command is ``to_use`` it. A session id of
    several companies is the store's ``AmbiguousSession``, which lists them."""
    import sqlite3

    from .storage.base import AmbiguousSession, SessionNotFound, StoreUnavailable
    from .storage.database_url import open_store, sqlite_path

    url = _database(args)
    shown = passwords_masked(url)
    try:
        path = sqlite_path(url)
        if existing and path is not None and not Path(path).is_file():
            if session_id is not None:
                raise _no_session(args, session_id, " (no such file)", to_use=to_use)
            raise _InputError(f"--database {shown}: no such file (a command that only reads never creates one)")
        store = open_store(url)
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None
    except sqlite3.Error as error:
        raise _InputError(f"--database {shown}: {error}") from None

    async def run_and_close() -> T:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return run(run_and_close())
    except AmbiguousSession as error:
        raise _InputError(str(error)) from None
    except SessionNotFound:
        if session_id is None:
            raise
        raise _no_session(args, session_id, to_use=to_use) from None
    except StoreUnavailable as error:
        raise _InputError(_unavailable(shown, error)) from None
    except Exception as error:
        if not isinstance(error, sqlite3.Error) and not type(error).__module__.startswith("asyncpg"):
            raise
        raise _InputError(f"the database {shown} refused: {error}") from None


def _unavailable(shown: str, error: Exception) -> str:
    """One line for a database that cannot be reached or used now (PostgreSQL down, a read-only file...)."""
    cause = error.__cause__
    if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
        return f"cannot reach the database {shown}: connection refused"
    if isinstance(cause, TimeoutError):
        return f"cannot reach the database {shown}: no answer in time"
    if isinstance(cause, OSError):
        return f"cannot reach the database {shown}: {cause.strerror or cause}"
    return f"cannot use the database {shown} now: {error}"


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise _InputError(f"{what}: invalid JSON at column {error.colno}: {error.msg}") from None
    if not isinstance(value, dict):
        raise _InputError(f"{what}: expected a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _session_put(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage.base import ClientDataTooLarge, client_data_problems

    _check_session_id(args.session_id)
    if args.company_id is not None:
        _check_company(args.company_id)
    client_data = None
    if args.client_data:
        try:  # read as the service reads a body: NaN and Infinity are not JSON
            client_data = json.loads(args.client_data, parse_constant=_reject_constant)
        except RecursionError:
            raise _InputError("--client-data: nested too deeply") from None
        except ValueError as error:
            raise _InputError(f"--client-data: not valid JSON ({error})") from None
        problems = client_data_problems(client_data)
        if problems:
            raise _InputError("--client-data: " + "; ".join(problems))
    catalog = _session_triggers(args)

    async def work(store: Store) -> tuple[Session, dict[str, str]]:
        store.max_client_data_bytes = args.max_client_data_bytes
        try:
            session = await store.put_session(
                args.session_id, company_id=args.company_id, assistant_id=args.assistant_id, client_data=client_data
            )
        except ClientDataTooLarge as error:
            raise _InputError(
                f"--client-data: the session's client_data would be {error.size} bytes of compact JSON, over the "
                f"limit of {error.limit} bytes (--max-client-data-bytes); nothing was stored"
            ) from None
        return session, await store.company_secrets(session.company_id)

    session, secrets = _with_store(args, work)
    print(json.dumps(_masked_session(session, catalog, secrets), ensure_ascii=False, indent=2), file=out)
    return 0


def _check_session_id(session_id: str) -> None:
    from .storage.base import session_id_problem

    problem = session_id_problem(session_id)
    if problem is not None:
        raise _InputError(f"session id {session_id!r}: {problem}")


def _session_triggers(args: argparse.Namespace) -> TriggerCatalog | None:
    """The triggers whose declared secrets a session view masks (``--triggers``, else $WEBHOOK_DSL_TRIGGERS)."""
    from .runtime.catalog import TriggerCatalog, TriggerLoadError

    path = args.triggers or os.environ.get("WEBHOOK_DSL_TRIGGERS")
    if not path:
        return None
    try:
        return TriggerCatalog.load(path)
    except TriggerLoadError as error:
        raise _InputError(f"{error}\n--triggers {path}: fix these errors first") from None


def _masked_session(
    session: Session, catalog: TriggerCatalog | None, company_secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The session as the service shows it (``masked_session``); with no triggers, as stored apart from the
    company's secrets (the rest are values the operator typed)."""
    from .runtime.masking import masked_session

    names = catalog.secret_names(session.company_id) if catalog is not None else ()
    return masked_session(session, names, company_secrets.values() if company_secrets else ())


def _session_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _check_session_id(args.session_id)
    if args.company_id is not None:
        _check_company(args.company_id)
    catalog = _session_triggers(args)

    async def work(store: Store) -> tuple[Session, dict[str, str]]:
        session = await store.get_session(args.session_id, company_id=args.company_id)
        return session, await store.company_secrets(session.company_id)

    session, secrets = _with_store(args, work, existing=True, session_id=args.session_id, to_use=False)
    print(json.dumps(_masked_session(session, catalog, secrets), ensure_ascii=False, indent=2), file=out)
    return 0


def _session_delete(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Delete a session and its log records (the store does both in one transaction)."""
    _check_session_id(args.session_id)
    if args.company_id is not None:
        _check_company(args.company_id)

    async def work(store: Store) -> tuple[str, int]:
        company = args.company_id
        if company is None:  # the one company with this id; AmbiguousSession lists them when there are several
            company = (await store.get_session(args.session_id)).company_id
        return company, await store.delete_session(args.session_id, company_id=company)

    company, removed = _with_store(args, work, existing=True, session_id=args.session_id, to_use=False)
    of = f" of company {company!r}" if company else ""
    print(f"deleted session {args.session_id!r}{of} and its {removed} log record(s)", file=err)
    return 0


def _session_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _check_company(args.company_id)

    async def work(store: Store) -> list[SessionSummary]:
        return await store.list_sessions(args.company_id, args.limit)

    sessions = _with_store(args, work, existing=True)
    if args.format == "json":
        print(json.dumps([s.to_dict() for s in sessions], ensure_ascii=False, indent=2), file=out)
        return 0
    for summary in sessions:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(summary.updated_at))
        assistant = summary.assistant_id or "-"
        print(f"{summary.id}  {assistant}  {summary.calls} call(s)  updated {updated}Z", file=out)
    if not sessions:
        print(f"no sessions for company {args.company_id!r}", file=err)
    return 0


def _call(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .runtime.calls import Runtime, TriggerResult

    text = _read(args.trigger)
    try:
        trigger = compile_trigger(text, source=args.trigger)
    except DiagnosticsError as error:
        print(error, file=err)
        return 1
    _check_session_id(args.session)
    if args.company_id is not None:
        _check_company(args.company_id)
    arguments = _typed_arguments(trigger, args.arg or ())
    if args.args_json:
        arguments.update(_json_object(args.args_json, "--args-json"))
    options = _outbound_options(args)
    if args.follow_redirects:
        options["follow_redirects"] = True

    async def work(store: Store) -> TriggerResult:
        async with Runtime(store, **options) as runtime:
            return await runtime.call_trigger(
                trigger, args.session, arguments, args.image or (), dry_run=args.dry_run, company_id=args.company_id
            )

    result = _with_store(args, work, existing=True, session_id=args.session)
    printed = result.to_dict()
    if args.show_secrets and result.dry_run is not None and result.call.request is not None:
        printed["dry_run"]["request"] = result.call.request.to_dict()
    print(json.dumps(printed, ensure_ascii=False, indent=2), file=out)
    if result.call.ok:
        return 0
    print(f"call failed ({printed['category']}): {printed['error']}", file=err)  # masked, as in the JSON
    return 1


#: The value of an --arg that is none of the declared types.
_NOT_CONVERTED: Any = object()
#: A value of each JSON Schema type, for the message that says how to write one.
_TYPE_EXAMPLES = {
    "integer": "3",
    "number": "2.5",
    "boolean": "true",
    "null": "null",
    "array": '["a", "b"]',
    "object": '{"key": "value"}',
}


def _typed_arguments(trigger: Trigger, items: Sequence[str]) -> dict[str, Any]:
    """``--arg NAME=VALUE`` pairs, each value read as the trigger's parameters schema declares NAME: ``qty=3``
    is the number 3 when qty is an ``integer``, ``tags=["a"]`` a list when tags is an ``array``. A value stays
    the string typed where the property is (or may be) a string, or declares no type."""
    properties = trigger.parameters.get("properties")
    arguments: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _InputError(f"--arg {item!r}: expected NAME=VALUE")
        schema = properties.get(name) if isinstance(properties, Mapping) else None
        types = _declared_types(schema)
        if not types or "string" in types:
            arguments[name] = value
            continue
        converted = _converted(value, types)
        if converted is _NOT_CONVERTED:
            wanted = " or ".join(sorted(types))
            example = _TYPE_EXAMPLES.get(min(types), "...")
            as_json = json.dumps({name: json.loads(example)})
            raise _InputError(
                f"--arg {name}={value}: the trigger declares {name} as {wanted}, and {value!r} is not one; write "
                f"--arg {name}={example.replace(' ', '')}, or give the arguments as JSON: --args-json '{as_json}'"
            )
        arguments[name] = converted
    return arguments


def _declared_types(schema: Any) -> set[str]:
    """The JSON types a property schema allows, from its ``type`` (or the values of its ``enum``/``const``)."""
    if not isinstance(schema, Mapping):
        return set()
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    values = schema["enum"] if isinstance(schema.get("enum"), list) else [schema["const"]] if "const" in schema else []
    return {_json_type(value) for value in values}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _converted(text: str, types: set[str]) -> Any:
    """``text`` read as JSON when that gives one of ``types`` (an integral number is an ``integer``, as JSON
    Schema counts 3.0; any number is a ``number``); ``_NOT_CONVERTED`` otherwise."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _NOT_CONVERTED
    kind = _json_type(value)
    if kind in types:
        return value
    if kind == "integer" and "number" in types:
        return value
    if kind == "number" and "integer" in types and float(value).is_integer():
        return value
    return _NOT_CONVERTED


def _logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage.base import AmbiguousSession, SessionNotFound

    _check_session_id(args.session_id)
    company = getattr(args, "company_id", None)
    if company is not None:
        _check_company(company)
    limit = getattr(args, "limit", 100)

    async def work(store: Store) -> list[dict[str, Any]]:
        owner = company
        if owner is None:  # one company's records only: the session's, or an error listing its companies
            try:
                owner = (await store.get_session(args.session_id)).company_id
            except AmbiguousSession:
                raise
            except SessionNotFound:
                owner = None  # no such session (any more): whatever records carry its id
        return await store.logs(args.session_id, limit, company_id=owner)

    records = _with_store(args, work, existing=True)
    if getattr(args, "format", "text") == "json":
        print(json.dumps(records, ensure_ascii=False, indent=2), file=out)
        return 0
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["at"]))
        status = record["status"] if record["status"] is not None else record["category"]
        outcome = "ok" if record["ok"] else f"{record['category']}: {record['error']}"
        print(
            f"#{record['seq']} {when}Z {record['trigger']} {record['method']} {record['url']} -> {status} "
            f"({record['elapsed_ms']:.1f} ms, {record['attempts']} attempt(s)) {outcome}",
            file=out,
        )
    if not records:
        print(f"no calls logged for session {args.session_id!r}", file=err)
    return 0


def _logs_purge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Delete log records older than ``--older-than``, of one company or of all."""
    company = getattr(args, "company_id", None)
    if company is not None:
        _check_company(company)
    before = time.time() - args.older_than

    async def work(store: Store) -> int:
        return await store.purge_logs(before, company_id=company)

    removed = _with_store(args, work, existing=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(before))
    of = f" of company {company!r}" if company else ""
    print(f"purged {removed} log record(s){of} written before {when}Z", file=err)
    return 0


def _tools(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .runtime.tools import tool_definitions

    if args.strict and args.style == "anthropic":
        print("--strict makes OpenAI strict schemas: use it with --style openai or openai-responses", file=err)
        return 2
    triggers = []
    failed = 0
    for path in args.files:
        try:
            triggers.append(compile_trigger(_read(path), source=path))
        except DiagnosticsError as error:
            failed += 1
            print(error, file=err)
    try:  # every file's problems in one pass: those that compiled are checked for --strict too
        tools = tool_definitions(triggers, args.style, strict=args.strict)
    except DiagnosticsError as error:
        failed += 1
        print(error, file=err)
    if failed:
        return 1
    print(json.dumps(tools, ensure_ascii=False, indent=2), file=out)
    return 0


def _tool_calls(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a model's tool calls (OpenAI chat, Responses or Anthropic items, as JSON) on a session."""
    from .runtime.calls import Runtime
    from .runtime.catalog import TriggerCatalog, TriggerLoadError
    from .runtime.dispatch import ToolCallFormatError, ToolReply, run_tool_calls

    _check_session_id(args.session)
    if args.company_id is not None:
        _check_company(args.company_id)
    text = sys.stdin.read() if args.calls == "-" else _read(args.calls)
    try:
        calls = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise _InputError(f"{args.calls}: invalid JSON at {where}: {error.msg}") from None
    if isinstance(calls, dict):
        calls = calls.get("calls", calls.get("tool_calls", calls.get("output", calls.get("content", [calls]))))
    if not isinstance(calls, list):
        raise _InputError(f"{args.calls}: give a JSON list of tool calls (or an object holding one under 'calls')")
    try:
        catalog = TriggerCatalog.load(args.triggers)
    except TriggerLoadError as error:
        raise _InputError(f"{error}\n--triggers {args.triggers}: fix these errors first") from None
    options = _outbound_options(args)

    async def work(store: Store) -> list[ToolReply]:
        async with Runtime(store, **options) as runtime:
            return await run_tool_calls(runtime, catalog, args.session, calls, company_id=args.company_id)

    try:
        replies = _with_store(args, work, existing=True, session_id=args.session)
    except ToolCallFormatError as error:
        raise _InputError(f"{args.calls}: {error}") from None
    print(json.dumps(replies, ensure_ascii=False, indent=2), file=out)
    return 0


def _stand_in(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .demo import serve

    server = serve(args.host, args.port)
    print(f"stand-in API for the examples on http://{args.host}:{server.server_address[1]} (Ctrl-C stops)", file=err)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check everything a start needs (settings, triggers, the disk), then serve: in this process, or in
    ``--workers`` processes that each build the app from the same settings, handed over as WEBHOOK_DSL_*."""
    import logging

    try:
        import uvicorn

        from .service import create_app
        from .service.logformat import configure_logging
        from .service.settings import ServiceConfig, ServiceConfigError, disk_headroom_problem
    except ImportError as error:
        raise _InputError(
            f"webhook-dsl serve needs the service extra ({error.name} is not installed): "
            "pip install 'webhook-dsl[service]'"
        ) from None
    from .runtime.catalog import TriggerCatalog, TriggerLoadError
    from .storage.database_url import open_store, sqlite_path

    given = {field: getattr(args, dest) for dest, (field, _) in _SERVE_FLAGS.items() if getattr(args, dest) is not None}
    try:
        config = ServiceConfig.load(given, {field: flag for field, flag in _SERVE_FLAGS.values()})
    except ServiceConfigError as error:
        raise _InputError(str(error)) from None
    if config.triggers is None:
        raise _InputError("--triggers: give the folder of trigger files (or one file), or set $WEBHOOK_DSL_TRIGGERS")
    try:
        catalog = TriggerCatalog.load(config.triggers)
    except TriggerLoadError as error:
        print(error, file=err)
        print(f"not started: the triggers in {config.triggers} have errors", file=err)
        return 1
    database_file = sqlite_path(config.database)  # checked by ServiceConfig
    if database_file is not None and (problem := disk_headroom_problem(database_file, config.min_free_disk_mb)):
        print(problem, file=err)
        return 2
    if config.anonymous_company is not None and not _is_loopback_address(args.host):
        raise _InputError(
            f"--anonymous-company serves requests that carry no key, so it listens on loopback only "
            f"(--host 127.0.0.1, ::1 or localhost), not on {args.host}"
        )
    try:
        store = open_store(config.database)
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None
    restore_logging = configure_logging(config.log_format, config.log_level)
    log = logging.getLogger("webhook_dsl.service")
    try:
        if config.anonymous_company is not None:
            log.warning(
                "requests without an API key act as company %r (--anonymous-company); do not expose this port",
                config.anonymous_company,
            )
        shared = len(catalog.shared)
        own = ", ".join(f"{c}: {len(t)}" for c, t in sorted(catalog.companies.items())) or "none"
        log.info(
            "webhook-dsl service: %d shared trigger(s), per company: %s; database %s; http://%s:%d/ (dashboard at "
            "/dashboard/, metrics at /metrics)%s",
            shared,
            own,
            getattr(store, "kind", "sqlite"),
            args.host,
            args.port,
            f"; {args.workers} worker processes" if args.workers > 1 else "",
        )
        server_options: dict[str, Any] = {
            "host": args.host,
            "port": args.port,
            "log_config": None,  # configure_logging has set up every logger, uvicorn's too, in --log-format
            "log_level": config.log_level,
            "access_log": False,  # ours leaves out query strings (a dashboard ?key= must not reach a log)
            "proxy_headers": args.proxy_headers,
            "server_header": False,
            "loop": args.loop,
        }
        if args.workers > 1:
            return _serve_workers(uvicorn, config, store, args.workers, server_options, err)
        if not _database_answers(open_store(config.database), err):  # a store of its own: this one stays unopened
            return 1
        app = create_app(store, catalog, config=config)
        server = uvicorn.Server(uvicorn.Config(app, **server_options))
        server.run()
        return 0 if server.started else 1
    finally:
        restore_logging()


#: serve's options that are service settings: argparse dest -> (ServiceConfig field, the flag, for messages).
#: Each is None unless given, so that its WEBHOOK_DSL_* variable applies otherwise.
_SERVE_FLAGS = {
    "database": ("database", "--database"),
    "triggers": ("triggers", "--triggers"),
    "allow_network": ("allow_networks", "--allow-network"),
    "allow_host": ("allow_hosts", "--allow-host"),
    "timeout": ("timeout", "--timeout"),
    "max_body_bytes": ("max_body_bytes", "--max-body-bytes"),
    "max_client_data_bytes": ("max_client_data_bytes", "--max-client-data-bytes"),
    "max_requests_per_company": ("max_requests_per_company", "--max-requests-per-company"),
    "large_body_share": ("large_body_share", "--large-body-share"),
    "min_free_disk_mb": ("min_free_disk_mb", "--min-free-disk-mb"),
    "anonymous_company": ("anonymous_company", "--anonymous-company"),
    "dashboard": ("dashboard", "--no-dashboard"),
    "access_log": ("access_log", "--no-access-log"),
    "metrics": ("metrics", "--no-metrics"),
    "log_format": ("log_format", "--log-format"),
    "log_level": ("log_level", "--log-level"),
    "log_retention_days": ("log_retention_days", "--log-retention-days"),
}


def _serve_workers(
    uvicorn: Any, config: Any, store: Store, workers: int, server_options: dict[str, Any], err: TextIO
) -> int:
    """``serve --workers N``: the database checked once here (one line if it cannot be reached, and its schema
    brought up to date by one process, not N at once), then N uvicorn workers, each calling
    ``create_app()`` with this config as WEBHOOK_DSL_* variables and sharing a fresh metrics folder."""
    import tempfile

    from uvicorn.supervisors import Multiprocess

    from .service.metrics import MULTIPROC_ENV
    from .service.settings import STARTUP_FAILURE

    if not _database_answers(store, err):
        return 1
    directory = tempfile.mkdtemp(prefix="webhook-dsl-metrics-")
    variables = {**config.to_env(), MULTIPROC_ENV: directory}
    saved = {name: os.environ.get(name) for name in variables}
    _set_environment(variables)
    try:
        server_config = uvicorn.Config(
            "webhook_dsl.service:create_app", factory=True, workers=workers, **server_options
        )
        supervisor = Multiprocess(server_config, sockets=[server_config.bind_socket()])
        supervisor.run()
        return 1 if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0
    finally:
        _set_environment(saved)
        shutil.rmtree(directory, ignore_errors=True)


def _database_answers(store: Store, err: TextIO) -> bool:
    """Ping ``store`` (which brings its schema up to date) and close it; False, with one line on ``err``, when
    the database cannot be used: unreachable, refused, a schema newer than this code. A start that fails for
    these reasons is expected, and says so without a traceback."""

    async def check() -> None:
        try:
            await store.ping()
        finally:
            await store.close()

    try:
        run(check())
    except Exception as error:  # unreachable, refused, wrong password: whatever it is, said in one line
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"not started: the database cannot be used: {reason}", file=err)
        return False
    return True


def _set_environment(variables: Mapping[str, str | None]) -> None:
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _mcp(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Serve triggers as MCP tools over stdio. stdout carries the protocol only: everything else goes to stderr."""
    import logging

    try:
        from .mcp_server import serve_stdio
    except ImportError as error:
        raise _InputError(
            f"webhook-dsl mcp needs the mcp extra ({error.name} is not installed): pip install 'webhook-dsl[mcp]'"
        ) from None
    from .runtime.catalog import _compile_all

    _check_session_id(args.session)
    if args.company_id is not None:
        _check_company(args.company_id)
    paths: list[Path] = []
    for name in args.files:
        path = Path(name)
        paths.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    problems: list[str] = []
    triggers = _compile_all(paths, problems)
    if problems or not triggers:
        print("\n".join(problems) or f"no trigger files in {' '.join(args.files)}", file=err)
        print("not started: the triggers have errors" if problems else "not started: no tools to serve", file=err)
        return 1
    logging.basicConfig(
        level=args.log_level.upper(), stream=err, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = _outbound_options(args)

    async def serve(store: Store) -> None:
        await serve_stdio(triggers, args.session, store, company_id=args.company_id, **options)

    try:
        _with_store(args, serve, existing=True, session_id=args.session)
    except KeyboardInterrupt:
        return 130
    return 0


def _is_loopback_address(host: str) -> bool:
    """Whether ``serve --host`` listens on this machine only."""
    import ipaddress

    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_company(company_id: str) -> None:
    from .storage.base import company_id_problem

    if (problem := company_id_problem(company_id)) is not None:
        raise _InputError(f"--company-id {company_id!r}: {problem}")


def _keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage.base import API_KEY_PREFIX, hash_api_key, new_api_key

    _check_company(args.company_id)

    async def work(store: Store) -> int:
        if args.keys_command == "create":
            key = new_api_key()
            await store.add_api_key(args.company_id, hash_api_key(key), key[: len(API_KEY_PREFIX) + 6], args.label)
            print(key, file=out)
            print(f"API key for company {args.company_id!r} (shown once; only its SHA-256 is stored)", file=err)
        elif args.keys_command == "list":
            keys = await store.api_keys(args.company_id)
            for item in keys:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item.created_at))
                print(f"{item.prefix}…  {when}Z  {item.label}", file=out)
            if not keys:
                print(f"no keys for company {args.company_id!r}", file=err)
        else:
            removed = await store.revoke_api_key(args.company_id, args.prefix)
            print(f"revoked {removed} key(s)", file=err)
            return 0 if removed else 1
        return 0

    return _with_store(args, work, existing=args.keys_command != "create")


def _secret_value(name: str) -> str:
    """The value of a secret, from standard input: a prompt that does not echo on a terminal, else what is piped
    in, less one trailing newline. Never from the command line, where shell history and ``ps`` keep it."""
    import getpass

    stdin = sys.stdin
    if stdin is None:
        raise _InputError(f"no standard input to read the value of {name} from; pipe it in (see --help)")
    if stdin.isatty():
        value = getpass.getpass(f"value of secret {name} (not shown): ")
    else:
        try:
            value = stdin.read()
        except UnicodeDecodeError:
            raise _InputError("the secret on standard input is not UTF-8 text") from None
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    return value


def _secrets(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage.base import secret_problem

    _check_company(args.company_id)
    value = ""
    if args.secrets_command in ("set", "delete"):
        if getattr(args, "value_on_command_line", None) is not None:
            raise _InputError(
                "the value is read from standard input, never from the command line (shell history and ps would "
                f"keep it): printf '%s' \"$VALUE\" | webhook-dsl secrets set {args.name} --company-id {args.company_id}"
            )
        problem = secret_problem(args.name)
        if problem is not None:
            raise _InputError(f"secret name {args.name!r}: {problem}")
    if args.secrets_command == "set":
        value = _secret_value(args.name)
        problem = secret_problem(args.name, value)
        if problem is not None:
            raise _InputError(f"secret {args.name}: {problem}")

    async def work(store: Store) -> int:
        if args.secrets_command == "set":
            await store.set_secret(args.company_id, args.name, value)
            print(
                f"secret {args.name} set for company {args.company_id!r}; triggers read it as $secrets.{args.name}",
                file=err,
            )
        elif args.secrets_command == "list":
            listed = await store.secret_names(args.company_id)
            for info in listed:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.updated_at))
                print(f"{info.name}  {when}Z", file=out)
            if not listed:
                print(f"no secrets for company {args.company_id!r}", file=err)
        elif await store.delete_secret(args.company_id, args.name):
            print(f"deleted secret {args.name} of company {args.company_id!r}", file=err)
        else:
            print(f"no secret {args.name} for company {args.company_id!r}", file=err)
            return 1
        return 0

    return _with_store(args, work, existing=args.secrets_command != "set")


def _checked(
    parse: Callable[[str], Any], what: str, accept: Callable[[Any], bool], refusal: str
) -> Callable[[str], Any]:
    """An argparse type: ``parse`` the text (else "is not WHAT"), then ``accept`` the value (else ``refusal``,
    with ``{text}`` standing for what was typed). argparse prints either as one line and exits with 2."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(refusal.format(text=text))
        return value

    return convert


#: A fraction from 0 to 1.
_share = _checked(
    float,
    "a number; give a fraction such as 0.1",
    lambda v: 0 <= v <= 1,
    "{text} is not a fraction from 0 to 1 (0.1 is a tenth)",
)
#: A count where 0 means no limit.
_non_negative = _checked(int, "a whole number", lambda v: v >= 0, "{text} is negative; write 0 for no limit")
#: A TCP port: 1-65535, or 0 for any free one (the server prints which).
_port = _checked(
    int,
    "a port number",
    lambda v: 0 <= v <= 65535,
    "{text} is not a port: give a number from 1 to 65535 (0: any free one)",
)
#: A deadline: a finite number of seconds above zero.
_seconds = _checked(
    float, "a number of seconds", lambda v: 0 < v < float("inf"), "{text} seconds: a deadline must be more than 0"
)


#: At least 1.
_positive = _checked(int, "a whole number", lambda v: v > 0, "{text}: give 1 or more")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _seconds_of(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` in seconds; ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(text)
    return float(match[1]) * _DURATION_UNITS[match[2]]


#: How old is old: a number and a unit.
_duration = _checked(
    _seconds_of,
    "a duration: write a number and a unit (s, m, h, d or w), such as 90s, 15m, 12h, 30d or 2w",
    lambda v: 0 < v < float("inf"),
    "{text}: a duration must be more than 0, such as 30d",
)


def _add_logs_show_options(command: argparse.ArgumentParser, company_help: str) -> None:
    """The options of 'logs show', also taken by 'logs' itself before the session id ('logs --format json S1').
    Their defaults are left out of the namespace (SUPPRESS) so that the subcommand's parse does not overwrite
    what was given before it; ``_logs`` applies them."""
    command.add_argument("--company-id", default=argparse.SUPPRESS, help=company_help)
    command.add_argument(
        "--limit", type=_positive, default=argparse.SUPPRESS, metavar="N", help="most recent N calls (default 100)"
    )
    command.add_argument(
        "--format", choices=("text", "json"), default=argparse.SUPPRESS, help="output format (default text)"
    )
    command.add_argument("--database", metavar="URL", default=argparse.SUPPRESS, help=_DATABASE_HELP)


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsers = argparse._SubParsersAction


class _AnyWord(Mapping[str, argparse.ArgumentParser]):
    """A view of the subcommands as argparse's choices that lets it pass any first word to the action, which
    routes it."""

    def __init__(self, parsers: dict[str, argparse.ArgumentParser]) -> None:
        self._parsers = parsers

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        return self._parsers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsers)

    def __len__(self) -> int:
        return len(self._parsers)

    def __contains__(self, key: object) -> bool:
        return True


class _ShowByDefault(_SubParsers):
    """Subcommands whose first word, when it names none of them, is the first argument of 'show':
    'webhook-dsl logs S1' is 'webhook-dsl logs show S1', and 'webhook-dsl logs purge ...' the purge. argparse
    checks a subcommand against its choices before calling the action, so the choices take any word
    (``_AnyWord``) and the word is routed here; a session named like a subcommand is 'logs show NAME'."""

    default_command = "show"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyWord(self._name_parser_map)  # type: ignore[assignment]  # typeshed: a dict; argparse reads it as a Mapping

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        words = list(values or ())
        if words and words[0] not in self._name_parser_map:
            words.insert(0, self.default_command)
        super().__call__(parser, namespace, words, option_string)


def _add_outbound_options(command: argparse.ArgumentParser, timeout_help: str) -> None:
    """The options of every command that calls webhooks: which non-public destinations it may reach, and the
    deadline of a call."""
    command.add_argument(
        "--allow-network",
        action="append",
        type=_network,
        metavar="CIDR",
        help="let webhooks reach a non-public network, e.g. 127.0.0.0/8 for a local stand-in; repeatable "
        "(default: none)",
    )
    command.add_argument("--allow-host", action="append", metavar="HOST", help="allow a host name; repeatable")
    command.add_argument("--timeout", type=_seconds, metavar="SECONDS", help=timeout_help)


def _outbound_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Runtime`` options from the options ``_add_outbound_options`` adds."""
    options: dict[str, Any] = {"allow_networks": args.allow_network or (), "allow_hosts": args.allow_host or ()}
    if args.timeout is not None:
        options["deadline"] = args.timeout
    return options


def _network(text: str) -> str:
    """An --allow-network value, checked strictly here so that a typo is one line, not a traceback."""
    from .runtime.guard import NetworkSpecError, parse_network

    try:
        parse_network(text)
    except NetworkSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webhook-dsl",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"webhook-dsl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate configs; print every error as FILE:LINE:COLUMN",
        description="Validate webhook configs. Every error in every file is printed, "
        "as FILE:LINE:COLUMN: message, with the line and a caret.",
        epilog="example: webhook-dsl check examples/webhooks/*.json examples/triggers/*.json",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="webhook config files")
    check.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing for files that are fine")
    check.set_defaults(handler=_check)

    render = commands.add_parser(
        "render",
        help="print the request a config would send, as JSON (one object per line)",
        description="Render the request each config (or compiled plan file) would send, printed as JSON Lines: "
        'one object per request, {"source", "method", "url", "headers": [[key, value], ...], "body": text or '
        "null}, one per line whatever the number of files (--pretty indents them). Nothing is sent. A reference "
        "that matches no variable is an error unless --lenient.",
        epilog="example: webhook-dsl render examples/webhooks/analyze_image.json --vars examples/variables.json "
        "--var-json 'images=[\"https://cdn.example.com/a.jpg\"]'",
    )
    render.add_argument("files", nargs="+", metavar="FILE", help="config files or files written by 'compile'")
    render.add_argument(
        "--vars",
        action="append",
        metavar="VARS.json",
        help='JSON object of variables, e.g. {"session.id": "...", "images": [...]}; repeatable',
    )
    render.add_argument("--var", action="append", metavar="NAME=VALUE", help="a string variable; repeatable")
    render.add_argument(
        "--var-json",
        action="append",
        metavar="NAME=JSON",
        help="a variable given as JSON (number, list, object...); repeatable",
    )
    render.add_argument(
        "--source", metavar="CONFIG", help="with a compiled plan file: render only the plan compiled from CONFIG"
    )
    render.add_argument(
        "--lenient", action="store_true", help="keep references that match no variable as written, instead of failing"
    )
    render.add_argument(
        "--show-secrets",
        action="store_true",
        help='print declared secrets ($secrets.NAME and the webhook\'s "secrets") as they would be sent; '
        "by default they read ***",
    )
    render.add_argument(
        "--pretty",
        action="store_true",
        help="indent each object over several lines, for reading (default: one line each)",
    )
    render.set_defaults(handler=_render)

    compile_ = commands.add_parser(
        "compile",
        help="compile configs into a plan file a runtime loads without parsing",
        description="Compile configs into one JSON plan file (deterministic, stamped with the format version "
        "and grammar hash). Nothing is written if any config has errors.",
        epilog="example: webhook-dsl compile examples/webhooks/*.json -o plans.json",
    )
    compile_.add_argument("files", nargs="+", metavar="FILE", help="webhook config files")
    compile_.add_argument("-o", "--output", required=True, metavar="OUT", help="plan file to write ('-' for stdout)")
    compile_.set_defaults(handler=_compile)

    session = commands.add_parser(
        "session",
        help="create, update, show, list or delete sessions and their client_data",
        description="Sessions hold the system variables and the client_data a webhook can use; each belongs to a\n"
        "company. 'put' merges client_data (keys replace keys); 'delete' removes a session and its logs.\n"
        "Without --company-id a command means the one company that has a session with this id: an\n"
        "id several companies have is an error that lists them.",
        epilog='examples:\n  webhook-dsl session put S1 --company-id cmp_42 --client-data \'{"plan":"pro"}\'\n'
        "  webhook-dsl session get S1 --company-id cmp_42 --database postgresql://webhooks@db.internal/webhooks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    session_commands = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    session_triggers_help = (
        "a trigger file or folder, as 'serve --triggers' takes (default: $WEBHOOK_DSL_TRIGGERS): the values of "
        'the client_data keys these triggers declare in "secrets" are shown as ***. Without it nothing is '
        "masked: the values shown are the ones you typed"
    )
    session_company_help = "the session's company (default: the one company with a session of this id)"
    put = session_commands.add_parser(
        "put",
        help="create or update a session (client_data is merged)",
        description="Create or update a session; client_data is merged (keys replace keys).\n"
        "Ids and client_data follow the service's rules: an id is 1-128 letters, digits and\n"
        ". _ : @ ~ -, starting with a letter or digit; client_data is a JSON object without\n"
        "the system variables (session.id, company.id, assistant.id) as keys.",
        epilog='example:\n  webhook-dsl session put S1 --company-id cmp_42 --client-data \'{"user_id":"usr_999"}\' '
        "--triggers examples/triggers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    put.add_argument("session_id", metavar="SESSION_ID", help="the session to create or update")
    put.add_argument(
        "--company-id",
        help="the company the session belongs to ($company.id); an existing session: default, the one company "
        "with this id",
    )
    put.add_argument("--assistant-id", help="the assistant of the session ($assistant.id)")
    put.add_argument("--client-data", metavar="JSON", help='client_data to merge, e.g. \'{"user_id":"usr_999"}\'')
    put.add_argument("--triggers", metavar="PATH", help=session_triggers_help)
    put.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    put.add_argument(
        "--max-client-data-bytes",
        type=int,
        default=DEFAULT_MAX_CLIENT_DATA_BYTES,
        metavar="N",
        help=f"the session's client_data holds at most N bytes of compact JSON, as 'serve' enforces "
        f"(default {DEFAULT_MAX_CLIENT_DATA_BYTES})",
    )
    put.set_defaults(handler=_session_put)
    get = session_commands.add_parser(
        "get",
        help="show a session (declared secrets masked with --triggers)",
        description="Show a session and its client_data.",
        epilog="example:\n  webhook-dsl session get S1 --company-id cmp_42 --triggers examples/triggers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    get.add_argument("session_id", metavar="SESSION_ID", help="the session to show")
    get.add_argument("--company-id", help=session_company_help)
    get.add_argument("--triggers", metavar="PATH", help=session_triggers_help)
    get.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    get.set_defaults(handler=_session_get)
    delete = session_commands.add_parser(
        "delete",
        help="delete a session and its call logs",
        description="Delete a session and every log record of its calls, in one transaction, and say how\n"
        "many log records went. Exit status 1 when there is no such session.",
        epilog="example:\n  webhook-dsl session delete S1 --company-id cmp_42 --database sqlite:///webhooks.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    delete.add_argument("session_id", metavar="SESSION_ID", help="the session to delete")
    delete.add_argument("--company-id", help=session_company_help)
    delete.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    delete.set_defaults(handler=_session_delete)
    listed = session_commands.add_parser(
        "list",
        help="list a company's sessions, most recently updated first",
        description="One line per session of the company: its id, assistant, number of calls and when it was\n"
        "last updated (UTC); no client_data.",
        epilog="example:\n  webhook-dsl session list --company-id cmp_42 --limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listed.add_argument("--company-id", required=True, help="the company whose sessions to list")
    listed.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N sessions (default 100)")
    listed.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    listed.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    listed.set_defaults(handler=_session_list)

    call = commands.add_parser(
        "call",
        help="fire a trigger for a session and print the result as JSON",
        description="Validate the arguments against the trigger's JSON Schema, build the variables (system, "
        "client_data, arguments, images), send the request, merge session.client_data from the response, "
        "log the call, and print the result: status, response, elapsed ms, merged client_data, the message "
        "for the LLM and the error category if any. Exit 1 when the call did not succeed. Outbound requests "
        "to loopback, private and other non-public addresses are refused unless allowed.",
        epilog="example: webhook-dsl call examples/triggers/check_order.json --session S1 "
        "--arg order_number=A-1001 --allow-network 127.0.0.0/8",
    )
    call.add_argument("trigger", metavar="TRIGGER_FILE", help="the trigger to call (its JSON file)")
    call.add_argument("--session", required=True, metavar="SESSION_ID", help="the session to call the trigger on")
    call.add_argument("--company-id", help="the session's company (default: the one company with a session of this id)")
    call.add_argument(
        "--arg",
        action="append",
        metavar="NAME=VALUE",
        help="an argument, read as the trigger's parameters schema declares it (qty=3 is a number when qty is an "
        "integer; a string stays as typed); repeatable",
    )
    call.add_argument("--args-json", metavar="JSON", help="arguments as a JSON object (numbers, lists...)")
    call.add_argument("--image", action="append", metavar="URL", help="an image URL ($images); repeatable")
    _add_outbound_options(call, "overall deadline (default 15)")
    call.add_argument("--follow-redirects", action="store_true", help="follow redirects (each hop re-checked)")
    call.add_argument(
        "--dry-run",
        action="store_true",
        help="show the request that would be sent (secrets masked) and where each variable came from; send nothing",
    )
    call.add_argument(
        "--show-secrets",
        action="store_true",
        help="with --dry-run, show declared secrets in the request as they would be sent",
    )
    call.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    call.set_defaults(handler=_call)

    logs = commands.add_parser(
        "logs",
        help="show a session's call log, or purge old records",
        description="'webhook-dsl logs SESSION_ID' shows a session's most recent calls (short for\n"
        "'webhook-dsl logs show SESSION_ID'); 'webhook-dsl logs purge --older-than 30d' deletes\n"
        "old records. Options may come before or after the session id.",
        epilog="examples:\n  webhook-dsl logs S1 --limit 20 --format json\n"
        "  webhook-dsl logs purge --older-than 30d --company-id cmp_42",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs_company_help = "the session's company (default: the one company with a session of this id)"
    _add_logs_show_options(logs, logs_company_help)  # before the session id too: 'logs --database URL S1'
    logs_commands = logs.add_subparsers(
        action=_ShowByDefault,
        dest="logs_command",
        required=True,
        metavar="{SESSION_ID,show,purge}",
    )
    show = logs_commands.add_parser(
        "show",
        help="show a session's most recent calls (the default: 'logs S1' is 'logs show S1')",
        description="Show a session's most recent calls, oldest first: time, trigger, status, outcome.\n"
        "'logs S1' says the same; a session named show or purge is 'logs show purge'.",
        epilog="examples:\n  webhook-dsl logs show S1 --company-id cmp_42 --format json\n"
        "  webhook-dsl logs S1 --limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("session_id", metavar="SESSION_ID", help="the session whose calls to show")
    _add_logs_show_options(show, logs_company_help)
    show.set_defaults(handler=_logs)
    purge = logs_commands.add_parser(
        "purge",
        help="delete log records older than a duration",
        description="Delete the call log records written longer ago than --older-than, of one company\n"
        "(--company-id) or of all, and say how many went. Sessions stay. Run it from cron, or let\n"
        "the service purge every hour (WEBHOOK_DSL_LOG_RETENTION_DAYS).",
        epilog="examples:\n  webhook-dsl logs purge --older-than 30d\n"
        "  webhook-dsl logs purge --older-than 12h --company-id cmp_42 --database postgresql://webhooks@db/webhooks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    purge.add_argument(
        "--older-than",
        required=True,
        type=_duration,
        metavar="DURATION",
        help="a number and a unit: s, m, h, d (days) or w (weeks), e.g. 90s, 15m, 12h, 30d, 2w",
    )
    purge.add_argument(
        "--company-id", default=argparse.SUPPRESS, help="only this company's records (default: every company's)"
    )
    purge.add_argument("--database", metavar="URL", default=argparse.SUPPRESS, help=_DATABASE_HELP)
    purge.set_defaults(handler=_logs_purge)

    tools = commands.add_parser(
        "tools",
        help="print triggers as LLM tool definitions (OpenAI chat or Responses, Anthropic)",
        description="Print the triggers as the tool definitions an LLM API takes, as one JSON array:\n"
        "openai for Chat Completions, openai-responses for the Responses API, anthropic for Messages.\n"
        "--strict makes OpenAI strict schemas (structured outputs): every object closed, every property\n"
        "required, optional ones nullable. A schema keyword strict mode cannot express is an error at\n"
        "its FILE:LINE:COLUMN, never dropped.",
        epilog="examples:\n  webhook-dsl tools examples/triggers/*.json --style anthropic\n"
        "  webhook-dsl tools examples/triggers/analyze_image.json --style openai-responses --strict\n\n"
        "exit status: 0 ok, 1 a trigger does not compile or (with --strict) cannot be strict, 2 bad usage.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tools.add_argument("files", nargs="+", metavar="TRIGGER_FILE")
    tools.add_argument(
        "--style",
        choices=("openai", "openai-responses", "anthropic"),
        default="openai",
        help="whose tool format (default openai: Chat Completions)",
    )
    tools.add_argument(
        "--strict", action="store_true", help="OpenAI strict schemas (openai and openai-responses styles only)"
    )
    tools.set_defaults(handler=_tools)

    tool_calls = commands.add_parser(
        "tool-calls",
        help="run a model's tool calls on a session and print the replies to send back",
        description="Read tool calls as a model returned them (OpenAI chat tool_calls items, Responses "
        "function_call items or Anthropic tool_use blocks: a JSON list, or an object holding it under 'calls', "
        "'tool_calls', 'output' or 'content'), run each named trigger on the session, concurrently, and print "
        "the replies in order, in the same format. An unknown tool or bad arguments become an error reply.",
        epilog="example: webhook-dsl tool-calls calls.json --triggers examples/triggers --session S1 "
        "--allow-network 127.0.0.0/8",
    )
    tool_calls.add_argument("calls", metavar="CALLS.json", help="the tool calls, as JSON ('-' for stdin)")
    tool_calls.add_argument(
        "--triggers", required=True, metavar="PATH", help="a trigger file or folder, as 'serve --triggers' takes"
    )
    tool_calls.add_argument("--session", required=True, metavar="SESSION_ID", help="the session to run them on")
    tool_calls.add_argument("--company-id", help="the session's company, when the id exists for several")
    _add_outbound_options(tool_calls, "each call's deadline (default 15)")
    tool_calls.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    tool_calls.set_defaults(handler=_tool_calls)

    stand_in = commands.add_parser(
        "stand-in",
        help="serve a local stand-in for the examples' APIs",
        description="Serve the ERP, helpdesk and vision endpoints the examples in "
        "examples/triggers/ call, on loopback, so they run end to end offline.",
        epilog="example: webhook-dsl stand-in --port 8765",
    )
    stand_in.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    stand_in.add_argument("--port", type=_port, default=8765, help="port to listen on (default 8765)")
    stand_in.set_defaults(handler=_stand_in)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP service: sessions, trigger calls, call logs, the logs dashboard",
        description="Serve the session API, trigger calls and call logs over HTTP, with the logs dashboard\n"
        "at /dashboard/ and the OpenAPI document at /openapi.json.\n\n"
        "Triggers are compiled once, at start-up: TRIGGERS/*.json are every company's,\n"
        "TRIGGERS/<company_id>/*.json that company's own; a file with errors stops start-up with\n"
        "every error as FILE:LINE:COLUMN.\n\n"
        "Requests carry an API key ('Authorization: Bearer KEY' or 'X-Api-Key: KEY'; create one\n"
        "with 'webhook-dsl keys create'), and a key sees only its company's sessions, logs and\n"
        "triggers. Outbound webhooks to loopback, private and other non-public addresses are\n"
        "refused unless allowed (--allow-network).\n\n"
        "Every option that is a service setting can also be set as WEBHOOK_DSL_<NAME> (a flag wins):\n"
        "WEBHOOK_DSL_TRIGGERS, WEBHOOK_DSL_DATABASE, WEBHOOK_DSL_ALLOW_NETWORKS (comma-separated),\n"
        "WEBHOOK_DSL_LOG_FORMAT... (README: The service). The same variables configure\n"
        "'uvicorn --factory webhook_dsl.service:create_app'. GET /metrics answers Prometheus text\n"
        "(WEBHOOK_DSL_METRICS_TOKEN makes it ask for 'Authorization: Bearer TOKEN').",
        epilog="examples:\n"
        "  webhook-dsl keys create --company-id cmp_42\n"
        "  webhook-dsl serve --triggers examples/triggers --port 8080 --allow-network 127.0.0.0/8\n"
        "  webhook-dsl serve --triggers triggers/ --database postgresql://webhooks@db.internal/webhooks\n"
        "  webhook-dsl serve --triggers triggers/ --database sqlite:////var/lib/webhooks/w.db --min-free-disk-mb 1024\n"
        "  webhook-dsl serve --triggers triggers/ --host 0.0.0.0 --workers 4 --log-format json --log-retention-days 7\n"
        '  curl -X PUT localhost:8080/session/S1 -H "Authorization: Bearer $KEY" '
        '-F \'client_data={"user_id":"usr_999"}\'',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--triggers",
        metavar="DIR",
        help="folder of trigger files (or one trigger file) (default: $WEBHOOK_DSL_TRIGGERS; one of them is needed)",
    )
    serve.add_argument(
        "--database",
        metavar="URL",
        help="sqlite:///FILE, sqlite:////ABSOLUTE/FILE, a plain FILE, or postgresql://USER:PASSWORD@HOST/DB "
        "(default: $WEBHOOK_DSL_DATABASE or webhooks.db)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--workers",
        type=_checked(int, "a whole number", lambda v: v >= 1, "{text}: give 1 or more worker processes"),
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (uvicorn's workers), for more than one core; /metrics "
        "sums them all (default 1). Example: --workers 4",
    )
    _add_outbound_options(serve, "overall deadline of a webhook call (default 15)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        help="larger request bodies are refused with 413 (default 1048576)",
    )
    serve.add_argument(
        "--max-client-data-bytes",
        type=int,
        metavar="N",
        help="a session's client_data holds at most N bytes of compact JSON: a PUT past it is a 413, a webhook "
        f"response's merge past it is refused with a warning in the call's result and log (default "
        f"{DEFAULT_MAX_CLIENT_DATA_BYTES})",
    )
    serve.add_argument(
        "--max-requests-per-company",
        type=_non_negative,
        metavar="N",
        help="at most N requests of one company being processed at once; more get 429 (Retry-After: 1). A trigger "
        "call counts while its body is read and checked, not while its webhook is waited on (default 64; 0: no limit)",
    )
    serve.add_argument(
        "--large-body-share",
        type=_share,
        metavar="F",
        help="one company's bodies over 64 KiB may take at most this fraction of the service's time to parse and "
        "check, on average; past it its next large body is a 429 with Retry-After (default 0.1; 0: no limit). "
        "Example: --large-body-share 0.25",
    )
    serve.add_argument(
        "--min-free-disk-mb",
        type=_non_negative,
        metavar="N",
        help="with a SQLite database, refuse to start (exit status 2) when its filesystem has less than N MB "
        "free (1 MB = 1048576 bytes); a PostgreSQL server's disk is not checked (default 64; 0: no check)",
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-Proto/For from a reverse proxy on 127.0.0.1 (marks dashboard cookies Secure "
        "behind HTTPS)",
    )
    serve.add_argument(
        "--anonymous-company",
        metavar="COMPANY_ID",
        help="serve requests that carry no API key as this company (local trials only: anyone who can reach "
        "the port acts as it); a wrong key is still refused, the service listens on loopback only and answers "
        "only requests addressed to localhost, 127.0.0.1 or [::1], and a POST must be JSON",
    )
    serve.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or asyncio's own; trigger calls run "
        "faster on uvloop (README: Performance has the figures)",
    )
    serve.add_argument(
        "--no-dashboard", action="store_false", dest="dashboard", default=None, help="serve the API only"
    )
    serve.add_argument(
        "--no-access-log", action="store_false", dest="access_log", default=None, help="no line per request on stderr"
    )
    serve.add_argument(
        "--no-metrics", action="store_false", dest="metrics", default=None, help="no /metrics endpoint, no counting"
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text lines, or one JSON object per line (time, level, logger, message, request_id, method, path, "
        "status, duration_ms; company, trigger and category for a trigger call), uvicorn's lines too (default text)",
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    serve.add_argument(
        "--log-retention-days",
        type=_checked(float, "a number of days", lambda v: 0 < v < float("inf"), "{text}: give more than 0 days"),
        metavar="DAYS",
        help="purge call log records older than DAYS, at start-up and every hour (default: keep them). "
        "Example: --log-retention-days 30",
    )
    serve.set_defaults(handler=_serve)

    mcp = commands.add_parser(
        "mcp",
        help="serve triggers as MCP tools over stdio (extra [mcp])",
        description="Serve triggers as the tools of an MCP server on stdin and stdout, for an MCP host\n"
        "(Claude Desktop, an IDE, an agent framework) to start. Each trigger is a tool with\n"
        "its name, description and parameters schema; a call runs on one session, as\n"
        "'webhook-dsl call' does (arguments checked, the call logged, client_data merged), and\n"
        "its result is the trigger's message for the LLM, marked as an error when the call\n"
        "did not succeed. stdout carries the protocol only; logs go to stderr. Outbound\n"
        "requests to loopback, private and other non-public addresses are refused unless\n"
        "allowed. Needs the mcp extra: pip install 'webhook-dsl[mcp]'.",
        epilog="example:\n"
        "  webhook-dsl mcp examples/triggers/check_order.json examples/triggers/create_ticket.json "
        "--session S1 --allow-network 127.0.0.0/8\n"
        "  (an MCP host's config runs it: "
        '{"command": "webhook-dsl", "args": ["mcp", "examples/triggers", "--session", "S1"]})',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mcp.add_argument("files", nargs="+", metavar="TRIGGER_FILE", help="trigger files, or folders of them (*.json)")
    mcp.add_argument("--session", required=True, metavar="SESSION_ID", help="the session every tool call runs on")
    mcp.add_argument("--company-id", help="the company the session belongs to (default: the one session with this id)")
    _add_outbound_options(mcp, "overall deadline of a webhook call (default 15)")
    mcp.add_argument("--database", metavar="URL", help=_DATABASE_HELP)
    mcp.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="on stderr (default warning)",
    )
    mcp.set_defaults(handler=_mcp)

    keys = commands.add_parser(
        "keys",
        help="create, list or revoke the service's API keys",
        description="API keys of the service. Each key belongs to one company and sees only that company's "
        "sessions, logs and triggers. 'create' prints the new key once, on stdout; only its SHA-256 is stored.",
        epilog="example: KEY=$(webhook-dsl keys create --company-id cmp_42 --label 'assistant backend')",
    )
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_database_help = _DATABASE_HELP
    keys_create = keys_commands.add_parser(
        "create",
        help="make a key for a company and print it (once)",
        epilog="example: webhook-dsl keys create --company-id cmp_42 --label 'assistant backend'",
    )
    keys_create.add_argument("--company-id", required=True, help="the company the key belongs to")
    keys_create.add_argument("--label", default="", help="a note to recognise the key by, e.g. who uses it")
    keys_create.add_argument("--database", metavar="URL", help=keys_database_help)
    keys_list = keys_commands.add_parser(
        "list",
        help="list a company's keys (their first characters only)",
        epilog="example: webhook-dsl keys list --company-id cmp_42",
    )
    keys_list.add_argument("--company-id", required=True, help="the company whose keys to list")
    keys_list.add_argument("--database", metavar="URL", help=keys_database_help)
    keys_revoke = keys_commands.add_parser(
        "revoke",
        help="delete a company's keys that start with PREFIX",
        epilog="example: webhook-dsl keys revoke wdsl_3f9a --company-id cmp_42",
    )
    keys_revoke.add_argument("prefix", metavar="PREFIX", help="the start of the key, as 'keys list' shows it")
    keys_revoke.add_argument("--company-id", required=True, help="the company whose keys to revoke")
    keys_revoke.add_argument("--database", metavar="URL", help=keys_database_help)
    keys.set_defaults(handler=_keys)

    secrets = commands.add_parser(
        "secrets",
        help="set, list or delete a company's secrets ($secrets.NAME in triggers)",
        description="A company's secrets: named credentials its triggers use as $secrets.NAME, masked\n"
        "in every log, result and LLM message. They are write-only: 'set' reads the value from\n"
        "standard input (a prompt that does not echo on a terminal), and nothing prints it\n"
        "again; 'list' shows names and when each was set.",
        epilog="examples:\n"
        "  printf '%s' \"$ERP_TOKEN\" | webhook-dsl secrets set erp_token --company-id cmp_42\n"
        "  webhook-dsl secrets list --company-id cmp_42\n"
        "  webhook-dsl secrets delete erp_token --company-id cmp_42",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    secrets_set = secrets_commands.add_parser(
        "set",
        help="set a secret (the value from standard input)",
        description="Store the value read from standard input (one trailing newline dropped; on a\n"
        "terminal, typed at a prompt that does not echo) as secret NAME of the company,\n"
        f"replacing any. The value is at least {MIN_SECRET_LENGTH} characters, on one line (no control\n"
        "characters). It is never taken from the command line.",
        epilog="example:\n  printf '%s' \"$ERP_TOKEN\" | webhook-dsl secrets set erp_token --company-id cmp_42 "
        "--database webhooks.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    secrets_set.add_argument("name", metavar="NAME", help="letters, digits and '_' (1-64; not a digit first)")
    secrets_set.add_argument("value_on_command_line", nargs="?", help=argparse.SUPPRESS)
    secrets_list = secrets_commands.add_parser(
        "list",
        help="list a company's secrets: names and when set, never values",
        description="One line per secret: its name and when it was last set (UTC). Values are never shown.",
        epilog="example:\n  webhook-dsl secrets list --company-id cmp_42 --database postgresql://webhooks@db.internal/webhooks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    secrets_delete = secrets_commands.add_parser(
        "delete",
        help="delete a secret",
        description="Delete secret NAME of the company; exit status 1 when it has none.",
        epilog="example:\n  webhook-dsl secrets delete erp_token --company-id cmp_42",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    secrets_delete.add_argument("name", metavar="NAME")
    for action in (secrets_set, secrets_list, secrets_delete):
        action.add_argument("--company-id", required=True, help="the company the secret belongs to")
        action.add_argument("--database", metavar="URL", help=keys_database_help)
    secrets.set_defaults(handler=_secrets)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args, out, err)
    except (_InputError, PlanFormatError) as error:
        print(error, file=err)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say, and no traceback
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout once more at exit
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
