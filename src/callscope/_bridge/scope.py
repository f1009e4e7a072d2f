"""The scope model: which callback handlers receive a run's events, and how they got there.

LangChain gives a run the handlers of the callback manager that starts it. Of those, the ones in
the manager's ``inheritable_handlers`` came from the call (``config={"callbacks": ...}``) or an
enclosing ``with_config`` and reach every child run: they are *inherited*. The others were given
to this component's constructor and reach only its own run: they are *local*.

The starting manager is not passed to callback handlers: the start probe (``probe``) publishes
it while its ``on_*_start`` runs. Handlers are labelled per OpenTelemetry trace (``labels``).
``TraceScope`` holds one root's reference to those labels and, for the root's span, which of its
runs each handler saw and missed: a trace with two LangChain roots has one summary on each root,
about its own runs.

**Why a handler missed a run.** Each miss has one reason, each derived from what LangChain's
managers held and delivered:

- ``filtered``: the handler was on the run's manager, but its ``ignore_*`` flag for the run's
  type kept the run from it (known at the run's start);
- ``dropped``: the run's LangChain root started inside a traced step (a lambda, tool or node
  body, or a worker thread the step's OTel context was carried into) without the step's config,
  so handlers the step passed down never reached it (known at the run's start);
- ``subtree``: an inherited handler that some other run of this root received, passed down on
  another subtree (``with_config(callbacks=...)`` on a sibling, a runtime handler given to a
  nested call);
- ``scope``: a handler only ever given to constructors (it sees those components' own runs).

``subtree`` and ``scope`` are facts about the root's runs taken together, not about one run (the
model whose constructor handler the prompt missed starts after the prompt ended), so they are
given in the root's summary; each span carries the per-run facts (its ``local``, ``inherited``,
``filtered`` and ``dropped`` handlers), from which ``callscope tree`` derives each cell by the
same rule. A handler that received an event and raised (``failed``) is recorded where it
happened: an event on the run's span and a line in the summary (see ``failures.HandlerFailures``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config

from callscope._attributes import (
    HANDLERS_FILTERED,
    HANDLERS_INHERITED,
    HANDLERS_LOCAL,
    HANDLERS_MISSED,
    HANDLERS_MISSED_PREFIX,
    MISSED_BY_PREFIX,
)
from callscope._bridge.dispatch import is_callscope
from callscope._bridge.labels import MAX_LABELS_PER_TRACE, TraceLabels
from callscope._bridge.plumbing import is_plumbing

#: Why a handler missed a run, and the fix, in one phrase each.
SCOPE, SUBTREE, FILTERED_REASON, DROPPED_REASON, FAILED_REASON = "scope", "subtree", "filtered", "dropped", "failed"
FIXES = {
    SCOPE: "pass it at run time, config={'callbacks': [...]}, to see the whole chain",
    SUBTREE: "pass it to the outermost call, config={'callbacks': [...]}, to see the whole chain",
    FILTERED_REASON: "unset the flag to receive these runs",
    DROPPED_REASON: "pass `config` to the nested `invoke` (into the thread, too)",
    FAILED_REASON: "fix the handler; LangChain logged the error and went on without it",
}
_FIX_ABORTED = "fix the handler; with raise_error=True its error aborted the run"

_MAX_TRACKED_RUNS = 1000
_MAX_LISTED_MISSES = 32
_MAX_FAILURES_PER_TRACE = 64

#: The LangChain callback condition that decides whether a handler receives each operation.
IGNORE_CONDITION = {
    "chain": "ignore_chain",
    "chat": "ignore_chat_model",
    "text_completion": "ignore_llm",
    "execute_tool": "ignore_agent",
    "retrieval": "ignore_retriever",
    "custom_event": "ignore_custom_event",
}


@dataclass(frozen=True, slots=True)
class RunHandlers:
    """The handlers one run's events reach, as labels, plus processors attached to it."""

    local: tuple[str, ...] = ()
    inherited: tuple[str, ...] = ()
    processors: tuple[Any, ...] = ()
    #: On the manager, but an ``ignore_*`` flag for this run's type kept the run from them.
    filtered: tuple[str, ...] = ()

    def received(self, label: str) -> bool:
        return label in self.local or label in self.inherited

    def add_to(self, attributes: dict[str, Any]) -> None:
        """Put these labels among a span's or a span event's attributes (empty lists left out)."""
        if self.local:
            attributes[HANDLERS_LOCAL] = self.local
        if self.inherited:
            attributes[HANDLERS_INHERITED] = self.inherited
        if self.filtered:
            attributes[HANDLERS_FILTERED] = self.filtered


EMPTY = RunHandlers()


#: What the root's summary needs of one run under it: a plain tuple, built on every run.
#: (name, operation, handlers, dropped labels, run id: a handler failure reported after the
#: run's span ended is attributed to the run by its id, a scan on failures only.)
_Run = tuple[str, str, RunHandlers, tuple[str, ...], Any]


@dataclass(slots=True, eq=False)
class TraceScope:
    """The handler labels of the trace a LangChain root run belongs to and, for that root's
    span, which runs under it each handler saw and missed, why, and which callbacks failed."""

    include_plumbing: bool = False
    labels: TraceLabels = field(default_factory=TraceLabels)
    _runs: list[_Run] = field(default_factory=list)
    _untracked_runs: int = 0
    #: The labels on a manager of a run under this root, in order of first appearance.
    _seen: dict[str, None] = field(default_factory=dict)
    #: label -> the step a LangChain root under this root started in without its config.
    _dropped_in: dict[str, str] = field(default_factory=dict)
    #: (label, callback, run name, error type), bounded; then a count of the rest.
    _failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    _untracked_failures: int = 0
    #: run id -> (labels of the handlers that failed in its callbacks, failure events on its
    #: span): kept here, not on the run's record, so that runs nothing fails in pay nothing.
    _failed_runs: dict[Any, tuple[tuple[str, ...], int]] = field(default_factory=dict)

    def label(self, handler: Any) -> str:
        return self.labels.label(handler)

    def handlers_of(self, manager: Any, operation: str) -> RunHandlers:
        """Classify ``manager``'s handlers for a run of ``operation``; computed once per run."""
        handlers = getattr(manager, "handlers", None)
        if not handlers:
            return EMPTY
        inheritable = getattr(manager, "inheritable_handlers", None) or ()
        ignore = IGNORE_CONDITION.get(operation)
        local: list[str] = []
        inherited: list[str] = []
        processors: list[Any] = []
        filtered: list[str] | None = None
        for handler in handlers:
            if is_callscope(handler):
                attached = getattr(handler, "_callscope_processors", None)
                # A processor carrier in constructor scope reaches this component's own run only.
                if attached and not contains(inheritable, handler):
                    processors.extend(attached)
                continue
            if not self.include_plumbing and is_plumbing(handler):
                continue
            if ignore and getattr(handler, ignore, False):
                # LangChain's handle_event skips it for this event: the same test, the same flag.
                if filtered is None:
                    filtered = []
                filtered.append(self.label(handler))
                continue
            (inherited if contains(inheritable, handler) else local).append(self.label(handler))
        if not (local or inherited or processors or filtered):
            return EMPTY
        return RunHandlers(tuple(local), tuple(inherited), tuple(processors), tuple(filtered) if filtered else ())

    def lost_on_the_way(self, passed_down: Any, manager: Any, received: RunHandlers, already: tuple[str, ...]) -> tuple[str, ...]:
        """Labels of the handlers a step passed down (``passed_down``, its manager's inheritable
        handlers) that a LangChain root started inside it does not have (``manager``), plus the
        ones its own root had already lost (``already``)."""
        handlers = getattr(manager, "handlers", None) or ()
        lost: list[str] = []
        for handler in passed_down or ():
            if is_callscope(handler) or contains(handlers, handler):
                continue
            if not self.include_plumbing and is_plumbing(handler):
                continue
            lost.append(self.label(handler))
        lost.extend(label for label in already if not received.received(label) and label not in received.filtered)
        return tuple(dict.fromkeys(lost))

    def record_run(
        self,
        name: str,
        operation: str,
        handlers: RunHandlers,
        dropped: tuple[str, ...] = (),
        run_id: Any = None,
    ) -> None:
        if handlers is not EMPTY:
            seen = self._seen
            for label in handlers.local + handlers.inherited + handlers.filtered:
                if label not in seen and len(seen) < MAX_LABELS_PER_TRACE:
                    seen[label] = None
        if len(self._runs) < _MAX_TRACKED_RUNS:
            # The RunHandlers themselves, not a set built from them: membership is asked only
            # once, when the root ends, and most runs are never asked about at all.
            self._runs.append((name, operation, handlers, dropped, run_id))
        else:
            self._untracked_runs += 1

    def run_named(self, run_id: Any) -> str | None:
        """The name of a run under this root, most recent first; None if not tracked."""
        for name, _, _, _, recorded_id in reversed(self._runs):
            if recorded_id == run_id:
                return name
        return None

    def record_dropped(self, step: str, labels: tuple[str, ...]) -> None:
        for label in labels:
            if len(self._dropped_in) < MAX_LABELS_PER_TRACE:
                self._dropped_in.setdefault(label, step)

    def failed_on(self, run_id: Any) -> tuple[tuple[str, ...], int]:
        """(labels, events) of the failures recorded on a run's span so far."""
        return self._failed_runs.get(run_id, ((), 0))

    def set_failed_on(self, run_id: Any, labels: tuple[str, ...], events: int) -> None:
        if run_id in self._failed_runs or len(self._failed_runs) < _MAX_FAILURES_PER_TRACE:
            self._failed_runs[run_id] = (labels, events)

    def record_failure(self, label: str, callback: str, run: str, error_type: str) -> None:
        if label not in self._seen and len(self._seen) < MAX_LABELS_PER_TRACE:
            self._seen[label] = None
        if len(self._failures) < _MAX_FAILURES_PER_TRACE:
            self._failures.append((label, callback, run, error_type))
        else:
            self._untracked_failures += 1

    def missed_attributes(self) -> dict[str, Any]:
        """Root-span attributes: for every handler on a manager under this root, the runs under
        this root it missed, grouped by reason with the fix, and the callbacks it failed in."""
        total = len(self._runs)
        failures: dict[str, list[tuple[str, str, str]]] = {}
        for label, callback, run_name, error_type in self._failures:
            failures.setdefault(label, []).append((callback, run_name, error_type))
        # The runs where each label was given to a constructor, and the first run that inherited
        # it (its subtree's top: runs start after their parents); built only once a miss needs it.
        local_in: dict[str, dict[str, None]] = {}
        inherited_from: dict[str, str] = {}
        summary: list[str] = []
        attributes: dict[str, Any] = {}
        for label in self._seen:
            if label not in failures:
                for run in self._runs:
                    handlers = run[2]
                    if label not in handlers.local and label not in handlers.inherited:
                        break
                else:
                    continue  # the common case: it received every run, and never failed
            if not local_in and not inherited_from:
                for name, _, handlers, _, _ in self._runs:
                    for received in handlers.local:
                        local_in.setdefault(received, {})[name] = None
                    for received in handlers.inherited:
                        inherited_from.setdefault(received, name)
            by_reason, flags, missed = self._misses_of(label, inherited_from)
            failed = failures.get(label, [])
            if not missed and not failed:
                continue
            parts = [f"{label} saw {total - len(missed)} of {total} runs"]
            for reason in (SCOPE, SUBTREE, FILTERED_REASON, DROPPED_REASON):
                names = by_reason.get(reason)
                if names:
                    parts.append(f"{reason}: missed {', '.join(_counted(names))} ({self._why(reason, label, local_in, inherited_from, flags)}; fix: {FIXES[reason]})")
            if failed:
                parts.append(_failed_part(failed))
            if missed:
                listed = missed[:_MAX_LISTED_MISSES]
                if len(missed) > len(listed):
                    listed.append(f"… {len(missed) - len(listed)} more")
                attributes[HANDLERS_MISSED_PREFIX + label] = tuple(listed)
                attributes[MISSED_BY_PREFIX + label] = True
            summary.append("; ".join(parts))
        if summary:
            if self._untracked_runs:
                summary.append(f"({self._untracked_runs} further runs not tracked)")
            if self._untracked_failures:
                summary.append(f"({self._untracked_failures} further handler failures not listed)")
            attributes[HANDLERS_MISSED] = tuple(summary)
        return attributes

    def _misses_of(self, label: str, inherited_from: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, None], list[str]]:
        """The runs under this root ``label`` missed: by reason, the ``ignore_*`` flags that
        filtered them, and all of them in order."""
        by_reason: dict[str, list[str]] = {}
        flags: dict[str, None] = {}
        missed: list[str] = []
        for name, operation, handlers, dropped, _ in self._runs:
            if label in handlers.local or label in handlers.inherited:
                continue
            if label in handlers.filtered:
                reason = FILTERED_REASON
                flags[IGNORE_CONDITION.get(operation, "ignore_*")] = None
            elif label in dropped:
                reason = DROPPED_REASON
            elif label in inherited_from:
                reason = SUBTREE
            else:
                reason = SCOPE
            by_reason.setdefault(reason, []).append(name)
            missed.append(name)
        return by_reason, flags, missed

    def _why(self, reason: str, label: str, local_in: dict[str, dict[str, None]], inherited_from: dict[str, str], flags: dict[str, None]) -> str:
        if reason == SCOPE:
            owners = list(local_in.get(label, {}))
            if not owners:
                return "a constructor callback of a component outside these runs"
            more = f" and {len(owners) - 3} more" if len(owners) > 3 else ""
            return f"a constructor callback of {', '.join(owners[:3])}{more}"
        if reason == SUBTREE:
            return f"passed down from {inherited_from[label]} only"
        if reason == FILTERED_REASON:
            return f"{' / '.join(f'{flag}=True' for flag in flags)} on the handler"
        step = self._dropped_in.get(label)
        return f"started in {step} without its config" if step else "started without its caller's config"


def contains(handlers: Any, handler: Any) -> bool:
    """Identity membership: LangChain dedups handlers by identity, and a handler's __eq__ is
    user code."""
    for other in handlers:
        if other is handler:
            return True
    return False


def _failed_part(failed: list[tuple[str, str, str]]) -> str:
    """The summary's phrase for the callbacks a handler raised in: (callback, run, error type)."""
    events = [f"{callback} of {run_name} ({error_type})" for callback, run_name, error_type in failed]
    fix = _FIX_ABORTED if any(", aborted" in error_type for _, _, error_type in failed) else FIXES[FAILED_REASON]
    return f"{FAILED_REASON}: raised in {', '.join(_counted(events))} (fix: {fix})"


def _counted(names: Iterable[str]) -> list[str]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    listed = [name if n == 1 else f"{name} ×{n}" for name, n in counts.items()]
    if len(listed) > _MAX_LISTED_MISSES:
        rest = sum(list(counts.values())[_MAX_LISTED_MISSES:])
        listed = [*listed[:_MAX_LISTED_MISSES], f"… {rest} more"]
    return listed


def step_manager() -> Any:
    """The callback manager LangChain's config context holds for the current step, if any: the
    child manager of the run that owns the step."""
    config = var_child_runnable_config.get()
    return config.get("callbacks") if config else None
