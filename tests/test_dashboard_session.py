"""Dashboard sign-ins (issue 13, L9): a random server-side token in the cookie, never the API key; CSRF tokens
on sign-in and sign-out; Secure over HTTPS, behind a proxy too; no key in an address; a revoked key ends its
sign-ins; replicas share them. Last, the real thing in headless Chromium, driven like a person would.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import select
import shutil
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import webhook_dsl.service.dashboard as dashboard
from tests.service_support import BACKENDS, ServiceProcess, StoreFactory, make_key, write_triggers
from webhook_dsl.cli import main
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.dashboard import COOKIE, LOGIN_COOKIE
from webhook_dsl.service.middleware import ServiceSettings
from webhook_dsl.storage.base import hash_api_key


@pytest.fixture
def triggers(tmp_path: Path, stand_in: int) -> Path:
    return write_triggers(tmp_path / "triggers", stand_in)


@contextmanager
def dashboard_app(
    factory: StoreFactory, triggers: Path, base_url: str = "http://testserver", **settings: Any
) -> Iterator[TestClient]:
    app = create_app(
        factory(), TriggerCatalog.load(triggers), settings=ServiceSettings(access_log=False, **settings)
    )
    with TestClient(app, base_url=base_url, follow_redirects=False) as client:
        yield client


@pytest.fixture
def setup(tmp_path: Path, triggers: Path) -> Iterator[tuple[TestClient, StoreFactory, dict[str, str]]]:
    factory = StoreFactory("sqlite", tmp_path)
    keys = {company: make_key(factory, company) for company in ("cmp_42", "acme")}
    with dashboard_app(factory, triggers) as client:
        client.put("/session/S1", headers={"Authorization": f"Bearer {keys['cmp_42']}"}, json={"client_data": {}})
        yield client, factory, keys


def form_token(page: str) -> str:
    match = re.search(r'<input type="hidden" name="csrf" value="([^"]*)">', page)
    assert match is not None, page
    return match.group(1)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header of a response, by cookie name."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


def sign_in(client: TestClient, key: str, target: str = "/dashboard/") -> httpx.Response:
    """As a browser does: get the form (its CSRF token, in the page and in a cookie), then post it."""
    page = client.get("/dashboard/")
    assert page.status_code == 401
    response = client.post("/dashboard/login", data={"key": key, "next": target, "csrf": form_token(page.text)})
    assert response.status_code == 303, response.text
    return response


# -- the cookie ---------------------------------------------------------------------------------------------


def test_the_cookie_holds_a_random_token_never_the_key(setup: tuple[TestClient, StoreFactory, dict[str, str]]) -> None:
    client, factory, keys = setup
    key = keys["cmp_42"]
    form = client.get("/dashboard/")
    login_cookie = set_cookies(form)[LOGIN_COOKIE]
    assert all(flag in login_cookie for flag in ("HttpOnly", "SameSite=strict", "Path=/dashboard"))
    response = sign_in(client, key)
    assert response.headers["location"] == "/dashboard/"
    cookie = set_cookies(response)[COOKIE]
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=strict", "Path=/dashboard", "Max-Age=28800"))
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    token = client.cookies[COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token) and token != key
    assert key not in json.dumps(dict(response.headers)) and key[5:20] not in token
    assert set_cookies(response)[LOGIN_COOKIE].startswith(f'{LOGIN_COOKIE}=""')  # the form's token is spent
    page = client.get("/dashboard/sessions/S1")
    assert page.status_code == 200 and "company <b>cmp_42</b>" in page.text and key not in page.text
    # The database keeps the token's hash only, never the token or the key.
    stored = b"".join(p.read_bytes() for p in factory.path.parent.glob("store.db*"))
    assert token.encode() not in stored and key.encode() not in stored
    assert hash_api_key(key).encode() in stored  # the key's hash, which ties the sign-in to the key


def test_a_cookie_holding_the_key_itself_signs_nobody_in(
    setup: tuple[TestClient, StoreFactory, dict[str, str]],
) -> None:
    """The old cookie carried the API key; nothing takes a key from a cookie any more, under either name."""
    client, _, keys = setup
    for name in (COOKIE, "wdsl_key"):
        client.cookies.clear()
        client.cookies.set(name, keys["cmp_42"], path="/dashboard")
        page = client.get("/dashboard/")
        assert page.status_code == 401 and "company <b>" not in page.text
        assert set_cookies(page)[name].startswith(f'{name}=""')  # and the browser is told to forget it


def test_a_sign_in_made_over_https_is_kept_in_secure_cookies(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    with dashboard_app(factory, triggers, base_url="https://testserver") as client:
        form = client.get("/dashboard/")
        assert "Secure" in set_cookies(form)[LOGIN_COOKIE]
        response = sign_in(client, key)
        assert "Secure" in set_cookies(response)[COOKIE]
        assert client.get("/dashboard/").status_code == 200


@pytest.mark.slow
def test_behind_a_proxy_with_proxy_headers_the_cookie_is_secure(tmp_path: Path, triggers: Path) -> None:
    """uvicorn takes the scheme from X-Forwarded-Proto, from a proxy on 127.0.0.1, with --proxy-headers only."""
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    for flags, secure in ((["--proxy-headers"], True), ([], False)):
        with (
            serving(triggers, factory.url, *flags) as process,
            httpx.Client(base_url=process.url, headers={"X-Forwarded-Proto": "https"}) as client,
        ):
            form = client.get("/dashboard/")
            client.cookies.clear()  # a client keeps no Secure cookie over http: hand it back as a browser on https
            response = client.post(
                "/dashboard/login", data={"key": key, "csrf": form_token(form.text)},
                headers={"Cookie": f"{LOGIN_COOKIE}={form.cookies[LOGIN_COOKIE]}"},
            )
            assert response.status_code == 303, response.text
            assert ("Secure" in set_cookies(response)[COOKIE]) is secure, flags
            assert ("Secure" in set_cookies(form)[LOGIN_COOKIE]) is secure, flags


# -- CSRF ---------------------------------------------------------------------------------------------------


def test_sign_in_needs_the_form_s_token(setup: tuple[TestClient, StoreFactory, dict[str, str]]) -> None:
    """A page of another site can make a browser post a form here, but can neither read the form's token nor
    set the cookie that must match it (login CSRF: signing the victim in as the attacker's company)."""
    client, _, keys = setup
    form = client.get("/dashboard/")
    token = form_token(form.text)
    assert token == client.cookies[LOGIN_COOKIE]
    for data in (
        {"key": keys["cmp_42"]},
        {"key": keys["cmp_42"], "csrf": ""},
        {"key": keys["cmp_42"], "csrf": token[:-1] + ("A" if token[-1] != "A" else "B")},
        {"key": keys["cmp_42"], "csrf": "é" * 43},
    ):
        response = client.post("/dashboard/login", data=data)
        assert response.status_code == 403 and "came from another page" in response.text, data
        assert COOKIE not in set_cookies(response)
    client.cookies.clear()  # the right token without its cookie: what an attacker who saw a form could send
    response = client.post("/dashboard/login", data={"key": keys["cmp_42"], "csrf": token})
    assert response.status_code == 403 and COOKIE not in set_cookies(response)
    assert client.get("/dashboard/").status_code == 401
    form = client.get("/dashboard/")
    response = client.post("/dashboard/login", data={"key": "wdsl_wrong", "csrf": form_token(form.text)})
    assert response.status_code == 401 and "That key is not valid." in response.text
    response = client.post("/dashboard/login", data={"key": " ", "csrf": form_token(response.text)})
    assert response.status_code == 400 and "Type your API key." in response.text


def test_sign_out_needs_the_sign_in_s_token_and_ends_it_everywhere(
    setup: tuple[TestClient, StoreFactory, dict[str, str]],
) -> None:
    client, _, keys = setup
    sign_in(client, keys["cmp_42"])
    page = client.get("/dashboard/")
    token = form_token(page.text)
    assert '<form method="post" action="/dashboard/logout">' in page.text
    assert token != client.cookies[COOKIE]
    for data in ({}, {"csrf": ""}, {"csrf": "x" * 64}, {"csrf": form_token(client.get("/dashboard/").text) + "x"}):
        response = client.post("/dashboard/logout", data=data)
        assert response.status_code == 403 and "did not come from this dashboard" in response.text, data
        assert client.get("/dashboard/").status_code == 200  # still signed in
    stolen = client.cookies[COOKIE]
    response = client.post("/dashboard/logout", data={"csrf": token})
    assert response.status_code == 303 and set_cookies(response)[COOKIE].startswith(f'{COOKIE}=""')
    assert client.get("/dashboard/").status_code == 401
    client.cookies.set(COOKIE, stolen, path="/dashboard")  # the token is dead on the server, not only forgotten
    page = client.get("/dashboard/")
    assert page.status_code == 401 and "expired or its key was revoked" in page.text
    assert set_cookies(page)[COOKIE].startswith(f'{COOKIE}=""')
    assert client.post("/dashboard/logout").status_code == 303  # nothing left to protect: just cleared


def test_each_sign_in_gets_its_own_token(setup: tuple[TestClient, StoreFactory, dict[str, str]]) -> None:
    """No fixation: a token planted before signing in is replaced, never adopted."""
    client, _, keys = setup
    planted = "p" * 43
    client.cookies.set(COOKIE, planted, path="/dashboard")
    assert client.get("/dashboard/").status_code == 401
    first = _token(sign_in(client, keys["cmp_42"]))
    assert first != planted
    second = _token(_sign_in_again(client, keys["cmp_42"]))
    assert second not in (first, planted)
    client.cookies.clear()
    client.cookies.set(COOKIE, first, path="/dashboard")  # the sign-in it replaced is over
    assert client.get("/dashboard/").status_code == 401


def _sign_in_again(client: TestClient, key: str) -> httpx.Response:
    """A second sign-in from a browser that is signed in (a form left open in another tab; here the form that
    a page given ?key= shows)."""
    form = client.get("/dashboard/", params={"key": "x"})
    response = client.post("/dashboard/login", data={"key": key, "csrf": form_token(form.text)})
    assert response.status_code == 303
    return response


def _token(response: httpx.Response) -> str:
    return set_cookies(response)[COOKIE].split(";", 1)[0].split("=", 1)[1]


# -- no key in an address --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/sessions/S1"])
def test_a_key_in_the_address_is_refused_with_a_page_that_says_why(
    setup: tuple[TestClient, StoreFactory, dict[str, str]], path: str
) -> None:
    client, _, keys = setup
    answers = []
    for key in (keys["cmp_42"], "wdsl_wrong"):  # valid or not, the same answer: the key is not even checked
        response = client.get(path, params={"key": key})
        assert response.status_code == 400
        assert "An API key in the address is not accepted" in response.text and "keys revoke" in response.text
        assert key not in response.text and COOKIE not in set_cookies(response)
        answers.append(response.text.replace(form_token(response.text), ""))
    assert answers[0] == answers[1]
    sign_in(client, keys["cmp_42"])
    assert client.get(path, params={"key": keys["cmp_42"]}).status_code == 400  # signed in or not
    response = client.post("/dashboard/login?key=" + keys["cmp_42"], data={"csrf": client.cookies.get(LOGIN_COOKIE)})
    assert response.status_code == 400 and COOKIE not in set_cookies(response)


# -- a revoked key, an expired sign-in ---------------------------------------------------------------------


def test_revoking_a_key_ends_its_sign_ins_at_once(setup: tuple[TestClient, StoreFactory, dict[str, str]]) -> None:
    client, factory, keys = setup
    sign_in(client, keys["cmp_42"])
    assert client.get("/dashboard/").status_code == 200
    command = ["keys", "revoke", keys["cmp_42"][:11], "--company-id", "cmp_42", "--database", factory.url]
    assert main(command, io.StringIO(), io.StringIO()) == 0
    page = client.get("/dashboard/")  # the key cache still remembers the key: the sign-in was deleted with it
    assert page.status_code == 401 and "expired or its key was revoked" in page.text


def test_a_key_gone_by_other_means_ends_its_sign_ins_within_the_key_cache_s_time(
    setup: tuple[TestClient, StoreFactory, dict[str, str]],
) -> None:
    client, factory, keys = setup
    sign_in(client, keys["acme"])
    assert client.get("/dashboard/").status_code == 200
    # A key removed straight from its table (another tool, a restore): its sign-ins are still in theirs.
    db = sqlite3.connect(factory.path)
    db.execute("DELETE FROM api_keys WHERE company_id = 'acme'")
    db.commit()
    db.close()
    assert client.get("/dashboard/").status_code == 200  # remembered by the key cache (10 s)
    client.app.state.keys._known.clear()  # what 10 s do
    page = client.get("/dashboard/")
    assert page.status_code == 401 and "expired or its key was revoked" in page.text
    assert client.get("/dashboard/").status_code == 401  # and the sign-in is gone for good


def test_a_sign_in_lasts_eight_hours_on_the_server_too(setup: tuple[TestClient, StoreFactory, dict[str, str]]) -> None:
    """The cookie's Max-Age is the browser's side; the store's expiry holds whatever a client keeps."""
    client, factory, keys = setup
    before = time.time()
    sign_in(client, keys["cmp_42"])
    db = sqlite3.connect(factory.path)
    try:
        (expires,) = db.execute("SELECT expires_at FROM dashboard_sessions").fetchone()
        assert before + dashboard.SIGN_IN_SECONDS <= expires <= time.time() + dashboard.SIGN_IN_SECONDS
        db.execute("UPDATE dashboard_sessions SET expires_at = ?", (time.time() - 1,))
        db.commit()
    finally:
        db.close()
    page = client.get("/dashboard/")
    assert page.status_code == 401 and "expired" in page.text


# -- replicas and restarts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_sign_in_is_known_to_every_replica_and_survives_a_restart(
    tmp_path: Path, triggers: Path, kind: str
) -> None:
    factory = StoreFactory(kind, tmp_path)
    try:
        key = make_key(factory, "cmp_42")
        with dashboard_app(factory, triggers) as first:
            sign_in(first, key)
            token = first.cookies[COOKIE]
            csrf = form_token(first.get("/dashboard/").text)
        with dashboard_app(factory, triggers) as second:  # another replica, or the same one restarted
            second.cookies.set(COOKIE, token, path="/dashboard")
            page = second.get("/dashboard/")
            assert page.status_code == 200 and "company <b>cmp_42</b>" in page.text
            assert second.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
        with dashboard_app(factory, triggers) as third:
            third.cookies.set(COOKIE, token, path="/dashboard")
            assert third.get("/dashboard/").status_code == 401
    finally:
        factory.drop()


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_store_keeps_sign_ins_by_hash_with_an_expiry(tmp_path: Path, kind: str) -> None:
    factory = StoreFactory(kind, tmp_path)

    async def test() -> None:
        store = factory()
        try:
            await store.add_api_key("c", "k" * 64, "wdsl_abcdef", "t")
            await store.add_dashboard_session("a" * 64, "c", "k" * 64, time.time() + 60)
            await store.add_dashboard_session("b" * 64, "c", "k" * 64, time.time() - 1)
            found = await store.dashboard_session("a" * 64)
            assert found is not None and (found.company_id, found.key_hash) == ("c", "k" * 64)
            assert await store.dashboard_session("b" * 64) is None  # expired
            assert await store.dashboard_session("c" * 64) is None
            await store.add_dashboard_session("c" * 64, "c", "k" * 64, time.time() + 60)
            await store.delete_dashboard_session("c" * 64)
            assert await store.dashboard_session("c" * 64) is None
            assert await store.revoke_api_key("c", "wdsl_abc") == 1
            assert await store.dashboard_session("a" * 64) is None  # gone with its key
        finally:
            await store.close()

    try:
        asyncio.run(test())
    finally:
        factory.drop()


def test_anonymous_mode_shows_its_company_without_a_sign_in_and_no_sign_out(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    with dashboard_app(factory, triggers, base_url="http://localhost", anonymous_company="demo") as client:
        page = client.get("/dashboard/")
        assert page.status_code == 200 and "company <b>demo</b>" in page.text and "Sign out" not in page.text


# -- a real browser ---------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
    messages ending in NUL on file descriptors 3 and 4), so a test can type into a form and press Enter as a
    person does: the dashboard's pages run no script, and none is injected into them."""

    def __init__(self, profile: Path, *flags: str) -> None:
        assert CHROMIUM is not None
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()

        def descriptors() -> None:  # in the child: Chromium reads commands on fd 3 and writes on fd 4
            os.dup2(commands_read, 3)
            os.dup2(events_write, 4)

        arguments = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                     *flags, "about:blank"]
        self.process = subprocess.Popen(
            arguments, preexec_fn=descriptors, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(commands_read)
        os.close(events_write)
        self._buffer = b""
        self._pending: list[dict[str, Any]] = []
        self._next_id = 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Network.enable", session=True)

    def send(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == number)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    def _wait(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        for message in self._pending:
            if wanted(message):
                self._pending.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                self._pending.append(message)
            ready, _, _ = select.select([self._events], [], [], 0.5)
            if ready:
                chunk = os.read(self._events, 1 << 20)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk
        raise AssertionError("chromium did not answer in time")

    def _loaded(self) -> None:
        self._wait(lambda m: m.get("method") == "Page.loadEventFired")

    def open(self, url: str) -> str:
        self._pending.clear()
        self.send("Page.navigate", session=True, url=url)
        self._loaded()
        return self.html()

    def html(self) -> str:
        root = self.send("DOM.getDocument", session=True)["root"]["nodeId"]
        html: str = self.send("DOM.getOuterHTML", session=True, nodeId=root)["outerHTML"]
        return html

    def _focus(self, selector: str) -> None:
        root = self.send("DOM.getDocument", session=True)["root"]["nodeId"]
        node = self.send("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
        assert node, f"no {selector} on the page"
        self.send("DOM.focus", session=True, nodeId=node)

    def type_into(self, selector: str, text: str) -> None:
        self._focus(selector)
        self.send("Input.insertText", session=True, text=text)

    def press_enter_on(self, selector: str) -> str:
        """Enter in a field or on a button submits its form; the page that follows."""
        self._focus(selector)
        self._pending.clear()
        for kind in ("keyDown", "keyUp"):
            extra = {"text": "\r"} if kind == "keyDown" else {}
            self.send("Input.dispatchKeyEvent", session=True, type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, **extra)
        self._loaded()
        return self.html()

    def cookies(self) -> list[dict[str, Any]]:
        cookies: list[dict[str, Any]] = self.send("Network.getCookies", session=True)["cookies"]
        return cookies

    def screenshot(self, path: Path, width: int = 1280, height: int = 900) -> None:
        """The page as shown in a window of this size, as a PNG."""
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with suppress(AssertionError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for descriptor in (self._commands, self._events):
            os.close(descriptor)


@contextmanager
def serving(triggers: Path, database: str, *flags: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(triggers, database, *flags)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@contextmanager
def browser(profile: Path, *flags: str) -> Iterator[Browser]:
    instance = Browser(profile, *flags)
    try:
        yield instance
    finally:
        instance.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium; .ci/run does)")
def test_signing_in_and_out_in_headless_chromium(tmp_path: Path, triggers: Path) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    with serving(triggers, factory.url) as service, browser(tmp_path / "profile") as chromium:
        httpx.put(f"{service.url}/session/S1", headers={"Authorization": f"Bearer {key}"}, json={"client_data": {}})
        base = f"{service.url}/dashboard"

        page = chromium.open(f"{base}/?key={key}")
        assert "An API key in the address is not accepted" in page and "company <b>" not in page

        page = chromium.open(f"{base}/sessions/S1")
        assert "<h1>Sign in</h1>" in page
        chromium.type_into("#key", key)
        page = chromium.press_enter_on("#key")
        assert "<h1>Session S1</h1>" in page and "company <b>cmp_42</b>" in page  # back where it was asked
        (cookie,) = [c for c in chromium.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
        assert cookie["value"] != key and key not in json.dumps(chromium.cookies())
        chromium.screenshot(tmp_path / "signed-in.png")
        png = (tmp_path / "signed-in.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 900)

        page = chromium.press_enter_on('form[action="/dashboard/logout"] button')
        assert "<h1>Sign in</h1>" in page
        assert [c for c in chromium.cookies() if c["name"] == COOKIE] == []
        assert "<h1>Sign in</h1>" in chromium.open(f"{base}/")

