"""A trigger's ``auth`` and ``signing``: credentials the runtime puts on a request, not headers a template writes.

::

    "auth": {"type": "bearer", "secret": "NAME"}
    "auth": {"type": "basic", "user": "api", "secret": "NAME"}
    "auth": {"type": "apiKey", "in": "header", "name": "X-Api-Key", "secret": "NAME"}      (or "in": "query")
    "auth": {"type": "oauth2ClientCredentials", "tokenUrl": "https://id.example.com/token",
             "clientId": "abc", "secret": "NAME", "scope": "orders:read", "clientAuth": "basic"}
    "signing": {"secret": "NAME"}

``secret`` names a company secret (what ``$secrets.NAME`` reads), never a client_data key: a credential the
company set once, write-only, that no session, argument or response can supply or replace. Declaring it as a
field rather than a header lets the runtime do what a template cannot: fetch OAuth2 tokens (RFC 6749 section 4.4)
once for every call waiting on them, keep them until shortly before they expire, refresh one after a 401, sign
the exact bytes sent (Standard Webhooks), and mask every derived form (the Basic blob, the token) in the call's
outputs. The token request goes through the runtime's own send path: the outbound guard, the caps and the
call's deadline apply to it as to the webhook.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urlsplit

from ..errors import Diagnostic
from ..language import syntax
from ..language.encode import FORBIDDEN_HEADER_NAMES
from ..language.layout import RenderedRequest
from ..language.names import SECRET_NAME, SECRETS_PREFIX
from ..language.parse import SourceText

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "AuthFailure",
    "AuthorizedCall",
    "Authorizer",
    "BasicAuth",
    "BearerAuth",
    "OAuth2ClientCredentials",
    "Signing",
    "compile_auth",
]

#: A cached token is dropped this long before the expiry its endpoint announced, so that it never expires
#: between being read here and being checked by the API.
TOKEN_EXPIRY_MARGIN_S = 30.0
#: How long a token whose answer has no ``expires_in`` is reused (RFC 6749 leaves it to the server's documentation).
DEFAULT_TOKEN_SECONDS = 300.0
#: The error prefix that tells the LLM nothing was sent (``calls._Failure.NOT_SENT``, repeated here because
#: calls.py imports this module).
NOT_SENT = "not sent: "
SIGNING_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_WHSEC = "whsec_"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 token: a header name
_VISIBLE = re.compile(r"[\x21-\x7e]+\Z")  # what a bearer token may hold (RFC 6750's b64token, loosely)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_TOKEN_CHARS = 16384
_MAX_CACHED_TOKENS = 4096


# -- the trigger's fields, compiled ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BearerAuth:
    secret: str
    type: Literal["bearer"] = "bearer"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    user: str
    secret: str
    type: Literal["basic"] = "basic"


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    location: Literal["header", "query"]
    name: str
    secret: str
    type: Literal["apiKey"] = "apiKey"


@dataclass(frozen=True, slots=True)
class OAuth2ClientCredentials:
    token_url: str
    client_id: str
    secret: str
    scope: str | None = None
    #: How the client authenticates to the token endpoint: HTTP Basic (RFC 6749 section 2.3.1, which every
    #: server must accept) or ``client_id``/``client_secret`` in the form (for servers that want that).
    client_auth: Literal["basic", "body"] = "basic"
    type: Literal["oauth2ClientCredentials"] = "oauth2ClientCredentials"


Auth = BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials


@dataclass(frozen=True, slots=True)
class Signing:
    """Standard Webhooks signing with a company secret (``whsec_`` + base64, or any other text as its bytes)."""

    secret: str


_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # type: (required, optional)
    "bearer": (("secret",), ()),
    "basic": (("user", "secret"), ()),
    "apiKey": (("in", "name", "secret"), ()),
    "oauth2ClientCredentials": (("tokenUrl", "clientId", "secret"), ("scope", "clientAuth")),
}


def _member(node: syntax.JsonObject, key: str) -> syntax.JsonMember | None:
    return next((m for m in node.members if m.key.literal == key), None)


class _Checker:
    """Reads one ``auth`` or ``signing`` object, collecting every problem at its position."""

    def __init__(self, node: syntax.JsonObject, src: SourceText, where: str) -> None:
        self.node, self.src, self.where = node, src, where
        self.problems: list[Diagnostic] = []

    def problem(self, span: syntax.Span, message: str, key: str | None = None) -> None:
        self.problems.append(self.src.at(span, message, field=f"{self.where}.{key}" if key else self.where))

    def fields(self, required: Iterable[str], optional: Iterable[str], kind: str) -> None:
        known = ("type", *required, *optional) if self.where == "auth" else (*required, *optional)
        for member in self.node.members:
            if member.key.literal not in known:
                self.problem(
                    member.key.span,
                    f"unknown field '{member.key.literal}' in {kind}; known fields: {', '.join(known)}",
                    member.key.literal,
                )
        for key in required:
            if _member(self.node, key) is None:
                self.problem(self.node.span, f"{kind} needs '{key}'", key)

    def text(self, key: str, *, empty: bool = False) -> str | None:
        """A member's value as a one-line string written as is ($ is not a reference here), or None."""
        member = _member(self.node, key)
        if member is None:
            return None
        if not isinstance(member.value, syntax.StringTemplate):
            self.problem(member.value.span, f"'{self.where}.{key}' must be a string", key)
            return None
        value = member.value.literal
        if not value and not empty:
            self.problem(member.value.span, f"'{self.where}.{key}' cannot be empty", key)
            return None
        if _CONTROL.search(value):
            self.problem(member.value.span, f"'{self.where}.{key}' cannot hold control characters", key)
            return None
        return value

    def span(self, key: str) -> syntax.Span:
        member = _member(self.node, key)
        return member.value.span if member is not None else self.node.span

    def secret(self) -> str | None:
        value = self.text("secret")
        if value is None:
            return None
        if value.startswith("$" + SECRETS_PREFIX):
            value = value[len("$" + SECRETS_PREFIX) :]
            hint = f'; write the name alone: "{value}"' if SECRET_NAME.match(value) else ""
            self.problem(
                self.span("secret"), f"'{self.where}.secret' names a company secret, not a reference{hint}", "secret"
            )
            return None
        if not SECRET_NAME.match(value):
            self.problem(
                self.span("secret"),
                f"'{self.where}.secret' must name a company secret (1-64 letters, digits and '_', not starting "
                "with a digit), set with 'webhook-dsl secrets set NAME' or PUT /secrets/NAME",
                "secret",
            )
            return None
        return value


def _header_keys(webhook: syntax.JsonNode | None) -> list[tuple[str, syntax.Span]]:
    """The webhook's header names written without variables, with where each is written."""
    if not isinstance(webhook, syntax.JsonObject):
        return []
    headers = _member(webhook, "headers")
    if headers is None or not isinstance(headers.value, syntax.JsonArray):
        return []
    found = []
    for item in headers.value.items:
        key = _member(item, "key") if isinstance(item, syntax.JsonObject) else None
        if key is not None and isinstance(key.value, syntax.StringTemplate) and not key.value.has_variables:
            found.append((key.value.literal, key.value.span))
    return found


def _query_names(webhook: syntax.JsonNode | None) -> tuple[list[str], syntax.Span | None]:
    """The query parameter names of the webhook's URL that are written without variables."""
    url = _member(webhook, "url") if isinstance(webhook, syntax.JsonObject) else None
    if url is None or not isinstance(url.value, syntax.StringTemplate):
        return [], None
    query = urlsplit(url.value.literal).query
    names = [unquote_plus(pair.split("=", 1)[0]) for pair in query.split("&") if pair and "$" not in pair]
    return names, url.value.span


def auth_header_names(auth: Auth | None, signing: Signing | None) -> list[str]:
    """The headers ``auth`` and ``signing`` set, lower case."""
    names = []
    if isinstance(auth, BearerAuth | BasicAuth | OAuth2ClientCredentials):
        names.append("authorization")
    elif isinstance(auth, ApiKeyAuth) and auth.location == "header":
        names.append(auth.name.lower())
    if signing is not None:
        names.extend(SIGNING_HEADERS)
    return names


def _compile_auth(checker: _Checker) -> Auth | None:
    node = checker.node
    type_member = _member(node, "type")
    if type_member is None:
        checker.problem(node.span, f"auth needs a 'type': one of {', '.join(_FIELDS)}", "type")
        return None
    kind = type_member.value.literal if isinstance(type_member.value, syntax.StringTemplate) else None
    if kind not in _FIELDS:
        checker.problem(type_member.value.span, f"auth type must be one of {', '.join(_FIELDS)}", "type")
        return None
    required, optional = _FIELDS[kind]
    label = f"auth of type '{kind}'"
    checker.fields(required, optional, label)
    secret = checker.secret()
    before = len(checker.problems)
    if kind == "bearer":
        return BearerAuth(secret) if secret else None
    if kind == "basic":
        user = checker.text("user", empty=True)
        if user is not None and ":" in user:
            checker.problem(
                checker.span("user"), "'auth.user' cannot hold ':' (Basic credentials are user:secret)", "user"
            )
        return BasicAuth(user, secret) if user is not None and secret and len(checker.problems) == before else None
    if kind == "apiKey":
        location = checker.text("in")
        if location is not None and location not in ("header", "query"):
            checker.problem(checker.span("in"), '\'auth.in\' must be "header" or "query"', "in")
        name = checker.text("name")
        if name is not None and location == "header":
            if not _TOKEN.match(name):
                checker.problem(checker.span("name"), "'auth.name' must be a header name (an RFC 9110 token)", "name")
            elif name.lower() in FORBIDDEN_HEADER_NAMES:
                checker.problem(checker.span("name"), f"'auth.name': only the HTTP client may set {name!r}", "name")
        if location in ("header", "query") and name is not None and secret and len(checker.problems) == before:
            return ApiKeyAuth(location, name, secret)  # type: ignore[arg-type]  # narrowed by the test above
        return None
    token_url = checker.text("tokenUrl")
    if token_url is not None:
        problem = _token_url_problem(token_url)
        if problem:
            checker.problem(checker.span("tokenUrl"), f"'auth.tokenUrl' {problem}", "tokenUrl")
    client_id = checker.text("clientId")
    scope = checker.text("scope", empty=True)
    client_auth = checker.text("clientAuth") if _member(node, "clientAuth") else "basic"
    if client_auth is not None and client_auth not in ("basic", "body"):
        checker.problem(checker.span("clientAuth"), '\'auth.clientAuth\' must be "basic" or "body"', "clientAuth")
    if token_url is None or client_id is None or not secret or len(checker.problems) != before:
        return None
    return OAuth2ClientCredentials(token_url, client_id, secret, scope or None, client_auth)  # type: ignore[arg-type]


def _token_url_problem(url: str) -> str | None:
    """An absolute http(s) URL without credentials, written as is; the outbound guard judges its host when used."""
    if "$" in url:
        return "is sent as written: it cannot hold $references"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an absolute http or https URL"
    if parts.username is not None or parts.password is not None:
        return "cannot carry credentials (the client secret is sent as the auth's secret)"
    if parts.fragment or any(c.isspace() for c in url) or port == 0:
        return "is not a valid URL"
    return None


def compile_auth(root: syntax.JsonObject, src: SourceText) -> tuple[Auth | None, Signing | None, list[Diagnostic]]:
    """A trigger's ``auth`` and ``signing`` members, checked: every problem at its line and column, including a
    header of the webhook (or a query parameter, for an apiKey in the query) that the credential would collide with.
    A member that is not an object is left to the trigger's own model, which reports it."""
    problems: list[Diagnostic] = []
    auth = signing = None
    auth_member, signing_member = _member(root, "auth"), _member(root, "signing")
    if auth_member is not None and isinstance(auth_member.value, syntax.JsonObject):
        checker = _Checker(auth_member.value, src, "auth")
        auth = _compile_auth(checker)
        problems += checker.problems
    if signing_member is not None and isinstance(signing_member.value, syntax.JsonObject):
        checker = _Checker(signing_member.value, src, "signing")
        checker.fields(("secret",), (), "signing")
        secret = checker.secret()
        signing = Signing(secret) if secret and not checker.problems else None
        problems += checker.problems
    webhook = _member(root, "webhook")
    webhook_node = webhook.value if webhook is not None else None
    taken = auth_header_names(auth, signing)
    for name, span in _header_keys(webhook_node):
        if name.lower() in taken:
            what = "signing" if name.lower() in SIGNING_HEADERS else f"auth (type {auth.type if auth else '?'})"
            problems.append(
                src.at(
                    span,
                    f"the header {name!r} collides with the one the trigger's {what} sets; remove one of them",
                    field="webhook.headers",
                )
            )
    if isinstance(auth, ApiKeyAuth) and auth.location == "query":
        names, url_span = _query_names(webhook_node)
        if url_span is not None and auth.name in names:
            problems.append(
                src.at(
                    url_span,
                    f"the URL's query parameter {auth.name!r} collides with the one the trigger's auth (type "
                    "apiKey) adds; remove one of them",
                    field="webhook.url",
                )
            )
    return auth, signing, problems


# -- at call time -----------------------------------------------------------------------------------


class AuthFailure(Exception):
    """The request could not be authorized, so it was not sent: a result ``category`` and the reason (which
    names secrets, never their values)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


class Answer(Protocol):
    """What is read of a ``calls.CallResult`` here (named by its shape: calls.py imports this module)."""

    status: int | None
    body: bytes
    category: str | None
    error: str | None
    attempts: int


A = TypeVar("A", bound=Answer)
#: Sends a request built here (the token request) through the runtime: (request, variables, started) -> result.
Sender = Callable[[RenderedRequest, Mapping[str, Any], float], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float  # on the authorizer's clock


_TokenKey = tuple[str, str, str, str | None, str, str]


@dataclass
class AuthorizedCall:
    """A request with its credentials on, and the values to mask in the call's outputs (``revealed``)."""

    request: RenderedRequest
    revealed: list[str] = field(default_factory=list, repr=False)
    _authorizer: Authorizer | None = field(default=None, repr=False)
    _oauth: tuple[_TokenKey, OAuth2ClientCredentials, str, str, float, float | None] | None = field(
        default=None, repr=False
    )

    async def after(self, call: A, resend: Callable[[RenderedRequest], Awaitable[A]]) -> A:
        """After an OAuth2 call answered 401: forget the token, fetch one, and send once more, whatever the method.
        A 401 says the API refused the credentials before acting on the request, so this one retry cannot repeat
        an action; a second 401 stands, and so does the first if no new token can be had."""
        if self._oauth is None or self._authorizer is None or call.status != 401:
            return call
        key, spec, secret, used, started, deadline = self._oauth
        self._oauth = None  # once per call
        self._authorizer.forget(key, used)
        try:
            token = await self._authorizer.token(key, spec, secret, started, deadline)
        except AuthFailure:
            return call
        self.revealed.append(token)
        if token == used:
            return call
        headers = [(k, f"Bearer {token}" if k.lower() == "authorization" else v) for k, v in self.request.headers]
        self.request = RenderedRequest(self.request.method, self.request.url, headers, self.request.body)
        again = await resend(self.request)
        again.attempts += call.attempts
        return again


class Authorizer:
    """One per runtime: puts a trigger's credentials and signature on its requests, and keeps the OAuth2 tokens.

    A token is fetched once however many calls want it (the first starts the request; the others wait for the
    same one, each until its own deadline) and reused until ``TOKEN_EXPIRY_MARGIN_S`` before it expires.
    """

    def __init__(self, send: Sender, deadline: Callable[[], float]) -> None:
        self._send = send
        self._deadline = deadline  # the runtime's deadline setting, in seconds
        self._tokens: dict[_TokenKey, asyncio.Task[_Token]] = {}
        #: The clock expiries are measured on (tests move it forward).
        self.clock: Callable[[], float] = time.monotonic

    def close(self) -> None:
        for task in self._tokens.values():
            task.cancel()
        self._tokens.clear()

    async def authorize(
        self,
        auth: Auth | None,
        signing: Signing | None,
        company_id: str,
        variables: Mapping[str, Any],
        request: RenderedRequest,
        started: float,
        deadline: float | None = None,
    ) -> AuthorizedCall:
        """The request with its auth header or query parameter, then its signature; ``AuthFailure`` if it cannot
        be (a secret not set, no token). ``deadline``: the call's, in seconds from ``started`` (None: the runtime's)."""
        taken = set(auth_header_names(auth, signing))
        if taken and any(name.lower() in taken for name, _ in request.headers):
            raise AuthFailure(
                "render", "a header rendered from a variable has the name of one the trigger's auth or signing sets"
            )
        result = AuthorizedCall(request)
        headers, url = list(request.headers), request.url
        if isinstance(auth, BearerAuth):
            secret = _secret(variables, auth.secret, "auth")
            headers.append(("Authorization", f"Bearer {secret}"))
        elif isinstance(auth, BasicAuth):
            secret = _secret(variables, auth.secret, "auth")
            pair = f"{auth.user}:{secret}"
            blob = base64.b64encode(pair.encode("utf-8")).decode("ascii")
            headers.append(("Authorization", f"Basic {blob}"))
            result.revealed += [pair, blob]
        elif isinstance(auth, ApiKeyAuth):
            secret = _secret(variables, auth.secret, "auth")
            if auth.location == "header":
                headers.append((auth.name, secret))
            else:
                url = _with_query(url, auth.name, secret)
        elif isinstance(auth, OAuth2ClientCredentials):
            secret = _secret(variables, auth.secret, "auth")
            key: _TokenKey = (
                company_id,
                auth.token_url,
                auth.client_id,
                auth.scope,
                auth.client_auth,
                hashlib.sha256(secret.encode("utf-8")).hexdigest(),
            )
            token = await self.token(key, auth, secret, started, deadline)
            result.revealed.append(token)
            headers.append(("Authorization", f"Bearer {token}"))
            result._authorizer, result._oauth = self, (key, auth, secret, token, started, deadline)
        if signing is not None:
            secret = _secret(variables, signing.secret, "signing")
            signing_key, shown = _signing_key(secret, signing.secret)
            result.revealed += shown
            headers += _signature_headers(signing_key, request.body or b"")
        result.request = RenderedRequest(request.method, url, headers, request.body)
        return result

    async def token(
        self, key: _TokenKey, spec: OAuth2ClientCredentials, secret: str, started: float, deadline: float | None = None
    ) -> str:
        """A valid token: the cached one, the one being fetched, or a new fetch (one at a time per key). A fetch runs
        within the runtime's deadline from the call that started it, whoever waits; each call waits within its own."""
        task = self._tokens.get(key)
        if task is not None and task.done() and (not _usable(task) or task.result().expires_at <= self.clock()):
            del self._tokens[key]
            task = None
        if task is None:
            if len(self._tokens) >= _MAX_CACHED_TOKENS:
                for stale in [k for k, t in self._tokens.items() if t.done()]:
                    del self._tokens[stale]
            task = asyncio.get_running_loop().create_task(self._fetch(spec, secret, started))
            task.add_done_callback(_retrieve)
            self._tokens[key] = task
        remaining = started + (self._deadline() if deadline is None else deadline) - time.perf_counter()
        try:
            async with asyncio.timeout(max(remaining, 0)):
                return (await asyncio.shield(task)).value
        except TimeoutError:
            host = urlsplit(spec.token_url).hostname
            raise AuthFailure("timeout", f"{NOT_SENT}no OAuth2 token from {host} before the deadline") from None

    def forget(self, key: _TokenKey, used: str) -> None:
        """Drop the cached token if it is still ``used`` (calls refused with the same token refresh it once)."""
        task = self._tokens.get(key)
        if task is not None and task.done() and _usable(task) and task.result().value == used:
            del self._tokens[key]

    async def _fetch(self, spec: OAuth2ClientCredentials, secret: str, started: float) -> _Token:
        """POST the client credentials grant (RFC 6749 section 4.4.2) and read the answer (section 5.1)."""
        asked_at = self.clock()
        form = [("grant_type", "client_credentials")]
        if spec.scope:
            form.append(("scope", spec.scope))
        headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        if spec.client_auth == "basic":  # each part form-encoded first (section 2.3.1)
            pair = f"{quote_plus(spec.client_id)}:{quote_plus(secret)}"
            headers.append(("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii")))
        else:
            form += [("client_id", spec.client_id), ("client_secret", secret)]
        request = RenderedRequest("POST", spec.token_url, headers, urlencode(form).encode("ascii"))
        call = await self._send(request, {SECRETS_PREFIX + spec.secret: secret}, started)
        host = urlsplit(spec.token_url).hostname
        if call.category in ("timeout", "connection"):
            error = (call.error or "").removeprefix(NOT_SENT)
            raise AuthFailure(call.category, f"{NOT_SENT}the OAuth2 token request to {host} failed ({error})")
        if call.category in ("blocked", "dns", "render", "too_large"):
            raise AuthFailure(call.category, f"the OAuth2 token request to {host}: {call.error}")
        if call.status is None or not 200 <= call.status < 300:
            code = _error_code(call.body)
            raise AuthFailure(
                "invalid_response",
                f"the OAuth2 token endpoint {host} answered HTTP {call.status}{f' ({code})' if code else ''}; "
                f"check the trigger's clientId and the company secret {spec.secret}",
            )
        try:
            answer = json.loads(call.body)
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not _VISIBLE.match(token) or len(token) > _MAX_TOKEN_CHARS:
            raise AuthFailure(
                "invalid_response", f"the OAuth2 token endpoint {host} answered without a usable access_token"
            )
        assert isinstance(answer, dict)
        kind = answer.get("token_type")
        if kind is not None and (not isinstance(kind, str) or kind.lower() != "bearer"):
            raise AuthFailure(
                "invalid_response", f"the OAuth2 token endpoint {host} gave a token that is not a bearer token"
            )
        lifetime = _seconds(answer.get("expires_in"))
        return _Token(token, asked_at + lifetime - TOKEN_EXPIRY_MARGIN_S)


def _usable(task: asyncio.Task[_Token]) -> bool:
    """Whether a finished fetch holds a token."""
    return not task.cancelled() and task.exception() is None


def _retrieve(task: asyncio.Task[_Token]) -> None:
    """A failed fetch whose waiters all gave up is not reported as an exception never retrieved."""
    if not task.cancelled():
        task.exception()


def _seconds(value: Any) -> float:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return DEFAULT_TOKEN_SECONDS


def _error_code(body: bytes) -> str | None:
    """The ``error`` of an RFC 6749 section 5.2 answer, when it is a plain code (nothing else is quoted)."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else None


def _secret(variables: Mapping[str, Any], name: str, where: str) -> str:
    value = variables.get(SECRETS_PREFIX + name)
    if not isinstance(value, str) or not value:
        raise AuthFailure(
            "render",
            f"the company secret $secrets.{name} that the trigger's {where} names is not set "
            f"(webhook-dsl secrets set {name})",
        )
    return value


def _with_query(url: str, name: str, value: str) -> str:
    """``url`` with one more query parameter, before any fragment."""
    base, hash_, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}{quote(name, safe='')}={quote(value, safe='')}{hash_}{fragment}"


def _signing_key(secret: str, name: str) -> tuple[bytes, list[str]]:
    """The HMAC key: a Standard Webhooks secret (``whsec_`` + base64) decoded, any other secret as its UTF-8
    bytes; and the forms of it to mask beside the secret itself."""
    if not secret.startswith(_WHSEC):
        return secret.encode("utf-8"), []
    encoded = secret[len(_WHSEC) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise AuthFailure("render", f"the signing secret $secrets.{name} starts with whsec_ but is not base64 after it")
    return key, [encoded]


def _signature_headers(key: bytes, body: bytes) -> list[tuple[str, str]]:
    """Standard Webhooks: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return [
        ("webhook-id", message_id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", "v1," + base64.b64encode(digest).decode("ascii")),
    ]
