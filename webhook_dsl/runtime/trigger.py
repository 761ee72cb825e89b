"""Turns a trigger file into a ``Trigger``: the tool an LLM calls, with its compiled webhook.

A trigger file is a JSON template (its ``webhook`` may hold bare ``$images``)::

    {"name": "check_order", "description": "...",
     "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}},
     "interpretResponse": true,
     "clientData": ["erp_token"],
     "webhook": {"url": "https://erp.example.com/orders/$order_number", "method": "GET", ...}}

``parameters`` is a JSON Schema, checked against its metaschema at compile time; at call time
``jsonschema_rs`` answers "valid?" and ``jsonschema`` words the errors when the answer is no
(benchmarks/validation_bench.py has the figure behind keeping both). ``clientData`` declares the
session keys the webhook expects, so ``check`` tells a typo from a client_data key before deploy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
import referencing.jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError, Diagnostic
from ..language import syntax
from ..language.compiler import compile_template
from ..language.names import SECRET_NAME, SECRETS_PREFIX, SYSTEM_VARIABLES
from ..language.parse import SourceText, parse_config, parse_mapping
from ..language.patterns import NOT_SCHEMAS, RUST_REGEX, LinearValidator, linear_schema, pattern_problems
from ..language.plan import Slot, WebhookPlan, top_level_names
from ..language.template import skeleton, validate_webhook
from .auth import Auth, Signing, compile_auth
from .masking import CREDENTIAL_HEADERS
from .policy import policy_problems
from .shaping import mapping_key_problems, shaping_problems

__all__ = ["SYSTEM_VARIABLES", "Trigger", "compile_trigger", "load_trigger"]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class _TriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    name: str
    description: str
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    interpretResponse: bool = True  # noqa: N815 - the platform's field name, as configs write it
    clientData: list[str] = []  # noqa: N815
    retryPost: bool = False  # noqa: N815
    mergeOnError: bool = False  # noqa: N815
    clientDataWrites: list[str] = []  # noqa: N815
    secrets: list[str] = []
    auth: dict[str, Any] | None = None  # checked by auth.compile_auth, with positions
    signing: dict[str, Any] | None = None
    # Per-trigger policy (policy.py) and response shaping (shaping.py); None: the process setting.
    timeout: float | None = None
    retries: int | None = None
    retryOn: list[int] | None = None  # noqa: N815
    followRedirects: bool | None = None  # noqa: N815
    maxResponseBytes: int | None = None  # noqa: N815
    responseSelect: str | None = None  # noqa: N815
    clientDataMapping: dict[str, str] = {}  # noqa: N815
    webhook: Any


@dataclass(frozen=True, slots=True)
class Trigger:
    """A named tool with an argument schema and the webhook it fires."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    interpret_response: bool
    client_data_keys: tuple[str, ...]
    retry_post: bool
    secrets: tuple[str, ...]
    plan: WebhookPlan
    source: str
    #: Whether a non-2xx answer's ``session.client_data`` is merged too (by default only a 2xx one is).
    merge_on_error: bool = False
    #: client_data keys a response may set although they are protected (see ``protected_keys``).
    client_data_writes: tuple[str, ...] = ()
    #: Per-trigger policy (see ``policy.py``): each None means the process's setting, which is also the ceiling.
    timeout: float | None = None
    retries: int | None = None
    retry_on: tuple[int, ...] | None = None
    follow_redirects: bool | None = None
    max_response_bytes: int | None = None
    #: JMESPath choosing what the LLM reads of a 2xx JSON answer, and session keys taken from it (``shaping.py``).
    response_select: str | None = None
    client_data_mapping: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Where each part of ``parameters`` is written, by its path of keys and indices: line, column, width and
    #: the line's text. A tool export that cannot carry a keyword (``tools.py``) points at it with this.
    parameter_positions: Mapping[tuple[str | int, ...], tuple[int, int, int, str]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    #: Credentials the runtime puts on each request, and its Standard Webhooks signing (``auth.py``).
    auth: Auth | None = None
    signing: Signing | None = None
    #: The content hash of the trigger document (``trigger_digest``): what a call's log record names as the
    #: version that ran, the same for a file and for an upload of the same document.
    version: str = ""
    #: Derived once here, read on every call.
    parameter_names: tuple[str, ...] = dataclasses.field(init=False, compare=False, repr=False)
    secret_names: tuple[str, ...] = dataclasses.field(init=False, compare=False, repr=False)
    #: Each distinct reference's candidate names, longest first: what a call's log names as the variables used.
    reference_candidates: tuple[tuple[str, ...], ...] = dataclasses.field(init=False, compare=False, repr=False)
    #: Whether a reference may read a company secret (then a call loads the company's secrets).
    uses_company_secrets: bool = dataclasses.field(init=False, compare=False, repr=False)
    #: Whether a reference may read a secret at all (then a call's log shows the request masked by position).
    references_secrets: bool = dataclasses.field(init=False, compare=False, repr=False)
    #: Names a reference in the URL's host, port or whole URL may read: they choose where the request goes.
    destination_names: frozenset[str] = dataclasses.field(init=False, compare=False, repr=False)
    #: client_data keys a response may not set unless ``clientDataWrites`` lists them: declared secrets and
    #: the names that choose a destination (a response must not redirect another call, or swap a credential).
    protected_keys: frozenset[str] = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        properties = self.parameters.get("properties") or {}
        object.__setattr__(self, "parameter_names", tuple(properties) if isinstance(properties, dict) else ())
        object.__setattr__(self, "secret_names", tuple(dict.fromkeys(self.secrets + self.plan.secrets)))
        candidates = dict.fromkeys(slot.candidates for slot in self.plan.slots())
        object.__setattr__(self, "reference_candidates", tuple(candidates))
        names = {name for group in candidates for name in top_level_names(group)}
        company = any(name.startswith(SECRETS_PREFIX) for name in names)
        uses = company or self.auth is not None or self.signing is not None  # auth and signing name company secrets
        object.__setattr__(self, "uses_company_secrets", uses)
        object.__setattr__(self, "references_secrets", company or bool(names & set(self.secret_names)))
        declared = set(self.client_data_keys)
        destination = frozenset(
            name
            for slot in self.plan.slots()
            if slot.context in _DESTINATION
            for name in top_level_names(slot.candidates)
            if name in declared or name == slot.full_name
        )
        object.__setattr__(self, "destination_names", destination)
        protected = (set(self.secret_names) | destination) - set(self.client_data_writes)
        object.__setattr__(self, "protected_keys", frozenset(protected))

    def argument_errors(self, arguments: Mapping[str, Any]) -> list[str]:
        """Every way the arguments break the schema, in words an LLM can act on (empty if valid)."""
        quick, validator = _validators(self)
        instance = arguments if type(arguments) is dict else dict(arguments)
        if quick is not None:
            try:
                if quick.is_valid(instance):
                    return []
            except (ValueError, TypeError, OverflowError):  # not plain JSON data: the full validator decides
                pass
        messages = []
        try:
            errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        except referencing.exceptions.Unresolvable as unresolvable:  # only a Trigger built by hand gets here
            return [f"the parameters schema cannot be resolved: {unresolvable}"]
        for error in errors:
            where = "/".join(str(p) for p in error.path)
            message = _shortened(error.message)
            messages.append(f"argument '{where}': {message}" if where else message)
        return messages

    def undefined_references(self) -> list[Diagnostic]:
        """References no source can define: not system, not a company secret, not a parameter, not declared
        client_data, not images."""
        known = set(SYSTEM_VARIABLES) | set(self.parameter_names) | set(self.client_data_keys) | {"images"}
        problems = []
        for slot in self.plan.slots():
            if not any(name in known or _company_secret_name(name) for name in top_level_names(slot.candidates)):
                problems.append(
                    _at_slot(
                        slot,
                        self.source,
                        f"{slot.written}: no source defines it (not a system variable, not a company secret "
                        "$secrets.NAME, not a parameter of the schema, not a declared clientData key)",
                    )
                )
        return problems


def _at_slot(slot: Slot, source: str, message: str) -> Diagnostic:
    """A diagnostic underlining one reference as written."""
    return Diagnostic(
        message=message,
        source=source,
        line=slot.line,
        column=slot.column,
        width=len(slot.written),
        field=slot.field,
        variable=slot.written,
    )


_DESTINATION = frozenset({syntax.Context.URL_WHOLE, syntax.Context.URL_HOST, syntax.Context.URL_PORT})


def _secrets_to_chosen_destinations(trigger: Trigger, header_names: list[str]) -> list[Diagnostic]:
    """A webhook whose destination a trigger argument chooses must carry no secret: a prompt injection would
    otherwise send the credential to any host. Each carrier is reported with the position that decides the host."""
    arguments = set(trigger.parameter_names)
    chosen = [
        s for s in trigger.plan.slots() if s.context in _DESTINATION and arguments & set(top_level_names(s.candidates))
    ]
    if not chosen:
        return []
    declared = set(trigger.secret_names)
    problems = []
    for slot in trigger.plan.slots():
        reads_secret = any(name in declared or _company_secret_name(name) for name in top_level_names(slot.candidates))
        credential_header = False
        if slot.context is syntax.Context.HEADER_VALUE and slot.field.startswith("headers["):
            position = int(slot.field[len("headers[") : slot.field.index("]")])
            credential_header = position < len(header_names) and header_names[position].lower() in CREDENTIAL_HEADERS
        if reads_secret or credential_header:
            what = "a secret" if reads_secret else f"the {header_names[position]} header built from variables"
            where = chosen[0]
            problems.append(
                _at_slot(
                    slot,
                    trigger.source,
                    f"{slot.written} sends {what} to a destination a trigger argument chooses ({where.written} "
                    f"at line {where.line}, column {where.column}); write the host in the config, or send no secret",
                )
            )
    return problems


def _auth_to_chosen_destinations(trigger: Trigger, root: syntax.JsonObject, src: SourceText) -> list[Diagnostic]:
    """``auth`` and ``signing`` send a company credential (or sign with one) wherever the webhook goes: like a
    secret in a template, never to a destination a trigger argument chooses."""
    arguments = set(trigger.parameter_names)
    chosen = None
    for slot in trigger.plan.slots():
        if slot.context in _DESTINATION and arguments & set(top_level_names(slot.candidates)):
            chosen = slot
            break
    problems = []
    for key in ("auth", "signing"):
        member = _member(root, key)
        if chosen is not None and member is not None and getattr(trigger, key) is not None:
            problems.append(
                src.at(
                    member.key.span,
                    f"{key} sends a company credential to a destination a trigger argument chooses ({chosen.written} "
                    f"at line {chosen.line}, column {chosen.column}); write the host in the config",
                    field=key,
                )
            )
    return problems


def _company_secret_name(name: str) -> bool:
    """``secrets.NAME``: what ``$secrets.NAME`` reads, a company secret (see ``webhook-dsl secrets``)."""
    return name.startswith(SECRETS_PREFIX) and bool(SECRET_NAME.match(name, len(SECRETS_PREFIX)))


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class, untyped


#: jsonschema's default registry fetches a remote ``$ref`` with urllib, from our server, to any host,
#: bypassing the outbound guard. Schemas resolve against themselves and the bundled metaschemas only.
_OFFLINE: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


def _references(
    node: syntax.JsonNode, inside_id: bool = False, root: bool = True
) -> list[tuple[syntax.Span, str, bool]]:
    """Every ``$ref``/``$dynamicRef`` in a schema: its place, its text, and whether a nested ``$id``
    changes its base (then only a full resolver knows what it means)."""
    found: list[tuple[syntax.Span, str, bool]] = []
    if isinstance(node, syntax.JsonObject):
        nested = inside_id or (not root and any(m.key.literal == "$id" for m in node.members))
        for member in node.members:
            key, value = member.key.literal, member.value
            if key in ("$ref", "$dynamicRef") and isinstance(value, syntax.StringTemplate):
                found.append((value.span, value.literal, nested))
            elif key not in NOT_SCHEMAS:
                found.extend(_references(value, nested, root=False))
    elif isinstance(node, syntax.JsonArray):
        for item in node.items:
            found.extend(_references(item, inside_id, root=False))
    return found


def _reference_problems(node: syntax.JsonNode, schema: Mapping[str, Any]) -> list[tuple[syntax.Span, str]]:
    """References that would fail at call time: remote ones (never fetched) and local ones to nowhere."""
    problems = []
    root_id = schema.get("$id")
    base = root_id if isinstance(root_id, str) else "urn:webhook-dsl:parameters"
    resource = referencing.jsonschema.DRAFT202012.create_resource(dict(schema))
    resolver = _OFFLINE.with_resource(base, resource).resolver(base)
    for span, reference, nested in _references(node):
        if not reference.startswith("#"):
            problems.append(
                (
                    span,
                    f"parameters refers to {reference!r}: remote schemas are never fetched; put the "
                    'schema under "$defs" and refer to it as "#/$defs/<name>"',
                )
            )
        elif not nested:
            try:
                resolver.lookup(reference)
            except referencing.exceptions.Unresolvable:
                problems.append((span, f"parameters refers to {reference!r}, which does not exist in the schema"))
    return problems


def _has_fractional_multiple(schema: Any) -> bool:
    if isinstance(schema, dict):
        if isinstance(schema.get("multipleOf"), float) and not schema["multipleOf"].is_integer():
            return True
        return any(_has_fractional_multiple(value) for value in schema.values())
    if isinstance(schema, list):
        return any(_has_fractional_multiple(value) for value in schema)
    return False


_Validators = tuple[jsonschema_rs.Draft202012Validator | None, jsonschema.protocols.Validator]
_VALIDATORS: dict[int, tuple[Trigger, _Validators]] = {}


def _validators(trigger: Trigger) -> _Validators:
    """The trigger's two validators, built once and kept while the trigger lives.

    The Rust one says whether arguments are valid, far faster (benchmarks/ section 6); the Python one
    is the reference and words the errors. The Rust one never fetches a remote ``$ref``
    (``offline``) and, like the Python one, treats ``format`` as an annotation. Neither runs a schema
    pattern on a backtracking engine: both get it rewritten by ``linear_pattern`` (the Rust one with
    its ``regex`` crate, the Python one with RE2), so a tenant's ``^(a+)+$`` cannot stall the event
    loop. A schema the Rust one cannot build (a remote ``$ref``) leaves every check to the Python one,
    and so does a fractional ``multipleOf``, where the two disagree (the Rust one finds 0.3 a multiple
    of 0.1, the Python one does not). tests/test_trigger_validation.py checks that they agree on JSON data.
    """
    cached = _VALIDATORS.get(id(trigger))
    if cached is None or cached[0] is not trigger:
        if len(_VALIDATORS) > 10_000:
            _VALIDATORS.clear()
        schema = dict(trigger.parameters)
        quick: jsonschema_rs.Draft202012Validator | None = None
        if not _has_fractional_multiple(schema):
            try:
                quick = jsonschema_rs.Draft202012Validator(
                    linear_schema(schema), validate_formats=False, offline=True, pattern_options=RUST_REGEX
                )
            except Exception:  # whatever it cannot build (or a pattern refused), the reference validator handles alone
                quick = None
        cached = (trigger, (quick, LinearValidator(schema, registry=_OFFLINE)))
        _VALIDATORS[id(trigger)] = cached
    return cached[1]


def _positions(node: syntax.JsonNode, src: SourceText) -> dict[tuple[str | int, ...], tuple[int, int, int, str]]:
    """Where each member key and array item of ``parameters`` is written, by its path (see
    ``Trigger.parameter_positions``)."""

    def at(span: syntax.Span) -> tuple[int, int, int, str]:
        return span.line, span.column, max(1, span.end - span.start), src.line(span.line) or ""

    found: dict[tuple[str | int, ...], tuple[int, int, int, str]] = {(): at(node.span)}
    stack: list[tuple[tuple[str | int, ...], syntax.JsonNode]] = [((), node)]
    while stack:
        path, current = stack.pop()
        if isinstance(current, syntax.JsonObject):
            for member in current.members:
                inner: tuple[str | int, ...] = (*path, member.key.literal)
                found[inner] = at(member.key.span)
                stack.append((inner, member.value))
        elif isinstance(current, syntax.JsonArray):
            for index, item in enumerate(current.items):
                found[(*path, index)] = at(item.span)
                stack.append(((*path, index), item))
    return found


def _node_at(node: syntax.JsonNode, path: tuple[str | int, ...]) -> syntax.JsonNode:
    """The innermost node on ``path`` (a validation error's location) that the config wrote."""
    for step in path:
        if isinstance(node, syntax.JsonArray) and isinstance(step, int) and 0 <= step < len(node.items):
            node = node.items[step]
        elif isinstance(node, syntax.JsonObject) and (member := _member(node, str(step))) is not None:
            node = member.value
        else:
            break
    return node


def _member(node: syntax.JsonObject, key: str) -> syntax.JsonMember | None:
    return next((m for m in node.members if m.key.literal == key), None)


def compile_trigger(config: str | bytes | Mapping[str, Any], source: str | None = None) -> Trigger:
    """Compile a trigger file (text or mapping); raise ``ConfigError`` listing every problem."""
    if isinstance(config, Mapping):
        name = source or "<mapping>"
        text = json.dumps(config, ensure_ascii=False, indent=2)
        root = parse_mapping(config, name)
    else:
        text = config.decode("utf-8") if isinstance(config, bytes) else config
        name = source or "<trigger>"
        root = parse_config(text, name)
    src = SourceText(text, name)
    problems: list[Diagnostic] = []
    if not isinstance(root, syntax.JsonObject):
        raise ConfigError([src.at(root.span, "a trigger must be a JSON object with name, description and webhook")])
    data = {m.key.literal: skeleton(m.value) for m in root.members}
    try:
        model = _TriggerModel.model_validate(data)
    except ValidationError as failure:
        for item in failure.errors():
            loc = item["loc"]
            member = _member(root, str(loc[0])) if loc else None
            span = (
                (member.key.span if item["type"] == "extra_forbidden" else _node_at(member.value, loc[1:]).span)
                if member
                else syntax.Span(root.span.line, root.span.column, root.span.start, root.span.start + 1)
            )
            field = ".".join(map(str, loc))
            message = {
                "missing": f"missing required field '{field}'",
                "extra_forbidden": f"unknown field '{field}'; known fields: {', '.join(_TriggerModel.model_fields)}",
            }.get(item["type"], f"'{field}': {item['msg'].lower()}")
            problems.append(src.at(span, message, field=field))
        model = None
    plan = None
    webhook = _member(root, "webhook")
    if webhook is not None:
        try:
            plan = compile_template(validate_webhook(webhook.value, src))
        except ConfigError as error:
            problems.extend(error.diagnostics)
    if model is not None:
        if not _TOOL_NAME.match(model.name):
            member = _member(root, "name")
            assert member is not None
            problems.append(
                src.at(
                    member.value.span,
                    "name must be 1-64 letters, digits, '_' or '-' (what LLM tool-calling APIs accept)",
                    field="name",
                )
            )
        parameters = _member(root, "parameters")
        try:
            jsonschema.Draft202012Validator.check_schema(model.parameters)
            if model.parameters.get("type", "object") != "object":
                raise jsonschema.SchemaError('the parameters schema must describe an object ("type": "object")')
        except jsonschema.SchemaError as error:
            assert parameters is not None
            problems.append(
                src.at(
                    parameters.value.span, f"parameters is not a valid JSON Schema: {error.message}", field="parameters"
                )
            )
        if parameters is not None:
            for span, message in _reference_problems(parameters.value, model.parameters):
                problems.append(src.at(span, message, field="parameters"))
        problems.extend(pattern_problems(parameters, src))
        for name_ in (
            model.parameters.get("properties", {}) if isinstance(model.parameters.get("properties"), dict) else ()
        ):
            if name_ in SYSTEM_VARIABLES or name_.startswith(SECRETS_PREFIX):
                assert parameters is not None
                what = "a system variable" if name_ in SYSTEM_VARIABLES else "a company secret"
                problems.append(
                    src.at(parameters.value.span, f"parameter '{name_}' would shadow {what}", field="parameters")
                )
        problems.extend(policy_problems(root, src, dict(model), plan.method if plan is not None else None))
    problems.extend(shaping_problems(root, src))
    auth, signing, auth_problems = compile_auth(root, src)
    problems.extend(auth_problems)
    if problems or model is None or plan is None:
        raise ConfigError(sorted(problems, key=lambda d: (d.line, d.column)))
    trigger = Trigger(
        name=model.name,
        description=model.description,
        parameters=model.parameters,
        interpret_response=model.interpretResponse,
        client_data_keys=tuple(model.clientData),
        retry_post=model.retryPost,
        merge_on_error=model.mergeOnError,
        client_data_writes=tuple(model.clientDataWrites),
        timeout=model.timeout,
        retries=model.retries,
        retry_on=None if model.retryOn is None else tuple(model.retryOn),
        follow_redirects=model.followRedirects,
        max_response_bytes=model.maxResponseBytes,
        response_select=model.responseSelect,
        client_data_mapping=dict(model.clientDataMapping),
        secrets=tuple(model.secrets),
        plan=plan,
        source=name,
        parameter_positions=_positions(parameters.value, src) if parameters is not None else {},
        auth=auth,
        signing=signing,
        version=trigger_digest(data),
    )
    headers = data.get("webhook", {}).get("headers") if isinstance(data.get("webhook"), dict) else None
    header_names = [h.get("key") if isinstance(h, dict) else None for h in headers or []]
    carriers = _secrets_to_chosen_destinations(trigger, [n if isinstance(n, str) else "" for n in header_names])
    carriers += _auth_to_chosen_destinations(trigger, root, src)
    carriers += mapping_key_problems(trigger, root, src)
    if carriers:
        raise ConfigError(carriers)
    return trigger


#: An argument error quotes the value it is about; a value this long is cut, so a 900 KB argument does not
#: become a 900 KB message to the LLM.
MAX_ARGUMENT_ERROR_CHARS = 300


def _shortened(message: str) -> str:
    if len(message) <= MAX_ARGUMENT_ERROR_CHARS:
        return message
    half = MAX_ARGUMENT_ERROR_CHARS // 2
    return f"{message[:half]}...({len(message) - 2 * half} characters cut)...{message[-half:]}"


def trigger_digest(document: Any) -> str:
    """A trigger document's content hash: SHA-256 (16 hex digits) of its canonical JSON (sorted keys, no
    spaces, a bare ``$name`` as the object ``{"$": name}``), so that layout and key order do not make a new
    version, and any change of content does."""
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=lambda bare: {"$": bare.written}
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def load_trigger(path: str | Path) -> Trigger:
    return compile_trigger(Path(path).read_text(encoding="utf-8"), source=str(path))


def is_trigger_document(text: str, source: str = "<config>") -> bool:
    """Whether a config is a trigger: a JSON object with a top-level ``webhook`` member. Read from the
    parsed structure, so a webhook whose body has a ``webhook`` key is still a webhook. Text that does not
    parse is not a trigger (compiling it as a webhook reports its syntax errors)."""
    try:
        document = parse_config(text, source)
    except ConfigError:
        return False
    return isinstance(document, syntax.JsonObject) and any(
        member.key.literal == "webhook" for member in document.members
    )
