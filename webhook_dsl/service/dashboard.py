"""The call-log dashboard: a company's sessions and each call's request, answer and outcome, as HTML pages.

A browser signs in with its API key once; the cookie then holds a random server-side token (never the
key), ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` behind HTTPS. Sign-in and sign-out are POSTs with
a CSRF token, and a key in an address (``?key=``) is refused. Everything shown is masked as the API
shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import DictLoader, Environment, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..storage.base import SessionNotFound, Store, hash_api_key, session_id_problem
from .auth import request_key
from .errors import ApiError
from .views import session_view

__all__ = ["COOKIE", "LOGIN_COOKIE", "SIGN_IN_SECONDS", "routes"]

#: The sign-in's token (random; the store keeps its hash). Never the API key.
COOKIE = "wdsl_session"
#: The sign-in form's CSRF token, also in the form (double submit).
LOGIN_COOKIE = "wdsl_login"
#: Where earlier versions kept the API key itself: deleted wherever a browser still sends it.
_OLD_KEY_COOKIE = "wdsl_key"
SIGN_IN_SECONDS = 8 * 3600
_LOGIN_FORM_SECONDS = 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}\Z")
_PAGE_SIZE = 50
_CALLS_SHOWN = 200
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it a browser sends "Origin: null" with the page's own forms. Addresses hold no
    # key, and another site is never told where its visitor came from.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} · webhook-dsl</title>
<style>
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2430;
         background: #f6f7f9; }
  header { background: #1d2430; color: #fff; padding: 10px 24px; display: flex; align-items: center; gap: 16px; }
  header a { color: #fff; text-decoration: none; font-weight: 600; }
  header .who { margin-left: auto; font-size: 13px; opacity: .85; }
  header form { margin: 0; }
  header button { font: inherit; font-size: 13px; background: none; color: #fff; border: 1px solid #fff6;
                  border-radius: 4px; padding: 2px 10px; cursor: pointer; }
  main { padding: 16px 24px 40px; max-width: 1400px; }
  h1 { font-size: 20px; margin: 8px 0 12px; }
  h2 { font-size: 16px; margin: 24px 0 8px; }
  nav.crumbs { font-size: 13px; color: #5b6575; }
  nav.crumbs a { color: #2457c5; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d8dce3; }
  th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid #e6e9ee; }
  th { background: #eef0f4; font-size: 13px; font-weight: 600; white-space: nowrap; }
  td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  td.nowrap { white-space: nowrap; }
  td.status { white-space: normal; }
  a { color: #2457c5; }
  pre { margin: 0; font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
        white-space: pre-wrap; overflow-wrap: anywhere; max-height: 240px; overflow: auto; }
  table.calls { table-layout: fixed; }
  .ok { color: #17753b; font-weight: 600; }
  .failed { color: #b3261e; font-weight: 600; }
  .muted { color: #5b6575; font-size: 13px; }
  .box { background: #fff; border: 1px solid #d8dce3; padding: 10px 12px; }
  dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0 0 12px; }
  dl.meta dt { color: #5b6575; } dl.meta dd { margin: 0; }
  form.login { background: #fff; border: 1px solid #d8dce3; padding: 16px; max-width: 460px; }
  form.login input { font: inherit; width: 100%; box-sizing: border-box; padding: 6px 8px; margin: 6px 0 12px; }
  form.login button { font: inherit; padding: 6px 14px; }
  .error { color: #b3261e; }
  .pages { margin-top: 10px; font-size: 14px; }
</style>
</head>
<body>
<header><a href="/dashboard/">webhook-dsl · call logs</a>
{% if company %}<span class="who">company <b>{{ company }}</b></span>{% endif %}
{% if csrf %}<form method="post" action="/dashboard/logout"><input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">Sign out</button></form>{% endif %}
</header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Sign in{% endblock %}
{% block main %}
<h1>Sign in</h1>
<form class="login" method="post" action="/dashboard/login">
  <label for="key">Your company's API key</label>
  <input id="key" name="key" type="password" autocomplete="off" required>
  <input type="hidden" name="next" value="{{ next }}">
  <input type="hidden" name="csrf" value="{{ login_csrf }}">
  {% if error %}<p class="error">{{ error }}</p>{% endif %}
  <button type="submit">Show call logs</button>
  <p class="muted">Create a key with <code>webhook-dsl keys create --company-id COMPANY</code>.</p>
</form>
{% endblock %}
"""

_SESSIONS = """{% extends "base.html" %}
{% block title %}Sessions{% endblock %}
{% block main %}
<h1>Sessions</h1>
{% if sessions %}
<table>
<thead><tr><th>Session</th><th>Assistant</th><th>Calls</th><th>Last call</th><th>Updated</th><th>Created</th>
</tr></thead>
<tbody>
{% for s in sessions %}
<tr>
  <td><a href="/dashboard/sessions/{{ s.id | urlsegment }}">{{ s.id }}</a></td>
  <td>{{ s.assistant_id or "—" }}</td>
  <td class="num">{{ s.calls }}</td>
  <td class="nowrap">{{ s.last_call_at | when if s.last_call_at else "—" }}</td>
  <td class="nowrap">{{ s.updated_at | when }}</td>
  <td class="nowrap">{{ s.created_at | when }}</td>
</tr>
{% endfor %}
</tbody>
</table>
<p class="pages">
{% if page > 1 %}<a href="?{{ {'page': page - 1} | query }}">← newer</a>{% endif %}
<span class="muted">page {{ page }}</span>
{% if more %}<a href="?{{ {'page': page + 1} | query }}">older →</a>{% endif %}
</p>
{% else %}
<p class="box">No sessions yet. The assistant's backend creates them with <code>PUT /session/ID</code>.</p>
{% endif %}
{% endblock %}
"""

_SESSION = """{% extends "base.html" %}
{% block title %}Session {{ session.id }}{% endblock %}
{% block main %}
<nav class="crumbs"><a href="/dashboard/">Sessions</a> / {{ session.id }}</nav>
<h1>Session {{ session.id }}</h1>
<dl class="meta">
  <dt>Assistant</dt><dd>{{ session.assistant_id or "—" }}</dd>
  <dt>Created</dt><dd>{{ session.created_at | when }}</dd>
  <dt>Updated</dt><dd>{{ session.updated_at | when }}</dd>
</dl>
<h2>client_data</h2>
<div class="box"><pre>{{ session.client_data | pretty }}</pre></div>
<h2>Calls ({{ calls | length }}{% if calls | length >= shown %}, most recent {{ shown }}{% endif %})</h2>
{% if calls %}
<table class="calls">
<colgroup><col style="width:3em"><col style="width:14.5em"><col style="width:11em"><col style="width:11em">
<col style="width:6.5em"><col><col></colgroup>
<thead><tr><th>#</th><th>Time (UTC)</th><th>Trigger</th><th>Status</th><th>Duration</th>
<th>Request</th><th>Response body</th></tr></thead>
<tbody>
{% for c in calls %}
<tr id="call-{{ c.seq }}">
  <td class="num">{{ c.seq }}</td>
  <td class="nowrap">{{ c.at | when }}</td>
  <td>{{ c.trigger }}</td>
  <td class="status">
    {% if c.ok %}<span class="ok">{{ c.status }} ok</span>
    {% else %}<span class="failed">{% if c.status is not none %}{{ c.status }} {% endif %}{{ c.category }}</span>
    {% if c.error %}<div class="muted">{{ c.error }}</div>{% endif %}{% endif %}
  </td>
  <td class="num">{{ "%.1f" | format(c.elapsed_ms or 0) }} ms{% if (c.attempts or 0) > 1 %}
    <div class="muted">{{ c.attempts }} attempts</div>{% endif %}</td>
  <td><pre>{{ c.method }} {{ c.url or "(not sent)" }}
{% for h in c.request_headers or [] %}{{ h[0] }}: {{ h[1] }}
{% endfor %}{% if c.request_body %}
{{ c.request_body | pretty }}{% endif %}</pre></td>
  <td><pre>{{ c.response_body | pretty if c.response_body else "—" }}</pre>
  {% if c.client_data_merged %}<div class="muted">merged into client_data:
    {{ c.client_data_merged | compact }}</div>{% endif %}
  {% for w in c.warnings or [] %}<div class="muted">warning: {{ w }}</div>{% endfor %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="box">No trigger calls yet.</p>
{% endif %}
{% endblock %}
"""


_MESSAGE = """{% extends "base.html" %}
{% block title %}{{ heading }}{% endblock %}
{% block main %}
<nav class="crumbs"><a href="/dashboard/">Sessions</a></nav>
<h1>{{ heading }}</h1>
<p>{{ message }}</p>
{% endblock %}
"""

_MISSING = """{% extends "base.html" %}
{% block title %}Not found{% endblock %}
{% block main %}
<nav class="crumbs"><a href="/dashboard/">Sessions</a></nav>
<h1>No session {{ id }}</h1>
<p>This company has no session with that id.</p>
{% endblock %}
"""


def _when(value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def _pretty(value: Any) -> str:
    """JSON (given as data or as text) indented; any other text as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    text: str = json.dumps(value, indent=2, ensure_ascii=False)
    return text


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


_environment = Environment(
    loader=DictLoader(
        {
            "base.html": _BASE,
            "login.html": _LOGIN,
            "sessions.html": _SESSIONS,
            "session.html": _SESSION,
            "missing.html": _MISSING,
            "message.html": _MESSAGE,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)
_environment.filters.update(
    when=_when,
    pretty=_pretty,
    compact=_compact,
    urlsegment=lambda text: quote(str(text), safe=""),
    query=urlencode,
)


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _environment.get_template(name).render(version=__version__, **context)
    # A lone surrogate (from a remote's JSON) cannot be UTF-8: it is shown as U+FFFD, not a 500.
    return HTMLResponse(html.encode("utf-8", "replace"), status_code=status, headers=_HEADERS)


def _digest(purpose: str, token: str) -> str:
    """SHA-256 of a sign-in token for one purpose: the store's key for it, or the sign-out form's CSRF token."""
    return hashlib.sha256(f"webhook-dsl dashboard {purpose}:{token}".encode()).hexdigest()


def _same(given: Any, expected: str | None) -> bool:
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _set_cookie(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # behind a proxy: uvicorn's --proxy-headers sets the scheme
    )


def _forget(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path="/dashboard", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def _login_page(
    request: Request, status: int, error: str | None = None, target: str | None = None, *, signed_out: bool = False
) -> Response:
    """The sign-in form, with its CSRF token in the form and in a cookie (kept if the browser has one)."""
    token = request.cookies.get(LOGIN_COOKIE) or ""
    if not _TOKEN.match(token):
        token = secrets.token_urlsafe(32)
    response = _page(
        "login.html",
        status,
        next=target or _safe_next(request.url.path),
        error=error,
        company=None,
        login_csrf=token,
    )
    _set_cookie(response, request, LOGIN_COOKIE, token, _LOGIN_FORM_SECONDS)
    if signed_out:
        _forget(response, request, COOKIE)
    if _OLD_KEY_COOKIE in request.cookies:
        _forget(response, request, _OLD_KEY_COOKIE)
    return response


def _key_in_address(request: Request) -> Response:
    """The answer to ``?key=``: not accepted, and why; the key is not even checked."""
    return _login_page(
        request,
        400,
        "An API key in the address is not accepted: addresses are kept in browser history and server logs and "
        "sent on to other sites. Sign in with this form instead, and revoke that key if the address may have "
        "been recorded (webhook-dsl keys revoke).",
    )


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this site (no open redirect)."""
    if target and target.startswith("/dashboard/") and "//" not in target and "\\" not in target:
        return target
    return "/dashboard/"


@dataclass(frozen=True)
class _Viewer:
    """Who is looking: the company, and for a signed-in browser its sign-in (by hash) and sign-out CSRF token."""

    company: str
    token_hash: str | None = None
    csrf: str | None = None


async def _sign_in_of(request: Request) -> _Viewer | None:
    """The browser's sign-in, if its cookie names one that has not expired and whose key still works."""
    token = request.cookies.get(COOKIE) or ""
    if not _TOKEN.match(token):
        return None
    store: Store = request.app.state.store
    token_hash = _digest("session", token)
    found = await store.dashboard_session(token_hash)
    if found is None:
        return None
    if await request.app.state.keys.company_for_hash(found.key_hash) != found.company_id:  # the key was revoked
        await store.delete_dashboard_session(token_hash)
        return None
    return _Viewer(found.company_id, token_hash, _digest("csrf", token))


async def _signed_in(request: Request) -> tuple[_Viewer | None, Response | None]:
    """(viewer, None) when signed in; otherwise (None, the response to send: the form, saying why)."""
    if "key" in request.query_params:
        return None, _key_in_address(request)
    if request.cookies.get(COOKIE):
        viewer = await _sign_in_of(request)
        if viewer is None:
            return None, _login_page(request, 401, "Your sign-in has expired or its key was revoked.", signed_out=True)
        return viewer, None
    try:
        key = request_key(request)
    except ApiError as error:
        return None, _login_page(request, 401, error.message)
    if key is None:
        anonymous = request.app.state.settings.anonymous_company
        return (_Viewer(str(anonymous)), None) if anonymous is not None else (None, _login_page(request, 401))
    company = await request.app.state.keys.company(key)
    if company is None:
        return None, _login_page(request, 401, "That key is not valid.")
    return _Viewer(str(company)), None


async def sessions_page(request: Request) -> Response:
    viewer, response = await _signed_in(request)
    if response is not None:
        return response
    assert viewer is not None
    company = viewer.company
    try:
        page = max(1, min(int(request.query_params.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    store: Store = request.app.state.store
    rows = await store.list_sessions(company, _PAGE_SIZE + 1, (page - 1) * _PAGE_SIZE)
    return _page(
        "sessions.html",
        company=company,
        csrf=viewer.csrf,
        sessions=rows[:_PAGE_SIZE],
        page=page,
        more=len(rows) > _PAGE_SIZE,
    )


async def session_page(request: Request) -> Response:
    viewer, response = await _signed_in(request)
    if response is not None:
        return response
    assert viewer is not None
    company = viewer.company
    session_id = str(request.path_params["session_id"])
    store: Store = request.app.state.store
    try:
        if session_id_problem(session_id) is not None:
            raise SessionNotFound(session_id)
        session = await store.get_session(session_id, company_id=company)
    except SessionNotFound:
        return _page("missing.html", 404, company=company, csrf=viewer.csrf, id=session_id)
    calls = await store.logs(session_id, _CALLS_SHOWN, company_id=company)
    calls.reverse()  # newest first
    view = await session_view(request, company, session)
    return _page("session.html", company=company, csrf=viewer.csrf, session=view, calls=calls, shown=_CALLS_SHOWN)


async def login(request: Request) -> Response:
    """Check the key typed into the form, then keep a new sign-in (a fresh token: none is ever reused)."""
    if "key" in request.query_params:
        return _key_in_address(request)
    form = await request.form(max_files=0, max_fields=5, max_part_size=4096)
    given_next = form.get("next")
    target = _safe_next(given_next if isinstance(given_next, str) else None)
    if not _same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        return _login_page(
            request, 403, "This sign-in form has expired or came from another page; sign in here.", target
        )
    key = form.get("key")
    if not isinstance(key, str) or not key.strip():
        return _login_page(request, 400, "Type your API key.", target)
    key = key.strip()
    company = await request.app.state.keys.company(key)
    if company is None:
        return _login_page(request, 401, "That key is not valid.", target)
    token = secrets.token_urlsafe(32)
    store: Store = request.app.state.store
    previous = request.cookies.get(COOKIE) or ""
    if _TOKEN.match(previous):  # signing in again replaces this browser's sign-in
        await store.delete_dashboard_session(_digest("session", previous))
    await store.add_dashboard_session(
        _digest("session", token), str(company), hash_api_key(key), time.time() + SIGN_IN_SECONDS
    )
    response = RedirectResponse(target, status_code=303, headers=_HEADERS)
    _set_cookie(response, request, COOKIE, token, SIGN_IN_SECONDS)
    _forget(response, request, LOGIN_COOKIE)
    return response


async def logout(request: Request) -> Response:
    """End the sign-in; its form must carry the sign-in's CSRF token. Without a live sign-in there is nothing to
    protect: the cookie is cleared all the same."""
    form = await request.form(max_files=0, max_fields=5, max_part_size=4096)
    viewer = await _sign_in_of(request)
    if viewer is not None:
        if not _same(form.get("csrf"), viewer.csrf):
            return _page(
                "message.html",
                403,
                company=viewer.company,
                csrf=viewer.csrf,
                heading="Not signed out",
                message="That sign-out did not come from this dashboard's own page; use its Sign out button.",
            )
        assert viewer.token_hash is not None
        store: Store = request.app.state.store
        await store.delete_dashboard_session(viewer.token_hash)
    response = RedirectResponse("/dashboard/", status_code=303, headers=_HEADERS)
    _forget(response, request, COOKIE)
    return response


async def to_dashboard(request: Request) -> Response:
    return RedirectResponse("/dashboard/", status_code=307)


def routes() -> list[Route]:
    return [
        Route("/dashboard", to_dashboard, methods=["GET"]),
        Route("/dashboard/", sessions_page, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/dashboard/sessions/{session_id}", session_page, methods=["GET"]),
    ]
