"""The service's Prometheus metrics (``GET /metrics``, extra ``[service]``): requests by route template and
status, trigger calls by trigger and outcome category, the outbound webhook's latency by trigger, and the
trigger calls in flight.

With several worker processes (``serve --workers N``, ``uvicorn --workers N``, gunicorn) each keeps its own
counts; set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before the processes start (``serve --workers``
makes one) and every worker writes its counts there, and ``/metrics`` on any worker answers their sum
(prometheus-client's multiprocess mode; calls in flight count live processes only).

Labels are bounded on purpose: route templates, not paths; never a company, session or key (there are as many
as there are tenants, and a metric must not tell one tenant about another).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response

from ..runtime.calls import Runtime, TriggerResult
from ..runtime.trigger import Trigger
from ..storage.base import SessionNotFound, Store, StoreUnavailable
from .errors import error_response
from .middleware import current_request

__all__ = ["MULTIPROC_ENV", "ObservedRuntime", "ServiceMetrics", "metrics_endpoint"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: What ``generate_latest`` writes: the Prometheus text format 0.0.4, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: from a fast local API to the default deadline (15 s) and past it (a trigger may allow more).
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
#: A label value for methods outside these: a client chooses the method, and a label must stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServiceMetrics:
    """One app's metrics. Each label combination's child is made once and kept (``labels()`` takes a lock and
    builds a key on every call; a dict lookup here does not), so a request costs a few increments.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set when prometheus-client was imported) the values live
    in that folder's files, shared by every worker, and ``exposition`` reads them all."""

    def __init__(self) -> None:
        self.multiprocess = _values.ValueClass is not _values.MutexValue
        self.directory = os.environ.get(MULTIPROC_ENV) if self.multiprocess else None
        if self.multiprocess and not (self.directory and os.path.isdir(self.directory)):
            raise ValueError(f"{MULTIPROC_ENV}={self.directory}: no such folder; make an empty one before starting")
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "webhook_dsl_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self._calls = Counter(
            "webhook_dsl_trigger_calls",
            "Trigger calls made (dry runs aside), by trigger and outcome category (ok for a success).",
            ("trigger", "category"),
            registry=self.registry,
        )
        self._webhook = Histogram(
            "webhook_dsl_webhook_seconds",
            "Time of a trigger's outbound webhook call, retries included, by trigger.",
            ("trigger",),
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "webhook_dsl_trigger_calls_in_flight",
            "Trigger calls being made now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._call_children: dict[tuple[str, str], Any] = {}
        self._webhook_children: dict[str, Any] = {}

    def request(self, route: str, method: str, status: int) -> None:
        """Count one answered request (``route``: its template, such as ``/session/{session_id}``)."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            shown = method if method in _METHODS else "other"
            child = self._request_children[key] = self._requests.labels(route, shown, str(status))
        child.inc()

    def call(self, trigger: str, category: str, seconds: float | None) -> None:
        """Count one trigger call by outcome, and its webhook's time when one was sent (``seconds``)."""
        key = (trigger, category)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self._calls.labels(trigger, category)
        child.inc()
        if seconds is not None:
            histogram = self._webhook_children.get(trigger)
            if histogram is None:
                histogram = self._webhook_children[trigger] = self._webhook.labels(trigger)
            histogram.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text of every metric: this process's, or in multiprocess mode every worker's sum."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def process_ended(self) -> None:
        """In multiprocess mode, drop this process's live gauges (calls in flight) from the sum."""
        if self.multiprocess:
            mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: Prometheus text. Open like ``/livez`` unless ``ServiceSettings.metrics_token`` is set;
    then it needs ``Authorization: Bearer <token>`` (compared in constant time)."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return error_response(
                401,
                "unauthorized",
                "GET /metrics needs Authorization: Bearer <the metrics token> (WEBHOOK_DSL_METRICS_TOKEN)",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    metrics: ServiceMetrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


class ObservedRuntime(Runtime):
    """The service's runtime: every trigger call it makes (trigger endpoint, tool calls, MCP) is counted in the
    metrics, noted on the request's access line, and carries the request's id into its log record."""

    def __init__(self, store: Store | None, metrics: ServiceMetrics | None, **options: Any) -> None:
        super().__init__(store, **options)
        self.metrics = metrics

    async def call_trigger(
        self,
        trigger: Trigger,
        session_id: str,
        arguments: Mapping[str, Any],
        images: Sequence[str] = (),
        *,
        dry_run: bool = False,
        protected_keys: Iterable[str] = (),
        company_id: str | None = None,
        request_id: str | None = None,
    ) -> TriggerResult:
        note = current_request()
        if request_id is None and note is not None:
            request_id = note.request_id
        call = super().call_trigger(
            trigger,
            session_id,
            arguments,
            images,
            dry_run=dry_run,
            protected_keys=protected_keys,
            company_id=company_id,
            request_id=request_id,
        )
        if dry_run:  # nothing is sent: not a call to count
            return await call
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        category = "error"
        seconds: float | None = None
        try:
            result = await call
            category = result.call.category or "ok"
            if result.call.attempts:
                seconds = result.call.elapsed_ms / 1000
            return result
        except SessionNotFound:
            category = "session_not_found"
            raise
        except StoreUnavailable:
            category = "store_unavailable"
            raise
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.call(trigger.name, category, seconds)
            if note is not None:
                note.add_call(company_id, trigger.name, category)
