"""The in-flight run registry: one record per LangChain run that has started and not ended.

LangChain end/error callbacks carry only ``run_id``, so whatever the start knew (the span, the
context children are parented from) is kept here until the end arrives. A run whose end never
comes (a process that lost a callback, a generator nobody closed) must not be kept forever:
the registry is bounded in count and in age, and an evicted run's span is ended with status
ERROR so it is exported rather than silently lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from callscope._scope import EMPTY, RunHandlers, TraceScope

_log = logging.getLogger("callscope")

# Checking ages on every start would put a clock read on the hot path; every Nth start is enough
# to keep a stale run from outliving its TTL by more than a few runs.
_AGE_CHECK_EVERY = 64

_WARNING_INTERVAL_SECONDS = 60.0

EVICTED_ATTRIBUTE = "callscope.run.evicted"


@dataclass(slots=True, eq=False)
class RunRecord:
    """What callscope keeps about one run between its start and end callbacks."""

    span: Span
    #: The OTel context with this run's span current: the parent of its child runs, and the
    #: context a step body of this run executes in.
    context: Context
    #: The operation family ("chain", "chat", "text_completion", "execute_tool", "retrieval").
    operation: str
    name: str
    scope: TraceScope
    #: True for the first run of a trace: its span carries the trace's "missed" summary.
    owns_scope: bool = False
    handlers: RunHandlers = EMPTY
    #: False when the sampler dropped this run: then ``span`` and ``context`` may be borrowed
    #: from an unsampled parent, and nothing is recorded about the run.
    sampled: bool = True
    parent_run_id: UUID | None = None
    #: LangChain starts this run's children with this run's *own* parent as their parent
    #: (RunnableWithFallbacks, langchain-ai/langchain#36072); see SpanHandler._parent_record.
    loses_children: bool = False
    started_monotonic: float = field(default_factory=time.monotonic)
    first_chunk_monotonic: float | None = None
    chunks: int = 0

    def finish(self) -> None:
        """End the span, and tell processors attached to this component."""
        span = self.span
        if self.owns_scope and span.is_recording():
            span.set_attributes(self.scope.missed_attributes())
        span.end()
        for processor in self.handlers.processors:
            try:
                processor.on_end(span)
            except Exception:
                _log.exception("callscope: span processor %r failed in on_end", processor)


class RunRegistry:
    """A bounded ``run_id -> RunRecord`` map, safe to use from several threads."""

    def __init__(self, *, max_runs: int, ttl_seconds: float) -> None:
        # A plain dict: its single operations are atomic under the GIL (OrderedDict's are not when
        # keys hash in Python), and it keeps insertion order, so the first key is the oldest run.
        self._runs: dict[UUID, RunRecord] = {}
        self._max_runs = max_runs
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._starts = 0
        self._last_warning = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: UUID | None) -> RunRecord | None:
        if run_id is None:
            return None
        return self._runs.get(run_id)

    def add(self, run_id: UUID, record: RunRecord) -> None:
        previous = self._runs.pop(run_id, None)
        if previous is not None:
            # A run id reused while still open (a user-supplied run_id): end the older span
            # rather than orphaning it.
            _end_evicted(previous, "callscope: a new run started with the same run_id")
        self._runs[run_id] = record
        self._starts += 1
        if len(self._runs) > self._max_runs or (self._ttl and self._starts % _AGE_CHECK_EVERY == 0):
            self._evict()

    def pop(self, run_id: UUID) -> RunRecord | None:
        return self._runs.pop(run_id, None)

    def pop_descendants(self, run_id: UUID) -> list[RunRecord]:
        """Remove and return every open run below ``run_id`` (which has itself already ended).

        A scan of the registry: it runs only when a run was stopped from outside, never on the
        path of a normal end, so no run pays for child bookkeeping."""
        below: dict[UUID, bool] = {run_id: True}
        found: list[UUID] = []
        for candidate_id, record in list(self._runs.items()):
            chain: list[UUID] = []
            parent_id: UUID | None = candidate_id
            verdict = False
            while parent_id is not None and len(chain) < 256:  # a bound, should parent links loop
                known = below.get(parent_id)
                if known is not None:
                    verdict = known
                    break
                chain.append(parent_id)
                parent = self._runs.get(parent_id) if parent_id != candidate_id else record
                parent_id = parent.parent_run_id if parent is not None else None
            for link in chain:
                below[link] = verdict
            if verdict:
                found.append(candidate_id)
        return [record for candidate_id in found if (record := self._runs.pop(candidate_id, None)) is not None]

    def clear(self, reason: str = "callscope: instrumentation was removed before this run ended") -> None:
        """End every open run's span as evicted and forget it (uninstrument, process exit)."""
        with self._lock:
            while self._runs:
                record = self._pop_oldest()
                if record is not None:
                    _end_evicted(record, reason)

    def _evict(self) -> None:
        victims: list[RunRecord] = []
        with self._lock:
            while len(self._runs) > self._max_runs:
                victims.append(self._pop_oldest())
            if self._ttl:
                deadline = time.monotonic() - self._ttl
                while (oldest := self._peek_oldest()) is not None:
                    if oldest.started_monotonic > deadline:
                        break
                    victims.append(self._pop_oldest())
        ended = [record for record in victims if record is not None]
        for record in ended:
            _end_evicted(record, "callscope: run evicted, its end callback never arrived")
        self.evicted += len(ended)
        now = time.monotonic()
        # Once a minute at most: a leak of thousands of runs must not become thousands of lines.
        if ended and now - self._last_warning >= _WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            _log.warning(
                "callscope has ended %d run(s) so far whose end callback never arrived "
                "(limits: %d runs in flight, %s); their spans are marked %s=true.",
                self.evicted,
                self._max_runs,
                f"{self._ttl:g}s old" if self._ttl else "no age limit",
                EVICTED_ATTRIBUTE,
            )

    def _peek_oldest(self) -> RunRecord | None:
        for record in self._runs.values():
            return record
        return None

    def _pop_oldest(self) -> RunRecord | None:
        for run_id in self._runs:
            # pop with a default: another thread's end may have removed it meanwhile.
            return self._runs.pop(run_id, None)
        return None


def _end_evicted(record: RunRecord, reason: str) -> None:
    span = record.span
    if span.is_recording():
        span.set_attribute(EVICTED_ATTRIBUTE, True)
        span.set_status(Status(StatusCode.ERROR, reason))
    record.finish()
