"""The ``webhook-dsl`` command: check, render and compile webhook configs at deploy time.

Exit status: 0 when everything is fine, 1 when an input is wrong (the errors are
printed on stderr as ``FILE:LINE:COLUMN: message``), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._version import __version__
from .errors import ConfigError, DiagnosticsError, PlanFormatError, WebhookDslError
from .language.compiler import compile_webhook
from .language.names import MIN_SECRET_LENGTH
from .language.plan import PLAN_FORMAT, WebhookPlan, dump_plans, load_plans
from .runtime.calls import EVENT_LOOPS, run
from .runtime.masking import Masker, shown_request
from .runtime.trigger import Trigger, compile_trigger, is_trigger_document
from .storage.base import DEFAULT_MAX_CLIENT_DATA_BYTES

if TYPE_CHECKING:
    from .runtime.catalog import TriggerCatalog
    from .storage.base import Session, Store

__all__ = ["main"]

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
    variables = _load_variables(args)
    failed = 0
    many = len(args.files) > 1
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
                if many or len(plans) > 1:
                    request = {"source": plan.source, **request}
                    print(json.dumps(request, ensure_ascii=False), file=out)
                else:
                    print(json.dumps(request, ensure_ascii=False, indent=2), file=out)
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
    return str(args.database or os.environ.get("WEBHOOK_DSL_DATABASE") or "webhooks.db")


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
    from .storage.base import ClientDataTooLarge, client_data_problems, company_id_problem
    from .storage.sqlite import SQLiteStore

    _check_session_id(args.session_id)
    if args.company_id is not None and (problem := company_id_problem(args.company_id)) is not None:
        raise _InputError(f"--company-id {args.company_id!r}: {problem}")
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
    store = SQLiteStore(_database(args), max_client_data_bytes=args.max_client_data_bytes)
    try:
        session = store.put_session_sync(
            args.session_id, company_id=args.company_id, assistant_id=args.assistant_id, client_data=client_data
        )
    except ClientDataTooLarge as error:
        raise _InputError(
            f"--client-data: the session's client_data would be {error.size} bytes of compact JSON, over the "
            f"limit of {error.limit} bytes (--max-client-data-bytes); nothing was stored"
        ) from None
    finally:
        store.close_sync()
    print(json.dumps(_masked_session(session, catalog), ensure_ascii=False, indent=2), file=out)
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
    from .storage.base import SessionNotFound
    from .storage.sqlite import SQLiteStore

    _check_session_id(args.session_id)
    catalog = _session_triggers(args)
    store = SQLiteStore(_existing_database(args))
    try:
        session = store.get_session_sync(args.session_id)
        secrets = store.company_secrets_sync(session.company_id)
    except SessionNotFound:
        raise _InputError(f"no session {args.session_id!r} in {_database(args)}") from None
    finally:
        store.close_sync()
    print(json.dumps(_masked_session(session, catalog, secrets), ensure_ascii=False, indent=2), file=out)
    return 0


def _call(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .runtime.calls import call_trigger_sync
    from .storage.base import SessionNotFound

    text = _read(args.trigger)
    try:
        trigger = compile_trigger(text, source=args.trigger)
    except DiagnosticsError as error:
        print(error, file=err)
        return 1
    arguments: dict[str, Any] = {}
    for item in args.arg or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _InputError(f"--arg {item!r}: expected NAME=VALUE")
        arguments[name] = value
    if args.args_json:
        arguments.update(_json_object(args.args_json, "--args-json"))
    options = _outbound_options(args)
    if args.follow_redirects:
        options["follow_redirects"] = True
    try:
        result = call_trigger_sync(
            trigger,
            args.session,
            arguments,
            args.image or (),
            database=_database(args),
            dry_run=args.dry_run,
            **options,
        )
    except SessionNotFound:
        raise _InputError(
            f"no session {args.session!r} in {_database(args)}; create it with "
            f"'webhook-dsl session put {args.session} ...'"
        ) from None
    printed = result.to_dict()
    if args.show_secrets and result.dry_run is not None and result.call.request is not None:
        printed["dry_run"]["request"] = result.call.request.to_dict()
    print(json.dumps(printed, ensure_ascii=False, indent=2), file=out)
    return 0 if result.call.ok else 1


def _logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage.sqlite import SQLiteStore

    store = SQLiteStore(_existing_database(args))
    try:
        records = store.logs_sync(args.session_id, args.limit)
    finally:
        store.close_sync()
    if args.format == "json":
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
    from .runtime.catalog import TriggerCatalog, TriggerLoadError
    from .runtime.dispatch import ToolCallFormatError, run_tool_calls_sync

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
    try:
        replies = run_tool_calls_sync(
            catalog, args.session, calls, database=_database(args), company_id=args.company_id, **options
        )
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
    import logging

    try:
        import uvicorn

        from .service import ServiceSettings, create_app
    except ImportError as error:
        raise _InputError(
            f"webhook-dsl serve needs the service extra ({error.name} is not installed): "
            "pip install 'webhook-dsl[service]'"
        ) from None
    from .runtime.catalog import TriggerCatalog, TriggerLoadError
    from .storage.base import company_id_problem
    from .storage.database_url import open_store, sqlite_path

    try:
        catalog = TriggerCatalog.load(args.triggers)
    except TriggerLoadError as error:
        print(error, file=err)
        print(f"not started: the triggers in {args.triggers} have errors", file=err)
        return 1
    try:
        database_file = sqlite_path(_database(args))
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None
    if database_file is not None and (problem := _disk_headroom_problem(database_file, args.min_free_disk_mb)):
        print(problem, file=err)
        return 2
    try:
        store = open_store(_database(args))
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None
    if args.anonymous_company is not None and (problem := company_id_problem(args.anonymous_company)) is not None:
        raise _InputError(f"--anonymous-company: {problem}")
    if args.anonymous_company is not None and not _is_loopback_address(args.host):
        raise _InputError(
            f"--anonymous-company serves requests that carry no key, so it listens on loopback only "
            f"(--host 127.0.0.1, ::1 or localhost), not on {args.host}"
        )
    if args.max_client_data_bytes < 2:
        raise _InputError("--max-client-data-bytes: at least 2 (the size of {})")
    settings = ServiceSettings(
        max_body_bytes=args.max_body_bytes,
        access_log=not args.no_access_log,
        dashboard=not args.no_dashboard,
        anonymous_company=args.anonymous_company,
        max_client_data_bytes=args.max_client_data_bytes,
        max_requests_per_company=args.max_requests_per_company or None,
        large_body_share=args.large_body_share or None,
    )
    options = _outbound_options(args)
    app = create_app(store, catalog, settings=settings, **options)
    if args.anonymous_company is not None:
        print(
            f"warning: requests without an API key act as company {args.anonymous_company!r} "
            "(--anonymous-company); do not expose this port",
            file=err,
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shared = len(catalog.shared)
    own = ", ".join(f"{c}: {len(t)}" for c, t in sorted(catalog.companies.items())) or "none"
    print(
        f"webhook-dsl service: {shared} shared trigger(s), per company: {own}; "
        f"database {getattr(store, 'kind', 'sqlite')}; http://{args.host}:{args.port}/ (dashboard at /dashboard/)",
        file=err,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # ours leaves out query strings (a dashboard ?key= must not reach a log)
        proxy_headers=args.proxy_headers,
        server_header=False,
        loop=args.loop,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


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
    from .storage.base import AmbiguousSession, SessionNotFound
    from .storage.database_url import open_store

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
    try:
        store = open_store(_database(args))
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None
    logging.basicConfig(
        level=args.log_level.upper(), stream=err, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = _outbound_options(args)

    async def serve() -> None:
        try:
            await serve_stdio(triggers, args.session, store, company_id=args.company_id, **options)
        finally:
            await store.close()

    try:
        run(serve())
    except AmbiguousSession:
        raise _InputError(
            f"session {args.session!r} exists for several companies in {_database(args)}; name one with --company-id"
        ) from None
    except SessionNotFound:
        raise _InputError(
            f"no session {args.session!r}"
            + (f" of company {args.company_id!r}" if args.company_id else "")
            + f" in {_database(args)}; create it with 'webhook-dsl session put {args.session} ...'"
        ) from None
    except KeyboardInterrupt:
        return 130
    return 0


_MB = 1024 * 1024


def _disk_headroom_problem(database_file: str, minimum_mb: int) -> str | None:
    """Why ``serve`` must not start with this SQLite file's filesystem so full, or None. On a full disk every
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
        f"{database_file}), under the minimum of {minimum_mb} MB; free some space, or set --min-free-disk-mb "
        "lower (0 turns the check off)"
    )


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


def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]]) -> int:
    """Open the store ``--database`` names (SQLite or PostgreSQL), run ``work`` on it, close it."""
    from .storage.database_url import open_store

    try:
        store = open_store(_database(args))
    except ValueError as error:
        raise _InputError(f"--database: {error}") from None

    async def run_and_close() -> int:
        try:
            return await work(store)
        finally:
            await store.close()

    return run(run_and_close())


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

    return _with_store(args, work)


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

    return _with_store(args, work)


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


def _existing_database(args: argparse.Namespace) -> str:
    """The SQLite file a read-only command reads, which must exist: opening a misspelt path would create an
    empty database and report "no session" or "no calls" as if that were the answer."""
    path = _database(args)
    if path != ":memory:" and not Path(path).is_file():
        raise _InputError(f"--database {path}: no such file (a command that only reads never creates one)")
    return path


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
        help="print the request a config would send, as JSON",
        description="Render the request each config (or compiled plan file) would send, printed as JSON: "
        '{"method", "url", "headers": [[key, value], ...], "body": text or null}. '
        "Nothing is sent. A reference that matches no variable is an error unless --lenient.",
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

    database_help = "SQLite file holding sessions and logs (default: $WEBHOOK_DSL_DATABASE or webhooks.db)"
    session = commands.add_parser(
        "session",
        help="create, update or show a session and its client_data",
        description="Sessions hold the system variables and the client_data a "
        "webhook can use. 'put' merges client_data (keys replace keys).",
        epilog="example: webhook-dsl session put S1 --company-id cmp_42 --client-data '{\"plan\":\"pro\"}'",
    )
    session_commands = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    session_triggers_help = (
        "a trigger file or folder, as 'serve --triggers' takes (default: $WEBHOOK_DSL_TRIGGERS): the values of "
        'the client_data keys these triggers declare in "secrets" are shown as ***. Without it nothing is '
        "masked: the values shown are the ones you typed"
    )
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
    put.add_argument("session_id", metavar="SESSION_ID")
    put.add_argument("--company-id", help="the company the session belongs to ($company.id)")
    put.add_argument("--assistant-id", help="the assistant of the session ($assistant.id)")
    put.add_argument("--client-data", metavar="JSON", help='client_data to merge, e.g. \'{"user_id":"usr_999"}\'')
    put.add_argument("--triggers", metavar="PATH", help=session_triggers_help)
    put.add_argument("--database", help=database_help)
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
        epilog="example:\n  webhook-dsl session get S1 --triggers examples/triggers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    get.add_argument("session_id", metavar="SESSION_ID")
    get.add_argument("--triggers", metavar="PATH", help=session_triggers_help)
    get.add_argument("--database", help=database_help)
    get.set_defaults(handler=_session_get)

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
    call.add_argument("trigger", metavar="TRIGGER_FILE")
    call.add_argument("--session", required=True, metavar="SESSION_ID", help="the session to call the trigger on")
    call.add_argument("--arg", action="append", metavar="NAME=VALUE", help="a string argument; repeatable")
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
    call.add_argument("--database", help=database_help)
    call.set_defaults(handler=_call)

    logs = commands.add_parser(
        "logs",
        help="show a session's call log",
        description="Show a session's most recent calls, oldest first: time, trigger, status, outcome.",
        epilog="example: webhook-dsl logs S1 --limit 20 --format json",
    )
    logs.add_argument("session_id", metavar="SESSION_ID")
    logs.add_argument("--limit", type=int, default=100, help="most recent N calls (default 100)")
    logs.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    logs.add_argument("--database", help=database_help)
    logs.set_defaults(handler=_logs)

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
    tool_calls.add_argument(
        "--database", help="SQLite file of the sessions (default: $WEBHOOK_DSL_DATABASE or webhooks.db)"
    )
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
        "refused unless allowed (--allow-network).",
        epilog="examples:\n"
        "  webhook-dsl keys create --company-id cmp_42\n"
        "  webhook-dsl serve --triggers examples/triggers --port 8080 --allow-network 127.0.0.0/8\n"
        "  webhook-dsl serve --triggers triggers/ --database postgresql://webhooks@db.internal/webhooks\n"
        "  webhook-dsl serve --triggers triggers/ --database sqlite:////var/lib/webhooks/w.db --min-free-disk-mb 1024\n"
        '  curl -X PUT localhost:8080/session/S1 -H "Authorization: Bearer $KEY" '
        '-F \'client_data={"user_id":"usr_999"}\'',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--triggers", required=True, metavar="DIR", help="folder of trigger files (or one trigger file)")
    serve.add_argument(
        "--database",
        metavar="URL",
        help="sqlite:///FILE, sqlite:////ABSOLUTE/FILE, a plain FILE, or postgresql://USER:PASSWORD@HOST/DB "
        "(default: $WEBHOOK_DSL_DATABASE or webhooks.db)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    _add_outbound_options(serve, "overall deadline of a webhook call (default 15)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1024 * 1024,
        metavar="N",
        help="larger request bodies are refused with 413 (default 1048576)",
    )
    serve.add_argument(
        "--max-client-data-bytes",
        type=int,
        default=DEFAULT_MAX_CLIENT_DATA_BYTES,
        metavar="N",
        help="a session's client_data holds at most N bytes of compact JSON: a PUT past it is a 413, a webhook "
        f"response's merge past it is refused with a warning in the call's result and log (default "
        f"{DEFAULT_MAX_CLIENT_DATA_BYTES})",
    )
    serve.add_argument(
        "--max-requests-per-company",
        type=_non_negative,
        default=64,
        metavar="N",
        help="at most N requests of one company being processed at once; more get 429 (Retry-After: 1). A trigger "
        "call counts while its body is read and checked, not while its webhook is waited on (default 64; 0: no limit)",
    )
    serve.add_argument(
        "--large-body-share",
        type=_share,
        default=0.1,
        metavar="F",
        help="one company's bodies over 64 KiB may take at most this fraction of the service's time to parse and "
        "check, on average; past it its next large body is a 429 with Retry-After (default 0.1; 0: no limit). "
        "Example: --large-body-share 0.25",
    )
    serve.add_argument(
        "--min-free-disk-mb",
        type=_non_negative,
        default=64,
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
    serve.add_argument("--no-dashboard", action="store_true", help="serve the API only")
    serve.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="default info"
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
    mcp.add_argument(
        "--database",
        metavar="URL",
        help="sessions, logs and secrets: sqlite:///FILE, a plain FILE or postgresql://... "
        "(default: $WEBHOOK_DSL_DATABASE or webhooks.db)",
    )
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
    keys_database_help = (
        "sqlite:///FILE, a plain FILE or postgresql://... (default: $WEBHOOK_DSL_DATABASE or webhooks.db)"
    )
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
