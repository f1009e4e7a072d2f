"""``callscope run -- COMMAND``: run a command with callscope in each of its Python processes, and
hand the traces it wrote to the tree.

The command runs as a child process with the environment ``zero_code`` needs: ``run_site`` first
on ``PYTHONPATH``, ``CALLSCOPE_RUN=1``, ``CALLSCOPE_TRACE_FILE`` naming the file. Its standard
streams are its own (inherited, never read or rewritten here). Ctrl-C reaches it from the
terminal as it would without callscope (this process ignores SIGINT while it waits, as ``time``
and ``env`` do); SIGTERM and SIGHUP sent to this process are passed on to it.

The traces shown are the ones this run appended: the file's size before the command started is
where reading begins, so an existing file keeps its earlier traces for ``callscope tree``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from callscope._tools.otlp_json import SpanRecord, SpansRead, read_spans_lines
from callscope.environment_variables import CALLSCOPE_TRACE_FILE

#: The trace file when ``--file`` is not given, in the current directory.
DEFAULT_FILE = "callscope-run.jsonl"
#: How often ``--live`` looks for new spans.
POLL_SECONDS = 0.2
#: With ``--live``, a trace whose root span has a parent callscope never sees (a web request's
#: span, exported by the application's own pipeline) is shown once nothing new arrived for it
#: this long.
QUIET_SECONDS = 1.0
#: The batch processor's delay for the command's processes, unless the environment sets one: the
#: SDK's 5 s default would hold spans back from ``--live`` for that long.
_SCHEDULE_DELAY_MS = "200"

_SITE = Path(__file__).resolve().parent.parent / "_bridge" / "run_site"

Show = Callable[[list[SpanRecord]], None]


class CommandNotFound(Exception):
    """The command could not be started (not found, or not executable)."""


def command_environment(trace_file: Path, command: Sequence[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the command runs in: the caller's, plus what ``zero_code`` needs."""
    env = dict(os.environ if environ is None else environ)
    paths = [str(_SITE)] + [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["CALLSCOPE_RUN"] = "1"
    env[CALLSCOPE_TRACE_FILE] = str(trace_file)
    env.setdefault("CALLSCOPE_RUN_SERVICE", service_name(command))
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", _SCHEDULE_DELAY_MS)
    return env


def service_name(command: Sequence[str]) -> str:
    """What the command is called: ``app`` for ``python app.py``, ``pkg.main`` for ``python -m
    pkg.main``, ``uvicorn`` for ``uvicorn app:app``."""
    words = list(command)
    if words and Path(words[0]).name.startswith("python"):
        rest = words[1:]
        if len(rest) >= 2 and rest[0] == "-m":
            return rest[1]
        scripts = [word for word in rest if not word.startswith("-")]
        if scripts:
            return Path(scripts[0]).stem
    return Path(words[0]).name if words else "callscope-run"


def exit_status(returncode: int) -> int:
    """The command's exit status as a shell reports it: 128 + N for death by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


class NewSpans:
    """The spans appended to the trace file since it was opened here, read as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = b""
        self.read = SpansRead()

    def poll(self) -> list[SpanRecord]:
        """Spans in the whole lines written since the last poll (a line still being written waits)."""
        try:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        complete, _, self._partial = data.rpartition(b"\n")
        if not complete:
            return []
        got = read_spans_lines(complete.decode("utf-8", "replace").splitlines())
        self.read.lines += got.lines
        self.read.skipped_lines += got.skipped_lines
        self.read.skipped_spans += got.skipped_spans
        self.read.problems.extend(got.problems[: max(0, 5 - len(self.read.problems))])
        self.read.spans.extend(got.spans)
        return got.spans


class LiveTraces:
    """Gathers spans by trace and hands a trace to ``show`` once it is complete: when its root
    span arrives (children end, and are exported, before their parents), or when a trace whose
    root has a parent outside the file has been quiet for ``QUIET_SECONDS``."""

    def __init__(self, show: Show, clock: Callable[[], float] = time.monotonic) -> None:
        self._show = show
        self._clock = clock
        self._pending: dict[str, list[SpanRecord]] = {}
        self._last_seen: dict[str, float] = {}
        self.shown: set[str] = set()

    def add(self, spans: list[SpanRecord]) -> None:
        now = self._clock()
        complete = []
        for span in spans:
            if span.trace_id in self.shown:
                continue  # a straggler after its trace was shown: it stays in the file
            self._pending.setdefault(span.trace_id, []).append(span)
            self._last_seen[span.trace_id] = now
            if span.parent_id is None:
                complete.append(span.trace_id)
        for trace_id in complete:
            self._emit(trace_id)

    def tick(self) -> None:
        now = self._clock()
        for trace_id in [t for t, seen in self._last_seen.items() if now - seen >= QUIET_SECONDS]:
            self._emit(trace_id)

    def flush(self) -> None:
        for trace_id in list(self._pending):
            self._emit(trace_id)

    def _emit(self, trace_id: str) -> None:
        spans = self._pending.pop(trace_id, None)
        self._last_seen.pop(trace_id, None)
        if spans:
            self.shown.add(trace_id)
            self._show(spans)


def run_command(command: Sequence[str], trace_file: Path, *, live: Show | None = None) -> tuple[int, NewSpans]:
    """Run ``command`` traced, wait for it, and return its exit status and what it wrote.

    With ``live``, each trace is handed to it as it completes while the command runs (and the
    rest when it ends); otherwise the caller shows ``NewSpans.read`` afterwards.
    """
    new_spans = NewSpans(trace_file)
    environment = command_environment(trace_file, command)
    try:
        child = subprocess.Popen(list(command), env=environment)
    except (FileNotFoundError, PermissionError, NotADirectoryError) as error:
        raise CommandNotFound(f"{command[0]}: {error.strerror or error}") from None
    tracker = LiveTraces(live) if live is not None else None
    with _signals_passed_to(child):
        while True:
            try:
                returncode = child.wait(timeout=POLL_SECONDS if tracker is not None else None)
                break
            except subprocess.TimeoutExpired:
                assert tracker is not None
                tracker.add(new_spans.poll())
                tracker.tick()
    spans = new_spans.poll()
    if tracker is not None:
        tracker.add(spans)
        tracker.flush()
    return exit_status(returncode), new_spans


@contextmanager
def _signals_passed_to(child: subprocess.Popen[Any]) -> Iterator[None]:
    def pass_on(signum: int, frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, pass_on)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
