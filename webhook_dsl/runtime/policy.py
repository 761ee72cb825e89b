"""Per-trigger network policy: ``timeout``, ``retries``, ``retryOn``, ``followRedirects``, ``maxResponseBytes``.

A trigger may ask for less than the process allows, never more: the ``RuntimeSettings`` of the process are
the defaults and the ceilings. A trigger's value above a ceiling cannot be refused when the trigger is
compiled (the settings belong to the process that runs it), so the ceiling applies and the call's result
and log record carry a warning saying so. ``followRedirects`` is a choice, not an amount: the trigger's
value replaces the process default either way, and every hop stays checked by the outbound guard and
bounded by ``max_redirects``.

POST is retried only when the trigger says ``"retryPost": true``; such a call carries an ``Idempotency-Key``
(a random UUID made for the call, the same on every attempt), so that the API can tell a retry from a new
order. A webhook that sets that header itself keeps its own value, which is rendered once per call.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import Diagnostic
from ..language import syntax
from ..language.parse import SourceText
from ..language.plan import RenderedRequest

__all__ = ["IDEMPOTENCY_KEY", "MAX_TRIGGER_RETRIES", "CallPolicy", "call_policy", "policy_problems"]

IDEMPOTENCY_KEY = "Idempotency-Key"
#: A trigger asking for more retries than this is a typo; the process's ``max_retries`` is the ceiling anyway.
MAX_TRIGGER_RETRIES = 10


class _Settings(Protocol):
    """What is read of ``calls.RuntimeSettings`` (a protocol: calls.py imports this module)."""

    @property
    def deadline(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def max_response_bytes(self) -> int: ...
    @property
    def follow_redirects(self) -> bool: ...


class _Policed(Protocol):
    """What is read of a ``trigger.Trigger`` (a protocol: trigger.py imports this module)."""

    @property
    def retry_post(self) -> bool: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def retries(self) -> int | None: ...
    @property
    def retry_on(self) -> tuple[int, ...] | None: ...
    @property
    def follow_redirects(self) -> bool | None: ...
    @property
    def max_response_bytes(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """What one call may do: the process settings, lowered where its trigger asks."""

    deadline: float
    retries: int
    retry_on: frozenset[int]
    retry_post: bool
    follow_redirects: bool
    max_response_bytes: int


def call_policy(
    settings: _Settings, trigger: _Policed | None, *, retry_post: bool = False, retry_on: Collection[int] = ()
) -> tuple[CallPolicy, list[str]]:
    """The policy of a call of ``trigger`` (None: a bare webhook) and a warning for each value the process
    lowered. ``retry_on`` is the default list of retried statuses."""
    deadline, retries, cap = settings.deadline, settings.max_retries, settings.max_response_bytes
    follow, statuses = settings.follow_redirects, frozenset(retry_on)
    warnings: list[str] = []
    if trigger is not None:
        retry_post = trigger.retry_post
        if trigger.timeout is not None:
            if trigger.timeout > deadline:
                warnings.append(_above("timeout", f"{trigger.timeout:g} s", "deadline", f"{deadline:g} s"))
            else:
                deadline = trigger.timeout
        if trigger.retries is not None:
            if trigger.retries > retries:
                warnings.append(_above("retries", str(trigger.retries), "max_retries", str(retries)))
            else:
                retries = trigger.retries
        if trigger.max_response_bytes is not None:
            if trigger.max_response_bytes > cap:
                warnings.append(
                    _above("maxResponseBytes", str(trigger.max_response_bytes), "max_response_bytes", str(cap))
                )
            else:
                cap = trigger.max_response_bytes
        if trigger.retry_on is not None:
            statuses = frozenset(trigger.retry_on)
        if trigger.follow_redirects is not None:
            follow = trigger.follow_redirects
    return CallPolicy(deadline, retries, statuses, retry_post, follow, cap), warnings


def _above(field: str, value: str, setting: str, ceiling: str) -> str:
    return f"the trigger's {field} ({value}) is above this runtime's {setting} ({ceiling}); {ceiling} applies"


def with_idempotency_key(request: RenderedRequest, policy: CallPolicy) -> RenderedRequest:
    """The request with a fresh ``Idempotency-Key`` when it is a POST that may be sent again; a key the
    webhook sets itself is kept (then no second one is added)."""
    if request.method != "POST" or not policy.retry_post or policy.retries < 1:
        return request
    if any(name.lower() == "idempotency-key" for name, _ in request.headers):
        return request
    headers = [*request.headers, (IDEMPOTENCY_KEY, str(uuid.uuid4()))]
    return tuple.__new__(RenderedRequest, (request.method, request.url, headers, request.body))


def policy_problems(
    root: syntax.JsonObject, src: SourceText, values: Mapping[str, Any], method: str | None
) -> list[Diagnostic]:
    """Ranges and combinations the types alone do not settle, each at the value's position. ``values`` are
    the trigger's fields as validated; ``method`` is the webhook's (None when the webhook did not compile)."""
    problems: list[Diagnostic] = []

    def at(key: str, message: str, index: int | None = None) -> None:
        member = next((m for m in root.members if m.key.literal == key), None)
        if member is None:  # only a field the config wrote can be wrong
            return
        node = member.value
        if index is not None and isinstance(node, syntax.JsonArray) and index < len(node.items):
            node = node.items[index]
        problems.append(src.at(node.span, message, field=key if index is None else f"{key}[{index}]"))

    timeout = values.get("timeout")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        at("timeout", "timeout must be a positive number of seconds (the deadline of the whole call)")
    retries = values.get("retries")
    if retries is not None and not 0 <= retries <= MAX_TRIGGER_RETRIES:
        at("retries", f"retries must be 0 to {MAX_TRIGGER_RETRIES}: the attempts allowed after the first")
    retry_on = values.get("retryOn")
    for index, status in enumerate(retry_on or ()):
        if not 400 <= status <= 599:
            at("retryOn", f"retryOn: {status} is not an HTTP error status; list statuses from 400 to 599", index)
    cap = values.get("maxResponseBytes")
    if cap is not None and cap < 1:
        at("maxResponseBytes", "maxResponseBytes must be a positive number of bytes (counted after decompression)")
    if method == "PATCH" or (method == "POST" and not values.get("retryPost")):
        why = (
            "PATCH is not idempotent, so a PATCH webhook is retried only when nothing was sent"
            if method == "PATCH"
            else 'a POST is retried after it was sent only when the trigger says "retryPost": true (each call '
            "then carries an Idempotency-Key, the same on every attempt); without it, only when nothing was sent"
        )
        if retry_on:
            at("retryOn", f"retryOn does not apply: {why}")
        if retries:
            at("retries", f"retries above 0 do not apply: {why} (retries: 0 stops even that)")
    return problems
