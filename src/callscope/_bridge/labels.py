"""Handler labels, per OpenTelemetry trace: the class name, then ``#2``, ``#3`` … for further
distinct instances of the same class, in order of first appearance (``TraceLabels``), shared by
every LangChain root run in that trace (``LabelsByTrace``), so that two chains run under one
caller span (a web request running two chains) number their handlers together.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import get_current_span

#: Distinct handlers labelled per trace; the rest share ``<class>#+``.
MAX_LABELS_PER_TRACE = 256
_MAX_TRACES_REMEMBERED = 4096
_LABEL_LOCK = threading.Lock()
#: Told each trace's labels once its trace id is known (``callscope.testing`` maps a handler
#: instance to its label in each trace through them); empty otherwise.
_watchers: list[Callable[[int, TraceLabels], None]] = []


def watch(callback: Callable[[int, TraceLabels], None]) -> None:
    """Call ``callback(trace_id, labels)`` for the labels of each trace that starts from now on."""
    _watchers.append(callback)


def unwatch(callback: Callable[[int, TraceLabels], None]) -> None:
    if callback in _watchers:
        _watchers.remove(callback)


def _tell_watchers(trace_id: int, labels: TraceLabels) -> None:
    for callback in list(_watchers):
        callback(trace_id, labels)


class TraceLabels:
    """The handler labels of one OpenTelemetry trace: the class name, then ``#2``, ``#3`` … for
    further distinct instances of the class, in order of first appearance.

    Bounded whatever the trace's length: a labelled handler is held by weak reference (its label
    is forgotten when it is collected, so a new object reusing its ``id`` is labelled afresh),
    and past ``MAX_LABELS_PER_TRACE`` distinct handlers the rest share ``<class>#+``.
    """

    __slots__ = ("_labels", "_per_class", "_keep")

    def __init__(self) -> None:
        self._labels: dict[int, str] = {}
        self._per_class: dict[str, int] = {}
        #: Weak references (or, for objects that take none, the objects) that keep ids unique.
        self._keep: dict[int, Any] = {}

    def label(self, handler: Any) -> str:
        key = id(handler)
        label = self._labels.get(key)
        if label is None:
            # Parallel branches run in threads and may meet a new handler at the same moment;
            # numbering must happen once per handler.
            with _LABEL_LOCK:
                label = self._labels.get(key)
                if label is None:
                    name = type(handler).__name__
                    if len(self._labels) >= MAX_LABELS_PER_TRACE:
                        return f"{name}#+"
                    count = self._per_class.get(name, 0) + 1
                    self._per_class[name] = count
                    label = name if count == 1 else f"{name}#{count}"
                    self._labels[key] = label
                    try:
                        self._keep[key] = weakref.ref(handler, functools.partial(self._forget, key))
                    except TypeError:  # a handler class with __slots__ and no __weakref__
                        self._keep[key] = handler
        return label

    def label_of(self, handler: Any) -> str | None:
        """The label ``handler`` was given in this trace, or ``None`` if it met none of its runs."""
        kept = self._keep.get(id(handler))
        if kept is None:
            return None
        owner = kept() if isinstance(kept, weakref.ref) else kept
        return self._labels.get(id(handler)) if owner is handler else None

    def _forget(self, key: int, ref: Any) -> None:
        # Called by the garbage collector, possibly while this thread holds _LABEL_LOCK: no lock
        # here, only single dict operations (atomic under the GIL). The collected object died
        # before any new object could take its id, so the entry is still its own.
        if self._keep.get(key) is ref:
            self._labels.pop(key, None)
            self._keep.pop(key, None)


class LabelsByTrace:
    """Which ``TraceLabels`` a new LangChain root run uses: the one of the OpenTelemetry trace it
    starts in, so that two chains run under one caller span (a web request running two chains)
    number their handlers together. Holds the most recent ``max_traces`` traces only."""

    def __init__(self, max_traces: int = _MAX_TRACES_REMEMBERED) -> None:
        self._by_trace: dict[int, TraceLabels] = {}
        self._max_traces = max_traces

    def for_new_root(self) -> TraceLabels:
        parent = get_current_span().get_span_context()
        if not parent.is_valid:
            return TraceLabels()  # the root starts a trace of its own
        labels = self._by_trace.get(parent.trace_id)
        if labels is None:
            with _LABEL_LOCK:
                labels = self._by_trace.get(parent.trace_id)
                if labels is None:
                    labels = self._by_trace[parent.trace_id] = TraceLabels()
                    self._forget_oldest()
                    if _watchers:
                        _tell_watchers(parent.trace_id, labels)
        return labels

    def remember(self, trace_id: int, labels: TraceLabels) -> None:
        """Record the labels of a root that started its own trace: a root started later in that
        trace without a callscope run around it (inside a model's provider code, say) shares them."""
        if self._by_trace.get(trace_id) is not None:
            return
        with _LABEL_LOCK:
            if self._by_trace.setdefault(trace_id, labels) is labels:
                self._forget_oldest()
                if _watchers:
                    _tell_watchers(trace_id, labels)

    def forget(self, trace_id: int, labels: TraceLabels) -> None:
        """The root that started trace ``trace_id`` has ended: no run can start in that trace any
        more, so its labels need not be kept (traces under an application's span stay, bounded,
        since the application may run another chain in them)."""
        if self._by_trace.get(trace_id) is labels:
            with _LABEL_LOCK:
                if self._by_trace.get(trace_id) is labels:
                    del self._by_trace[trace_id]

    def _forget_oldest(self) -> None:
        while len(self._by_trace) > self._max_traces:
            del self._by_trace[next(iter(self._by_trace))]
