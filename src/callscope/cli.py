"""The ``callscope`` command line: ``callscope demo`` and ``callscope tree``.

::

    callscope demo [--output PATH]             run the built-in example, write and show its spans
    callscope tree FILE [--trace ID | --limit N] [--errors-only] [--depth N]
                                               show traces from an OTLP/JSON lines file (- = stdin)
    callscope tree --jaeger URL --trace ID     show one trace from Jaeger v2's query API

Every failure prints one line, ``callscope: error: <problem>; <fix>``, on stderr and exits
non-zero (see :class:`Exit`); ``--traceback`` re-raises instead, for bug reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from enum import IntEnum, unique
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.text import Text

from callscope._exceptions import CallscopeError
from callscope._otlp_json import SpansFile, SpansRead, TraceDataError, parse_document, read_spans_file
from callscope._tree import TREE_ATTRIBUTES, Layout, TraceView, build_traces, render_legend, render_trace
from callscope.version import __version__

__all__ = ["Exit", "main"]

JAEGER_TIMEOUT_SECONDS = 5.0
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
# Rich falls back to 80 columns off a terminal; a piped tree is read in a file or a pager.
_PIPE_WIDTH = 160


@unique
class Exit(IntEnum):
    """The process exit status of ``callscope``, by cause."""

    OK = 0
    #: An unexpected failure (a bug): rerun with --traceback and report it.
    ERROR = 1
    #: The command line was wrong.
    USAGE = 2
    #: The input could not be used: a missing or non-OTLP/JSON file, an unknown trace id.
    BAD_INPUT = 3
    #: A server (Jaeger) could not be reached or answered with an error.
    UNAVAILABLE = 4
    #: Ctrl-C (128 + SIGINT).
    INTERRUPTED = 130


class UsageError(CallscopeError):
    """A wrong command line."""


class InputError(CallscopeError):
    """Input that parsed but cannot be shown, e.g. an unknown trace id."""


class UnavailableError(CallscopeError):
    """A server that could not be reached, timed out, or answered with an error."""


_EXIT_BY_ERROR: tuple[tuple[type[BaseException], Exit], ...] = (
    (UsageError, Exit.USAGE),
    (TraceDataError, Exit.BAD_INPUT),
    (InputError, Exit.BAD_INPUT),
    (UnavailableError, Exit.UNAVAILABLE),
    (CallscopeError, Exit.ERROR),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print usage plus its own error line and exit; route it through the
        # one boundary so every failure looks the same.
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="callscope", description="LangChain callbacks as OpenTelemetry spans, scoping made visible.")
    parser.add_argument("--version", action="version", version=f"callscope {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="run a built-in LangChain example (fake models, no network) and show its trace tree",
        description=(
            "Run a built-in LangChain example on fake models, write its spans as OTLP/JSON lines and "
            "print the trace tree. Also exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, honouring the other OTEL_EXPORTER_OTLP_* "
            "variables and OTEL_SERVICE_NAME (default: callscope-demo)."
        ),
    )
    demo.add_argument(
        "--output", "-o", type=Path, default=None, metavar="PATH", help="spans file (default: ./callscope-traces.jsonl)"
    )

    tree = commands.add_parser(
        "tree",
        help="show traces from an OTLP/JSON lines file or from Jaeger",
        description="Show traces as a tree with one column per callback handler.",
    )
    tree.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="OTLP/JSON lines file, e.g. from `callscope demo`; - reads standard input"
    )
    tree.add_argument("--trace", metavar="ID", help="show only this trace (hex id; a unique prefix is enough for a file)")
    tree.add_argument("--jaeger", metavar="URL", help="Jaeger v2 query base URL, e.g. http://localhost:16686")
    tree.add_argument("--limit", type=_positive_int, metavar="N", help="with FILE: only the N traces written last")
    tree.add_argument("--errors-only", action="store_true", help="only failing spans, with their ancestors")
    tree.add_argument("--depth", type=_positive_int, metavar="N", help="only N levels of each tree (1 = its root spans)")
    for command in (demo, tree):
        # Accepted after the command too; the top-level flag would otherwise be "unrecognized".
        command.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0; pass e.g. 10")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``callscope`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    >>> from callscope.cli import main
    >>> main(["tree", "callscope-traces.jsonl"])  # doctest: +SKIP
    0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, no_color=None, highlight=False, soft_wrap=True)
    show_traceback = "--traceback" in args_list
    try:
        return int(_run(args_list))
    except KeyboardInterrupt:
        if show_traceback:
            raise
        err.print()
        return Exit.INTERRUPTED
    except Exception as error:
        status, message = _describe(error)
        # --traceback is for bug reports: a mistake in the input or the command line stays one line.
        if show_traceback and status is Exit.ERROR:
            raise
        err.print(Text(f"callscope: error: {message}"), markup=False)
        return status


def _describe(error: Exception) -> tuple[Exit, str]:
    for kind, status in _EXIT_BY_ERROR:
        if isinstance(error, kind):
            return status, _one_line(str(error))
    return Exit.ERROR, _one_line(
        f"unexpected {type(error).__name__}: {error}; rerun with --traceback and report it at the callscope issue tracker"
    )


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _run(argv: list[str]) -> Exit:
    """The program without error handling."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        raise UsageError("no command given; run `callscope demo` or `callscope tree FILE` (see `callscope --help`)")
    _route_library_logs()
    out = _stdout_console()
    if args.command == "demo":
        return _demo(out, args.output)
    return _tree(
        out,
        file=args.file,
        trace=args.trace,
        jaeger=args.jaeger,
        limit=args.limit,
        errors_only=args.errors_only,
        depth=args.depth,
    )


def _stdout_console() -> Console:
    # no_color=None lets rich honour NO_COLOR (and FORCE_COLOR); a pipe gets plain text anyway.
    console = Console(no_color=None, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


def _route_library_logs() -> None:
    # The SDK reports a dead collector through logging; without a handler Python would print
    # bare messages. Give them a prefix so they read as callscope's output.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING)
        for handler in root.handlers:
            handler.setFormatter(_LogLineFormatter())


class _LogLineFormatter(logging.Formatter):
    """``callscope: WARNING: <message>`` for callscope's own records (whose messages already say
    ``callscope:`` for apps that log them bare), ``callscope: ERROR: <logger>: <message>`` for
    the libraries': one prefix per line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message.removeprefix("callscope: ")
        if record.name == "callscope" or record.name.startswith("callscope."):
            return f"callscope: {record.levelname}: {message}"
        return f"callscope: {record.levelname}: {record.name}: {message}"


# --- demo -------------------------------------------------------------------------------------


def _demo(out: Console, output: Path | None) -> Exit:
    from callscope._demo import DEFAULT_OUTPUT, DemoResult, run_demo

    views: list[TraceView] = []

    def show(result: DemoResult) -> None:
        read = read_spans_file(result.output)
        views.extend(build_traces(read.spans))
        out.print(Text(f"wrote {len(read.spans)} spans in {len(views)} traces to {result.output}"))
        if result.failure:
            out.print(Text(f"the strict step failed on purpose (caught): {result.failure}", style="dim"))
        out.print()
        _render(out, views)
        out.print(Text(f"see it again: callscope tree {result.output}", style="dim"))
        if result.otlp_endpoint is not None:
            out.print(Text(f"sending the spans over OTLP ({result.otlp_protocol}) to {result.otlp_endpoint} ..."))

    result = run_demo(output if output is not None else DEFAULT_OUTPUT, on_file_written=show)
    if result.otlp_endpoint is not None:
        service = views[0].service_name if views else None
        # The SDK logs export failures above; it offers no way to ask whether this one worked.
        out.print(Text(f"done (service {service!r}; export errors, if any, are logged above)"))
        if _is_local(result.otlp_endpoint):
            out.print(Text(f"with the docker-compose Jaeger: http://localhost:16686/search?service={service}"))
    return Exit.OK


def _is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` looks like docker-compose.yml's Jaeger or collector ports."""
    parts = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.hostname in ("localhost", "127.0.0.1", "::1") and port in (4317, 4318, 14317, 14318)


# --- tree -------------------------------------------------------------------------------------


def _tree(
    out: Console,
    *,
    file: Path | None,
    trace: str | None,
    jaeger: str | None,
    limit: int | None = None,
    errors_only: bool = False,
    depth: int | None = None,
) -> Exit:
    if (file is None) == (jaeger is None):
        raise UsageError("give either FILE or --jaeger URL; e.g. `callscope tree callscope-traces.jsonl`")
    if trace is not None:
        trace = trace.strip().lower()
        if not trace or not re.fullmatch(r"[0-9a-f]+", trace):
            raise UsageError(f"--trace {trace!r} is not a hex trace id; copy the id from a tree title or Jaeger")
    if jaeger is not None and limit is not None:
        raise UsageError("--limit picks traces of a FILE; with --jaeger, pass the trace's id with --trace")
    if trace is not None and limit is not None:
        raise UsageError("give --trace ID or --limit N, not both; --trace already picks one trace")
    show = _Shown(out, max_depth=depth, errors_only=errors_only)
    if jaeger is not None:
        if trace is None:
            raise UsageError("--jaeger needs --trace ID; copy the 32-digit trace id from Jaeger's UI")
        if not _TRACE_ID.fullmatch(trace):
            raise UsageError(f"--trace {trace!r} is not a 32-digit hex trace id; Jaeger needs the full id")
        read = _fetch_jaeger(jaeger, trace)
        source = f"Jaeger at {jaeger}"
        views = [view for view in build_traces(read.spans) if view.trace_id == trace]
        if not views:
            raise InputError(f"{source} returned no spans of trace {trace}; retry in a few seconds (spans arrive in batches)")
        show.all(views)
    else:
        assert file is not None
        with SpansFile.open(file) as spans_file:
            source = spans_file.name
            index = spans_file.index()
            wanted = None
            if trace is not None:
                wanted = [_pick(index.trace_ids, trace, source)]
            elif limit is not None:
                wanted = index.newest(limit)
            for spans in spans_file.traces(wanted, attribute_keys=TREE_ATTRIBUTES):
                show.all(build_traces(spans))
            read = spans_file.read
        if not show.traces:
            raise InputError(_nothing_in(source, read))
    show.finish(source)
    if read.skipped_lines or read.skipped_spans:
        _report_skipped(read, source)
    return Exit.OK


class _Shown:
    """Draws traces as they come, and what follows them once: the legend, or why nothing showed."""

    def __init__(self, out: Console, *, max_depth: int | None, errors_only: bool) -> None:
        self.out = out
        self.max_depth = max_depth
        self.errors_only = errors_only
        self.traces = 0
        self.layouts: set[Layout] = set()
        self.handlers = False
        self.width = out.width  # once: rich measures the terminal again on every read

    def all(self, views: list[TraceView]) -> None:
        for view in views:
            self.traces += 1
            layout = render_trace(
                view, self.out, max_depth=self.max_depth, errors_only=self.errors_only, width=self.width
            )
            if layout is not None:
                self.layouts.add(layout)
                self.handlers = self.handlers or bool(view.handlers)
                self.out.file.write("\n")

    def finish(self, source: str) -> None:
        if self.errors_only and not self.layouts:
            self.out.print(
                Text(f"no failing spans in the {self.traces} trace{'s' if self.traces != 1 else ''} of {source}"),
                markup=False,
            )
        if self.handlers:
            render_legend(self.out, self.layouts)


def _nothing_in(source: str, read: SpansRead) -> str:
    if not (read.skipped_spans or read.skipped_lines):
        return f"{source} holds no spans; export some first, e.g. with `callscope demo`"
    skipped = []
    if read.skipped_spans:
        skipped.append(f"{read.skipped_spans} malformed span{'s' if read.skipped_spans != 1 else ''}")
    if read.skipped_lines:
        skipped.append(f"{read.skipped_lines} of {read.lines} lines")
    why = f" (first: {read.problems[0]})" if read.problems else ""
    return (
        f"{source} holds no usable spans: skipped {' and '.join(skipped)}{why}; "
        "check what wrote it against the OTLP/JSON format, or try a file written by `callscope demo`"
    )


def _pick(trace_ids: list[str], trace: str, source: str) -> str:
    if trace in trace_ids:
        return trace
    chosen = [trace_id for trace_id in trace_ids if trace_id.startswith(trace)]
    if len(chosen) == 1:
        return chosen[0]
    if not trace_ids:
        raise InputError(f"{source} holds no spans, so no trace {trace}; export some first, e.g. with `callscope demo`")
    if not chosen:
        known = ", ".join(trace_ids[:3]) + (", ..." if len(trace_ids) > 3 else "")
        raise InputError(
            f"trace {trace} is not in {source} (it has {len(trace_ids)} trace{'s' if len(trace_ids) != 1 else ''}: {known}); "
            "pass one of those ids, or omit --trace to show them all"
        )
    raise UsageError(f"--trace {trace} matches {len(chosen)} traces in {source}; give more digits")


def _render(out: Console, views: list[TraceView]) -> None:
    show = _Shown(out, max_depth=None, errors_only=False)
    show.all(views)
    show.finish("")


def _report_skipped(read: SpansRead, source: str) -> None:
    err = Console(stderr=True, no_color=None, highlight=False, soft_wrap=True)
    parts = []
    if read.skipped_lines:
        parts.append(f"{read.skipped_lines} of {read.lines} lines")
    if read.skipped_spans:
        parts.append(f"{read.skipped_spans} malformed spans")
    detail = f" ({read.problems[0]})" if read.problems else ""
    err.print(
        Text(f"callscope: warning: skipped {' and '.join(parts)} of {source}{detail}; the rest is shown above"),
        markup=False,
    )


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


def _is_jaeger_error(error: urllib.error.HTTPError) -> bool:
    """Whether an HTTP error carries Jaeger's ``{"error": {...}}`` body (any server says 404)."""
    try:
        document = json.loads(error.read(4096))
    except (ValueError, OSError):
        return False
    return isinstance(document, dict) and isinstance(document.get("error"), dict)


def _fetch_jaeger(base_url: str, trace_id: str) -> SpansRead:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--jaeger {base_url!r} is not an http(s) URL; pass e.g. http://localhost:16686")
    url = f"{base_url.rstrip('/')}/api/v3/traces/{trace_id}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        body = _get_within(request, JAEGER_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 404 and _is_jaeger_error(error):
            raise InputError(
                f"trace {trace_id} not found in Jaeger at {base_url}; check the id, "
                "or wait a few seconds (spans are sent in batches) and retry"
            ) from None
        if error.code == 404:
            raise UnavailableError(
                f"{url} answered HTTP 404 without Jaeger's error body, so {base_url} is not Jaeger v2's query API; "
                "pass its query port, e.g. http://localhost:16686"
            ) from None
        raise UnavailableError(
            f"Jaeger at {base_url} answered HTTP {error.code} for {url}; check that URL is Jaeger v2's query port (16686)"
        ) from None
    except (TimeoutError, socket.timeout):
        raise UnavailableError(
            f"Jaeger at {base_url} did not answer within {JAEGER_TIMEOUT_SECONDS:g}s; check that it is up (`docker compose ps`)"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise UnavailableError(
                f"Jaeger at {base_url} did not answer within {JAEGER_TIMEOUT_SECONDS:g}s; "
                "check that it is up (`docker compose ps`)"
            ) from None
        raise UnavailableError(
            f"cannot reach Jaeger at {base_url} ({getattr(reason, 'strerror', None) or reason}); "
            "start it with `docker compose up -d` or pass the right --jaeger URL"
        ) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise UnavailableError(
            f"{url} did not return JSON; pass Jaeger v2's query base URL, e.g. http://localhost:16686"
        ) from None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        message = document["error"].get("message", "unknown error")
        if "not found" in str(message).lower():
            raise InputError(f"trace {trace_id} not found in Jaeger at {base_url}; check the id") from None
        raise UnavailableError(f"Jaeger at {base_url} answered: {message}; check its logs") from None
    try:
        return parse_document(document)
    except TraceDataError:
        raise UnavailableError(
            f"{url} did not return OTLP/JSON; pass Jaeger v2's query base URL (Jaeger v1 has no /api/v3)"
        ) from None
