"""What ``callscope run`` starts inside every Python process of the command it runs.

``callscope run`` puts ``run_site/`` first on the command's ``PYTHONPATH``; the
``sitecustomize`` there calls :func:`start` before the process runs its own code, the way
``opentelemetry-instrument`` starts its own. Every Python process the command starts inherits
it: the script, ``python -m``, pytest and its xdist workers, uvicorn and its workers.

:func:`start` builds the tracer provider :func:`callscope.configure` would (``OTEL_*``, so an
OTLP endpoint still gets the spans too) with the trace file ``CALLSCOPE_TRACE_FILE`` names, and
instruments LangChain. It never raises into the application: a failure is one line on stderr
and the command runs untraced.

Two things the application itself could otherwise lose:

- a process ended by SIGTERM with Python's default handler dies without running ``atexit``, so
  the spans still queued in the batch processor would never reach the file: while the default is
  in place, a handler ends the open runs, flushes, and then dies by the same signal, so the
  command's exit status is what it would be without callscope;
- OpenTelemetry lets the global tracer provider be set once. An application that sets its own
  after this one is refused by OpenTelemetry (its exporters then receive nothing); that is said
  once, on stderr, with what to do instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from callscope.environment_variables import CALLSCOPE_TRACE_FILE

#: Set by ``callscope run`` for the processes of its command; nothing happens without it.
RUN_ENV = "CALLSCOPE_RUN"
#: The service name ``callscope run`` suggests (the command's name), unless ``OTEL_*`` names one.
SERVICE_ENV = "CALLSCOPE_RUN_SERVICE"
#: How long a SIGTERM waits for the queued spans to reach the file.
_FLUSH_ON_SIGTERM_MS = 5000

_started = False


def start() -> None:
    """Trace this process for ``callscope run``: once, and only under ``CALLSCOPE_RUN=1``."""
    global _started
    if _started or os.environ.get(RUN_ENV) != "1":
        return
    _started = True
    try:
        from opentelemetry import trace

        from callscope._bridge.export import configure
        from callscope._bridge.instrumentor import CallscopeInstrumentor

        provider = configure(service_name=os.environ.get(SERVICE_ENV) or None)
        CallscopeInstrumentor().instrument()
        _say_when_the_application_sets_its_own_provider(trace, provider)
        _flush_before_sigterm(provider)
    except Exception as error:  # the application must run, traced or not
        _say(f"could not trace this process ({type(error).__name__}: {error}); the command runs untraced")


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"callscope run: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass  # no stderr (a daemon, a closed pipe): nothing to tell


def _say_when_the_application_sets_its_own_provider(trace: Any, ours: Any) -> None:
    original = trace.set_tracer_provider
    told = threading.Event()

    def set_tracer_provider(tracer_provider: Any) -> None:
        if tracer_provider is not ours and not told.is_set():
            told.set()
            file = os.environ.get(CALLSCOPE_TRACE_FILE, "the trace file")
            _say(
                "the application set its own OpenTelemetry tracer provider, and OpenTelemetry keeps the "
                f"first one set, callscope run's: every span still reaches {file}, but the application's "
                "own exporters receive none. To keep the application's pipeline, run it without "
                f"`callscope run`, with CALLSCOPE_TRACE_FILE={file} and callscope.instrument() called "
                "after its provider is set"
            )
        original(tracer_provider)

    set_tracer_provider.__wrapped__ = original  # type: ignore[attr-defined]
    trace.set_tracer_provider = set_tracer_provider


def _flush_before_sigterm(provider: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the application's (or its server's) own handler exits through atexit

    def flush_then_terminate(signum: int, frame: Any) -> None:
        try:
            from callscope._bridge.instrumentor import CallscopeInstrumentor

            handler = CallscopeInstrumentor().handler
            if handler is not None:
                handler.registry.clear("callscope: the process was terminated (SIGTERM) before this run ended")
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(_FLUSH_ON_SIGTERM_MS)
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, flush_then_terminate)
