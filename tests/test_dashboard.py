"""The logs dashboard: sign-in, tenancy, escaping and masking in-process; then the real thing in headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.service_support import StoreFactory, make_key, put_secrets, services, write_triggers
from tests.test_dashboard_session import browser
from webhook_dsl.service.app import TriggerCatalog, create_app
from webhook_dsl.service.dashboard import COOKIE
from webhook_dsl.service.middleware import ServiceSettings

SECRET = "hd-SECRET-99ab77"
ERP_SECRET = "erp-SECRET-t0k5e1"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'
TICKET = {
    "issue_title": HOSTILE,
    "issue_description": "Tray 2 jams on every A4 sheet",
    "priority": "high",
    "customer_name": "Ana",
    "customer_email": "ana@example.com",
}


@pytest.fixture
def app_parts(tmp_path: Path, stand_in: int) -> Iterator[tuple[TestClient, dict[str, str]]]:
    factory = StoreFactory("sqlite", tmp_path)
    keys = {c: make_key(factory, c) for c in ("cmp_42", "acme")}
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    app = create_app(
        factory(),
        TriggerCatalog.load(triggers),
        settings=ServiceSettings(access_log=False),
        allow_networks=["127.0.0.0/8"],
    )
    with TestClient(app, follow_redirects=False) as client:
        yield client, keys


def seed(client: TestClient | httpx.Client, key: str, session_id: str = "S1") -> None:
    """The company's API tokens set as company secrets, and a session with three calls: an order lookup, a
    ticket whose title is markup, and an LLM call with a missing argument."""
    headers = {"Authorization": f"Bearer {key}"}
    put_secrets(client, key, {"erp_token": ERP_SECRET, "helpdesk_api_key": SECRET})
    client_data = {"user_id": "usr_999", "plan": "enterprise"}
    response = client.put(
        f"/session/{session_id}", headers=headers, json={"client_data": client_data, "assistant_id": "asst_7"}
    )
    assert response.status_code == 200
    calls = [
        ("check_order", {"arguments": {"order_number": "A-1001"}}),
        ("create_ticket", {"arguments": TICKET}),
        ("check_order", {"arguments": {}}),
    ]
    for name, payload in calls:
        response = client.post(f"/session/{session_id}/triggers/{name}", headers=headers, json=payload)
        assert response.status_code == 200, response.text


def csrf_of(page: str) -> str:
    """The sign-in or sign-out form's CSRF token."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def signed_in(client: TestClient, key: str) -> None:
    form = client.get("/dashboard/")
    response = client.post("/dashboard/login", data={"key": key, "next": "/dashboard/", "csrf": csrf_of(form.text)})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/"
    cookie = response.headers["set-cookie"]
    assert (
        f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    )
    assert key not in cookie  # a random sign-in token, never the key


def test_pages_need_a_key_and_the_form_signs_in(app_parts: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = app_parts
    response = client.get("/dashboard/")
    assert (
        response.status_code == 401 and '<form class="login" method="post" action="/dashboard/login">' in response.text
    )
    response = client.post("/dashboard/login", data={"key": "wdsl_wrong", "csrf": csrf_of(response.text)})
    assert response.status_code == 401 and "That key is not valid." in response.text
    signed_in(client, keys["cmp_42"])
    response = client.get("/dashboard/")
    assert response.status_code == 200 and "company <b>cmp_42</b>" in response.text
    response = client.post("/dashboard/logout", data={"csrf": csrf_of(response.text)})
    assert response.status_code == 303 and f'{COOKIE}=""' in response.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/dashboard/").status_code == 401
    assert client.get("/dashboard").status_code == 307


def test_a_key_in_the_address_is_refused_and_never_signs_in(app_parts: tuple[TestClient, dict[str, str]]) -> None:
    """Addresses end up in history, logs and Referer headers: a key there is refused, valid or not."""
    client, keys = app_parts
    seed(client, keys["cmp_42"])
    response = client.get("/dashboard/sessions/S1", params={"key": keys["cmp_42"]})
    assert response.status_code == 400 and "An API key in the address is not accepted" in response.text
    assert keys["cmp_42"] not in response.text and f"{COOKIE}=" not in response.headers.get("set-cookie", "")
    assert client.get("/dashboard/", params={"key": "wdsl_wrong"}).status_code == 400
    form = client.get("/dashboard/")
    response = client.post(
        "/dashboard/login", data={"key": keys["cmp_42"], "next": "//evil.example/", "csrf": csrf_of(form.text)}
    )
    assert response.headers["location"] == "/dashboard/"  # no open redirect


def test_session_page_shows_calls_escaped_and_masked(app_parts: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = app_parts
    seed(client, keys["cmp_42"])
    signed_in(client, keys["cmp_42"])
    listing = client.get("/dashboard/")
    assert '<a href="/dashboard/sessions/S1">S1</a>' in listing.text
    assert re.search(r'<td class="num">3</td>', listing.text)
    page = client.get("/dashboard/sessions/S1")
    assert page.status_code == 200
    headers = page.headers
    assert "default-src 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    text = page.text
    for expected in ("check_order", "create_ticket", "200 ok", "201 ok", "bad_arguments", " ms", "TCK-", "A-1001"):
        assert expected in text, expected
    assert text.count("Authorization: ***") == 2  # the order lookup and the ticket, each with its company secret
    assert SECRET not in text and ERP_SECRET not in text
    assert "<script>" not in text and "<img src=x" not in text  # escaped, never markup
    assert "&lt;script&gt;document.title=" in text and "&lt;img src=x onerror=" in text
    assert '"plan": "enterprise"' in html.unescape(text) and "helpdesk_api_key" not in text  # not in the session


def test_session_page_masks_what_the_company_s_triggers_declare(
    app_parts: tuple[TestClient, dict[str, str]],
) -> None:
    """As the API does: a key is masked because a trigger of the company declares it secret (acme's own
    trigger declares acme_pin and erp_token), never because of its name."""
    client, keys = app_parts
    client_data = {"acme_pin": "pin-90125", "password_hint": "hunter22", "erp_token": ERP_SECRET}
    for company in ("cmp_42", "acme"):
        response = client.put("/session/S1", headers={"Authorization": f"Bearer {keys[company]}"},
                              json={"client_data": client_data})
        assert response.status_code == 200
    pages = {c: html.unescape(client.get("/dashboard/sessions/S1", headers={"Authorization": f"Bearer {keys[c]}"}).text)
             for c in ("cmp_42", "acme")}
    assert '"acme_pin": "***"' in pages["acme"] and "pin-90125" not in pages["acme"]
    assert '"erp_token": "***"' in pages["acme"] and ERP_SECRET not in pages["acme"]
    assert '"acme_pin": "pin-90125"' in pages["cmp_42"]
    assert f'"erp_token": "{ERP_SECRET}"' in pages["cmp_42"]  # cmp_42's triggers read $secrets.erp_token instead
    assert all('"password_hint": "hunter22"' in page for page in pages.values())


def test_a_company_sees_only_its_own_sessions(app_parts: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = app_parts
    seed(client, keys["cmp_42"], "only-42")
    signed_in(client, keys["acme"])
    assert "only-42" not in client.get("/dashboard/").text
    response = client.get("/dashboard/sessions/only-42")
    assert response.status_code == 404 and "No session only-42" in response.text
    assert client.get("/dashboard/sessions/..%2F..%2Fx").status_code == 404
    client.cookies.clear()
    response = client.get("/dashboard/sessions/only-42", headers={"Authorization": f"Bearer {keys['acme']}"})
    assert response.status_code == 404
    response = client.get("/dashboard/sessions/only-42", headers={"Authorization": f"Bearer {keys['cmp_42']}"})
    assert response.status_code == 200


# -- a real browser ---------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *arguments], capture_output=True, text=True, timeout=90)


def png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours of an 8-bit RGB(A) PNG (no imaging library)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        if row % 8 == 0:
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, channels * 4))
        previous = line
    return width, height, len(colours)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium; .ci/run does)")
def test_dashboard_in_headless_chromium(tmp_path: Path, stand_in: int) -> None:
    factory = StoreFactory("sqlite", tmp_path)
    key = make_key(factory, "cmp_42")
    other = make_key(factory, "acme")
    triggers = write_triggers(tmp_path / "triggers", stand_in)
    with services(triggers, factory.url, 1) as (service,), httpx.Client(base_url=service.url) as client:
        seed(client, key)
        seed(client, other, "acme-private")
        base = service.url + "/dashboard"

        # The sessions page, signed in through the form as a person would: type the key, press Enter.
        shot = tmp_path / "dashboard.png"
        with browser(tmp_path / "profile") as page_browser:
            page_browser.open(f"{base}/")
            page_browser.type_into("#key", key)
            listing = page_browser.press_enter_on("#key")
            assert "company <b>cmp_42</b>" in listing and "/dashboard/sessions/S1" in listing
            assert "acme-private" not in listing
            page = page_browser.open(f"{base}/sessions/S1")
            page_browser.screenshot(shot, 1280, 900)
        assert "<title>Session S1 · webhook-dsl</title>" in page  # a script would have changed the title
        for expected in (
            "check_order",
            "create_ticket",
            "200 ok",
            "201 ok",
            "bad_arguments",
            "Authorization: ***",
            "TCK-",
        ):
            assert expected in page, expected
        assert "&lt;script&gt;" in page and "<script>" not in page and "<img" not in page
        assert SECRET not in page and ERP_SECRET not in page and key not in page

        assert shot.exists()
        width, height, colours = png_size_and_colours(shot)
        assert (width, height) == (1280, 900)
        assert colours >= 8, "the screenshot is blank"
        assert shot.stat().st_size > 20_000
        if os.environ.get("WEBHOOK_DSL_SAVE_SCREENSHOT"):  # how docs/dashboard.png is made
            target = Path(os.environ["WEBHOOK_DSL_SAVE_SCREENSHOT"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)

        # Signed in as another company, the same address is a "no session" page.
        with browser(tmp_path / "profile-acme") as acme_browser:
            acme_browser.open(f"{base}/sessions/S1")
            acme_browser.type_into("#key", other)
            foreign = acme_browser.press_enter_on("#key")
        assert "No session S1" in foreign and "create_ticket" not in foreign
