"""The logs dashboard: plain server-rendered HTML pages of a company's sessions and their calls.

Pages (all under ``/dashboard/``): the company's sessions, most recent first; one session,
with its client_data and its calls (time, trigger, status, duration, the request with
secrets masked, the response body). Sign-in is the company's API key, typed into the form
at ``/dashboard/`` (or given once as ``/dashboard/?key=KEY``, which is then removed from the
address); the key is kept in an HttpOnly, SameSite=Strict cookie scoped to ``/dashboard``.
``Authorization: Bearer KEY`` works too, for scripts.

Everything shown is escaped by Jinja2's autoescape, and the pages carry a Content-Security-Policy
that allows no script at all, so a response body full of markup is shown as text, never run.
Log records were masked when they were written; session data is masked as the API masks it: the
values of the client_data keys the company's triggers declare secret.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import DictLoader, Environment, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ._version import __version__
from .service import TriggerCatalog, masked_session
from .store import SessionNotFound, Store, session_id_problem

__all__ = ["COOKIE", "routes"]

COOKIE = "wdsl_key"
_PAGE_SIZE = 50
_CALLS_SHOWN = 200
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
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
{% if company %}<span class="who">company <b>{{ company }}</b></span>
<form method="post" action="/dashboard/logout"><button type="submit">Sign out</button></form>{% endif %}
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


def _cookie_response(request: Request, target: str, key: str | None) -> Response:
    response = RedirectResponse(target, status_code=303, headers=_HEADERS)
    if key is None:
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
    else:
        response.set_cookie(
            COOKIE,
            key,
            max_age=8 * 3600,
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this site (no open redirect)."""
    if target and target.startswith("/dashboard/") and "//" not in target and "\\" not in target:
        return target
    return "/dashboard/"


async def _signed_in(request: Request) -> tuple[str | None, Response | None]:
    """(company, None) when signed in; otherwise (None, the response to send: a redirect or the form)."""
    from .service import request_key

    keys = request.app.state.keys
    given = request.query_params.get("key")
    if given is not None:  # /dashboard/...?key=KEY: check it, keep it in the cookie, drop it from the address
        if await keys.company(given) is None:
            return None, _page("login.html", 401, next=request.url.path, error="That key is not valid.", company=None)
        return None, _cookie_response(request, _safe_next(request.url.path), given)
    key = request.cookies.get(COOKIE) or request_key(request)
    anonymous = request.app.state.settings.anonymous_company
    if key is None and anonymous is not None:
        return str(anonymous), None
    company = await keys.company(key) if key else None
    if company is None:
        error = "Your sign-in has expired or the key was revoked." if key else None
        return None, _page("login.html", 401, next=request.url.path, error=error, company=None)
    return str(company), None


async def sessions_page(request: Request) -> Response:
    company, response = await _signed_in(request)
    if response is not None:
        return response
    assert company is not None
    try:
        page = max(1, min(int(request.query_params.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    store: Store = request.app.state.store
    rows = await store.list_sessions(company, _PAGE_SIZE + 1, (page - 1) * _PAGE_SIZE)
    return _page("sessions.html", company=company, sessions=rows[:_PAGE_SIZE], page=page, more=len(rows) > _PAGE_SIZE)


async def session_page(request: Request) -> Response:
    company, response = await _signed_in(request)
    if response is not None:
        return response
    assert company is not None
    session_id = str(request.path_params["session_id"])
    store: Store = request.app.state.store
    try:
        if session_id_problem(session_id) is not None:
            raise SessionNotFound(session_id)
        session = await store.get_session(session_id, company_id=company)
    except SessionNotFound:
        return _page("missing.html", 404, company=company, id=session_id)
    calls = await store.logs(session_id, _CALLS_SHOWN, company_id=company)
    calls.reverse()  # newest first
    catalog: TriggerCatalog = request.app.state.catalog
    view = masked_session(session, catalog.secret_names(company))
    return _page("session.html", company=company, session=view, calls=calls, shown=_CALLS_SHOWN)


async def login(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=5, max_part_size=4096)
    key = form.get("key")
    target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    if not isinstance(key, str) or not key.strip():
        return _page("login.html", 400, next=target, error="Type your API key.", company=None)
    key = key.strip()
    if await request.app.state.keys.company(key) is None:
        return _page("login.html", 401, next=target, error="That key is not valid.", company=None)
    return _cookie_response(request, target, key)


async def logout(request: Request) -> Response:
    return _cookie_response(request, "/dashboard/", None)


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
