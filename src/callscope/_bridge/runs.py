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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import Span, Status, StatusCode

from callscope._attributes import ERROR_MARK, RUN_EVICTED, STREAM_CHUNKS
from callscope._bridge.scope import EMPTY, RunHandlers, TraceScope

_log = logging.getLogger("callscope")

# Checking ages on every start would put a clock read on the hot path; every Nth start is enough
# to keep a stale run from outliving its TTL by more than a few runs.
_AGE_CHECK_EVERY = 64

_WARNING_INTERVAL_SECONDS = 60.0

#: The monotonic clock every run's timing reads. Not ``time.monotonic`` itself: test suites freeze
#: or move the clock (freezegun replaces ``time.monotonic``, and every module attribute that *is*
#: it, with its fake), and a run started on the real clock would then look decades old and be
#: evicted. freezegun leaves this bound wrapper alone; time-machine never mocks the monotonic clock.
monotonic = time.monotonic.__call__


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
    #: Ids of child runs started under this run (some may have ended): see RunRegistry.adopt.
    children: list[UUID] | None = None
    #: LangChain starts this run's children with this run's *own* parent as their parent
    #: (RunnableWithFallbacks, langchain-ai/langchain#36072); see starts.RunStarts.
    loses_children: bool = False
    #: The starting manager's inheritable handlers (LangChain's own list, not copied): what
    #: this run's steps pass down, so a LangChain root started inside one can say what it lost.
    passes_down: Any = None
    #: Labels of the handlers this run lacks because its LangChain root started inside a step
    #: without the step's config (``scope`` "dropped").
    dropped: tuple[str, ...] = ()
    started_monotonic: float = field(default_factory=monotonic)
    first_chunk_monotonic: float | None = None
    chunks: int = 0
    #: The run's GenAI metric attributes while metrics are on and the run is a model, tool or
    #: retrieval run (``metrics``); None means nothing is measured for it.
    metric_attributes: Mapping[str, Any] | None = None
    last_chunk_monotonic: float = 0.0
    #: A model run started by ``stream()``/``astream()`` of a model that streams its request: so
    #: said on its span even when it fails before the first chunk.
    streamed_request: bool = False
    #: The endpoint read from the model itself when LangChain could not serialize it
    #: (``instances``), for metrics that start after it was read.
    model_server: tuple[str, int] | None = None
    #: What this run's config said (``run_config``), for its children to compare theirs with:
    #: the user's tags and metadata, its agent markers (``ls_integration``, ``lc_agent_name``),
    #: the conversation. Not LangChain's metadata dict itself: holding every run's until its end
    #: costs more than reading it again.
    user_tags: frozenset[str] = frozenset()
    user_metadata: Mapping[str, Any] | None = None
    markers: tuple[Any, Any] | None = None
    conversation: str | None = None
    #: LangGraph task -> attempts started, for the node runs under this run (``run_config``).
    node_attempts: dict[str, int] | None = None
    #: An ``agents.AgentRun`` when this run is, or may turn out to be, an agent invocation;
    #: ``in_agent`` is the nearest one at or above this run (the agent its model calls serve).
    agent: Any = None
    in_agent: Any = None

    def add_stream_timing(self, attributes: dict[str, Any]) -> None:
        """Put a streamed run's timing among its span's end attributes (nothing if unstreamed)."""
        if self.first_chunk_monotonic is None:
            return
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_chunk_monotonic - self.started_monotonic
        attributes[STREAM_CHUNKS] = self.chunks

    def finish(self) -> None:
        """End the span, and tell processors attached to this component."""
        span = self.span
        if self.owns_scope and span.is_recording():
            missed = self.scope.missed_attributes()
            if missed:  # the usual root: every handler saw every run
                span.set_attributes(missed)
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
        #: ``get(run_id)``: the dict's own method, so the lookups every callback and step make
        #: cost no Python frame (``None``, for a run without a parent, is never a key).
        self.get: Callable[[UUID | None], RunRecord | None] = self._runs.get  # type: ignore[assignment]
        self._max_runs = max_runs
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._starts = 0
        self._last_warning = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._runs)

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

    def find_by_span(self, span: Span) -> RunRecord | None:
        """The open run whose span is ``span``: a scan, for the rare root started in a thread
        outside LangChain's config context, never on the path of an ordinary run."""
        for record in list(self._runs.values()):
            if record.span is span:
                return record
        return None

    def pop(self, run_id: UUID) -> RunRecord | None:
        return self._runs.pop(run_id, None)

    def adopt(self, parent: RunRecord, child_id: UUID) -> None:
        """Note ``child_id`` as an open child of ``parent``, so that a stopped parent can take
        its unfinished children with it. Append-only on the hot path; ended children are pruned
        whenever the list reaches a power of two, so it stays about the size of the open ones."""
        children = parent.children
        if children is None:
            parent.children = [child_id]
            return
        children.append(child_id)
        count = len(children)
        if count >= 64 and count & (count - 1) == 0:
            # Unlocked: a child appended by another thread during the rebuild can be dropped;
            # it then ends by its own callback or, if LangChain never sends one, by the TTL.
            runs = self._runs
            parent.children = [child for child in children if child in runs]

    def pop_descendants(self, record: RunRecord) -> list[RunRecord]:
        """Remove and return every open run below ``record`` (which has itself already ended)."""
        found: list[RunRecord] = []
        pending = list(record.children or ())
        while pending and len(found) < self._max_runs:  # a bound, should child links ever loop
            child = self._runs.pop(pending.pop(), None)
            if child is not None:
                found.append(child)
                pending.extend(child.children or ())
        return found

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
                deadline = monotonic() - self._ttl
                while (oldest := self._peek_oldest()) is not None:
                    if oldest.started_monotonic > deadline:
                        break
                    victims.append(self._pop_oldest())
        ended = [record for record in victims if record is not None]
        for record in ended:
            _end_evicted(record, "callscope: run evicted, its end callback never arrived")
        self.evicted += len(ended)
        now = monotonic()
        # Once a minute at most: a leak of thousands of runs must not become thousands of lines.
        if ended and now - self._last_warning >= _WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            _log.warning(
                "callscope has ended %d run(s) so far whose end callback never arrived "
                "(limits: %d runs in flight, %s); their spans are marked %s=true.",
                self.evicted,
                self._max_runs,
                f"{self._ttl:g}s old" if self._ttl else "no age limit",
                RUN_EVICTED,
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
        span.set_attributes({RUN_EVICTED: True, ERROR_MARK: True})
        span.set_status(Status(StatusCode.ERROR, reason))
    record.finish()
