"""The ``webhook-dsl`` command: check, render and compile webhook configs at deploy time.

Exit status: 0 when everything is fine, 1 when an input is wrong (the errors are
printed on stderr as ``FILE:LINE:COLUMN: message``), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .compiler import compile_webhook
from .errors import DiagnosticsError, PlanFormatError, WebhookDslError
from .plan import WebhookPlan, dump_plans, load_plans

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
    if text.lstrip().startswith("{") and '"format": "webhook-dsl/plan"' in text[:2000]:
        return load_plans(text)
    return [compile_webhook(text, source=path)]


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    failed = 0
    report: list[dict[str, object]] = []
    for path in args.files:
        try:
            plan = compile_webhook(_read(path), source=path)
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
        print(json.dumps({"ok": failed == 0, "errors": report}, indent=2), file=out)
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
                request = plan.render(variables, lenient=args.lenient).to_dict()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webhook-dsl",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate configs; print every error as FILE:LINE:COLUMN",
        description="Validate webhook configs. Every error in every file is printed, "
        "as FILE:LINE:COLUMN: message, with the line and a caret.",
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
    render.set_defaults(handler=_render)

    compile_ = commands.add_parser(
        "compile",
        help="compile configs into a plan file a runtime loads without parsing",
        description="Compile configs into one JSON plan file (deterministic, stamped with the format version "
        "and grammar hash). Nothing is written if any config has errors.",
    )
    compile_.add_argument("files", nargs="+", metavar="FILE", help="webhook config files")
    compile_.add_argument("-o", "--output", required=True, metavar="OUT", help="plan file to write ('-' for stdout)")
    compile_.set_defaults(handler=_compile)
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
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
