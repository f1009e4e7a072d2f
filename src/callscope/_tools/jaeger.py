"""Reading traces back from Jaeger v2's query API, for ``callscope tree --jaeger``.

Jaeger v2 answers ``/api/v3`` in OTLP/JSON (hex ids, see :mod:`callscope._tools.otlp_json`):

- ``GET /api/v3/traces/{trace_id}``: one trace, ``{"result": {"resourceSpans": [...]}}``;
- ``GET /api/v3/traces?query.service_name=…&query.start_time_min=…&query.start_time_max=…
  &query.num_traces=N``: up to N traces of a service in a time window, the ones stored last,
  every span of every trace in one ``result`` (the times are RFC 3339; without ``num_traces``
  the in-memory store answers 500);
- ``GET /api/v3/services``: ``{"services": [...]}``.

An unknown trace, and a search that finds nothing, are HTTP 404 with
``{"error": {"httpCode": 404, "message": "No traces found"}}`` (as text/plain, like every
error; successful answers carry no JSON content type either, so the body decides).

Only the UI's older API searches by tag (``/api/v3``'s HTTP search drops attributes):
``GET /api/traces?service=…&tags={"key":"value"}&start=…&end=…&limit=N`` (times in
microseconds since the epoch) answers ``{"data": [{"traceID": …, "spans": [{"startTime": …},
…]}, …], "errors": null}``, each trace whole in Jaeger's own span format; finding nothing, an
unknown service included, is an empty list, and an error is ``{"errors": [{"msg": …}]}``. A tag
matches by key and the value's string form (``true`` for a boolean) on a span's, its
resource's or one of its events' attributes. Jaeger 2.13's in-memory store matches neither an
event's name nor, by ``error=true``, status ERROR (it reads the string "true" as a boolean and
gets false): callscope's scalar markers are what it can find.

>>> jaeger = Jaeger("http://localhost:16686")
>>> jaeger.services()  # doctest: +SKIP
['callscope-demo']
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from callscope._exceptions import CallscopeError
from callscope._tools.otlp_json import SpansRead, TraceDataError, parse_document

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "Jaeger", "JaegerNotFoundError", "JaegerUnavailableError", "search_depth"]

DEFAULT_TIMEOUT_SECONDS = 5.0
#: How many traces a search asks for, for ``limit`` shown (see :meth:`Jaeger.search`).
SEARCH_DEPTH_FACTOR = 10
MIN_SEARCH_DEPTH = 50
#: Past this the extra depth stops: a search deeper than the store's ``max_traces`` (100 000 in
#: the all-in-one configuration) is refused with HTTP 500.
MAX_EXTRA_DEPTH = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_START_HINT = "start it with `docker compose up -d` or `deploy/jaeger.sh`, or pass the right --jaeger URL"


class JaegerUnavailableError(CallscopeError):
    """Jaeger could not be reached, timed out, or answered with something that is not its API."""


class JaegerNotFoundError(CallscopeError):
    """Jaeger answered, but has no such trace, no such service, or no traces in the window."""


class _NotFound(Exception):
    """An HTTP 404 from Jaeger: the caller knows what was not found."""


class Jaeger:
    """A Jaeger v2 query service at ``base_url`` (e.g. ``http://localhost:16686``)."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def trace(self, trace_id: str) -> SpansRead:
        """Every span of the trace with this 32-digit hex id."""
        try:
            document = self._get(f"/api/v3/traces/{trace_id}")
        except _NotFound:
            raise JaegerNotFoundError(
                f"trace {trace_id} not found in Jaeger at {self.base_url}; check the id, "
                "or wait a few seconds (spans are sent in batches) and retry"
            ) from None
        return self._spans(document, f"/api/v3/traces/{trace_id}")

    def search(
        self,
        service: str,
        *,
        since: timedelta,
        limit: int,
        tags: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> SpansRead:
        """The spans of traces of ``service`` that started in the last ``since``, more traces than
        ``limit``: sort them by start time and keep the ``limit`` newest. With ``tags``, only
        traces in which each tag is on some span, at most ``limit`` of them (see :meth:`_tagged`).

        ``num_traces`` is a search depth, not an order: Jaeger answers the N traces it *stored*
        last, and its in-memory store files the traces of one incoming batch in random order (a
        Go map). Asking for exactly ``limit`` would miss a newer trace that came in the same
        batch as an older one, so this asks for more (:func:`search_depth`): exact unless one
        batch brought more traces than that.
        """
        end = now or datetime.now(timezone.utc)
        if tags:
            return self._tagged(service, tags, since=since, limit=limit, end=end)
        query = urllib.parse.urlencode(
            {
                "query.service_name": service,
                "query.start_time_min": _rfc3339(end - since),
                "query.start_time_max": _rfc3339(end),
                "query.num_traces": str(search_depth(limit)),
            }
        )
        try:
            document = self._get(f"/api/v3/traces?{query}")
        except _NotFound:
            raise self._none_found(service, since, {}) from None
        return self._spans(document, "/api/v3/traces")

    def _tagged(self, service: str, tags: Mapping[str, str], *, since: timedelta, limit: int, end: datetime) -> SpansRead:
        """Jaeger finds the traces by tag; the newest ``limit`` of them by start time are then read
        whole from ``/api/v3``, so the tree gets what it gets without tags.

        One search per tag: within one search Jaeger's in-memory store wants every tag on one
        span, and the facts callscope marks sit on different spans of a trace (the root, the run
        that dropped its config). Each search is as deep as :meth:`search`'s.
        """
        first, *others = (
            self._trace_starts(service, {key: value}, since=since, depth=search_depth(limit), end=end) for key, value in tags.items()
        )
        starts = {trace_id: start for trace_id, start in first.items() if all(trace_id in other for other in others)}
        newest = sorted(starts, key=starts.__getitem__, reverse=True)[:limit]
        resource_spans: list[Any] = []
        for trace_id in newest:
            try:
                document = self._get(f"/api/v3/traces/{trace_id}")
            except _NotFound:
                continue  # dropped since the search: the in-memory store keeps the newest max_traces
            result = document.get("result") if isinstance(document, Mapping) else None
            trace = result.get("resourceSpans") if isinstance(result, Mapping) else None
            if not isinstance(trace, list):
                raise self._not_jaeger(f"/api/v3/traces/{trace_id}")
            resource_spans.extend(trace)
        if not resource_spans:
            raise self._none_found(service, since, tags)
        return self._spans({"resourceSpans": resource_spans}, "/api/v3/traces/{id}")

    def _trace_starts(
        self, service: str, tags: Mapping[str, str], *, since: timedelta, depth: int, end: datetime
    ) -> dict[str, int]:
        """The 32-digit ids of the traces ``GET /api/traces`` finds, each with its start (µs)."""
        path = "/api/traces?" + urllib.parse.urlencode(
            {
                "service": service,
                "tags": json.dumps(dict(tags), separators=(",", ":")),
                "start": str(_microseconds(end - since)),
                "end": str(_microseconds(end)),
                "limit": str(depth),
            }
        )
        try:
            document = self._get(path)
        except _NotFound:
            raise self._not_jaeger("/api/traces") from None
        traces = document.get("data") if isinstance(document, Mapping) else None
        if not isinstance(traces, list):
            raise self._not_jaeger("/api/traces")
        starts: dict[str, int] = {}
        for trace in traces:
            trace_id = trace.get("traceID") if isinstance(trace, Mapping) else None
            spans = trace.get("spans") if isinstance(trace, Mapping) else None
            if not isinstance(trace_id, str) or not isinstance(spans, list):
                raise self._not_jaeger("/api/traces")
            times = [span.get("startTime") for span in spans if isinstance(span, Mapping)]
            # Jaeger's own ids drop a zero high half: 16 digits where OTLP has 32.
            starts[trace_id.lower().zfill(32)] = min((t for t in times if isinstance(t, int)), default=0)
        return starts

    def _none_found(self, service: str, since: timedelta, tags: Mapping[str, str]) -> JaegerNotFoundError:
        services = self.services()
        if service not in services:
            known = ", ".join(services[:10]) + (", ..." if len(services) > 10 else "")
            return JaegerNotFoundError(
                f"Jaeger at {self.base_url} has no service {service!r} "
                + (f"(it has: {known}); pass one of those" if services else "(it has none yet); export some spans first")
            )
        matching = " with " + " and ".join(f"{key}={value}" for key, value in tags.items()) if tags else ""
        return JaegerNotFoundError(
            f"no traces of {service!r}{matching} started in the last {_span_text(since)} in Jaeger at {self.base_url}; "
            "widen the window with --since, e.g. --since 24h"
        )

    def services(self) -> list[str]:
        """The names of the services Jaeger holds spans of, sorted."""
        try:
            document = self._get("/api/v3/services")
        except _NotFound:
            raise self._not_jaeger("/api/v3/services") from None
        services = document.get("services", []) if isinstance(document, Mapping) else None
        if not isinstance(services, list) or not all(isinstance(name, str) for name in services):
            raise self._not_jaeger("/api/v3/services")
        return sorted(services)

    # --- plumbing ---------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        url = self.base_url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            body = _get_within(request, self.timeout)
        except urllib.error.HTTPError as error:
            if error.code == 404 and _error_message(error, default="?"):
                raise _NotFound from None
            if error.code == 404:
                raise JaegerUnavailableError(
                    f"{url} answered HTTP 404 without Jaeger's error body, so {self.base_url} is not Jaeger v2's "
                    "query API; pass its query port, e.g. http://localhost:16686"
                ) from None
            message = _error_message(error)
            raise JaegerUnavailableError(
                f"Jaeger at {self.base_url} answered HTTP {error.code} for {url}"
                + (f" ({message})" if message else "")
                + "; check that the URL is Jaeger v2's query port (16686) and look at Jaeger's log"
            ) from None
        except (TimeoutError, socket.timeout):
            raise self._timed_out() from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise self._timed_out() from None
            raise JaegerUnavailableError(
                f"cannot reach Jaeger at {self.base_url} ({getattr(reason, 'strerror', None) or reason}); {_START_HINT}"
            ) from None
        try:
            return json.loads(body)
        except ValueError:
            raise JaegerUnavailableError(
                f"{url} did not return JSON; pass Jaeger v2's query base URL, e.g. http://localhost:16686"
            ) from None

    def _spans(self, document: Any, path: str) -> SpansRead:
        try:
            return parse_document(document)
        except TraceDataError:
            raise self._not_jaeger(path) from None

    def _not_jaeger(self, path: str) -> JaegerUnavailableError:
        return JaegerUnavailableError(
            f"{self.base_url}{path} did not answer like Jaeger v2's API; "
            "pass Jaeger v2's query base URL, e.g. http://localhost:16686 (Jaeger v1 has no /api/v3)"
        )

    def _timed_out(self) -> JaegerUnavailableError:
        return JaegerUnavailableError(
            f"Jaeger at {self.base_url} did not answer within {self.timeout:g}s; check that it is up "
            "(`docker compose ps`, or the terminal running `deploy/jaeger.sh`)"
        )


def search_depth(limit: int) -> int:
    """``num_traces`` for showing ``limit`` traces: ten times as many, at least 50, and no more
    than 1000 unless ``limit`` itself is more.

    >>> search_depth(1), search_depth(5), search_depth(300), search_depth(5000)
    (50, 50, 1000, 5000)
    """
    return min(max(SEARCH_DEPTH_FACTOR * limit, MIN_SEARCH_DEPTH), max(limit, MAX_EXTRA_DEPTH))


def _error_message(error: urllib.error.HTTPError, *, default: str = "") -> str:
    """Jaeger's own error message (``{"error": {"message": …}}``); ``default`` for an error
    body of Jaeger's shape without a message, "" when the body is not Jaeger's (any server
    answers 404, only Jaeger with that body)."""
    try:
        document = json.loads(error.read(4096))
    except (ValueError, OSError):
        return ""
    if not isinstance(document, Mapping):
        return ""
    details = document.get("error")
    if not isinstance(details, Mapping):  # /api/traces says {"errors": [{"code": …, "msg": …}]}
        errors = document.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if not isinstance(first, Mapping):
            return ""
        details = {"message": first.get("msg")}
    message = details.get("message")
    return " ".join(str(message).split())[:200] if message else default


def _get_within(request: urllib.request.Request, seconds: float) -> bytes:
    """The response body, or TimeoutError once ``seconds`` have passed in all. urlopen's timeout
    bounds each socket read, so a server trickling a byte at a time would never trip it; the
    request runs on a daemon thread that is left behind if it overruns."""
    outcome: list[bytes | BaseException] = []

    def fetch() -> None:
        try:
            with urllib.request.urlopen(request, timeout=seconds) as response:
                outcome.append(response.read())
        except BaseException as error:  # handed to the caller's thread
            outcome.append(error)

    worker = threading.Thread(target=fetch, name="callscope-jaeger", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise TimeoutError
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _rfc3339(moment: datetime) -> str:
    # Jaeger parses these with Go's time.RFC3339Nano: a "Z" or numeric offset is required.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _microseconds(moment: datetime) -> int:
    """Microseconds since the epoch, as ``/api/traces`` takes its times."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _span_text(since: timedelta) -> str:
    seconds = int(since.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
