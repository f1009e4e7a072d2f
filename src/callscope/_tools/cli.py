"""The ``callscope`` command line: ``callscope demo``, ``callscope run`` and ``callscope tree``.

::

    callscope demo [--output PATH]             run the built-in example, write and show its spans
    callscope run [--file PATH] [--live | --no-tree] -- COMMAND [ARGS...]
                                               run a Python command traced, show what it wrote
    callscope tree FILE [--trace ID | --limit N] [--errors-only] [--depth N]
                                               show traces from an OTLP/JSON lines file (- = stdin)
    callscope tree --jaeger URL --trace ID     show one trace from Jaeger v2's query API
    callscope tree --jaeger URL --service NAME [--limit N] [--since AGE]
                   [--errors] [--handler-failed [LABEL]] [--config-dropped] [--missed-by LABEL]
                                               show a service's latest traces, newest first;
                                               the filters keep those Jaeger finds by tag
    callscope tree --jaeger URL                list the services Jaeger holds traces of

e.g. ``callscope tree --jaeger http://localhost:16686 --service callscope-demo --missed-by
RuntimeLogger --since 24h``: the demo's traces in which the handler RuntimeLogger missed runs.

Every failure prints one line, ``callscope: error: <problem>; <fix>``, on stderr and exits
non-zero (see :class:`Exit`); ``--traceback`` re-raises instead, for bug reports.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shlex
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum, unique
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from callscope._attributes import CONFIG_DROPPED, ERROR_MARK, FAILED_HANDLER, HANDLER_FAILED_MARK, MISSED_BY_PREFIX
from callscope._exceptions import CallscopeError
from callscope._tools.jaeger import Jaeger, JaegerNotFoundError, JaegerUnavailableError
from callscope._tools.otlp_json import SpanRecord, SpansFile, SpansRead, TraceDataError, read_spans_file
from callscope._tools.run import DEFAULT_FILE as DEFAULT_RUN_FILE
from callscope._tools.run import CommandNotFound, run_command
from callscope._tools.tree import TREE_ATTRIBUTES, TracePrinter, TraceView, build_traces, wrap_items
from callscope.version import __version__

if TYPE_CHECKING:  # _demo imports LangChain, which `callscope tree` never needs
    from callscope._tools.demo import ModelSummary

__all__ = ["Exit", "main"]

JAEGER_TIMEOUT_SECONDS = 5.0
#: ``callscope tree --jaeger URL --service NAME`` without --limit / --since.
DEFAULT_LIMIT = 5
DEFAULT_SINCE = "1h"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_AGE = re.compile(r"(\d+)\s*([smhd])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Rich falls back to 80 columns off a terminal; a piped tree is read in a file or a pager.
_PIPE_WIDTH = 160


@dataclass(frozen=True)
class _TraceFilter:
    """A filter of ``callscope tree --jaeger URL --service NAME``: the traces in which some span
    has a tag, found by Jaeger's own tag search (an exact match, on one of callscope's scalar
    markers or a failure event's handler label)."""

    flag: str
    help: str
    #: The tag (key, value) searched for the flag given alone; None: it needs a LABEL.
    alone: tuple[str, str] | None = None
    #: The tag searched for the flag with a LABEL, "{}" standing for it; None: it takes none.
    with_label: tuple[str, str] | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


_TRACE_FILTERS = (
    _TraceFilter(
        "--errors", "traces in which a run failed (--errors-only instead shows part of each tree)", alone=(ERROR_MARK, "true")
    ),
    _TraceFilter(
        "--handler-failed",
        "traces in which a handler raised from a callback; with LABEL (a column title, e.g. RequestLogger#2), that handler",
        alone=(HANDLER_FAILED_MARK, "true"),
        with_label=(FAILED_HANDLER, "{}"),
    ),
    _TraceFilter(
        "--config-dropped", "traces in which a chain started inside a step without the step's config", alone=(CONFIG_DROPPED, "true")
    ),
    _TraceFilter(
        "--missed-by", "traces in which the handler LABEL (a column title) missed runs", with_label=(MISSED_BY_PREFIX + "{}", "true")
    ),
)


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
    #: ``callscope run``'s command could not be started (as a shell reports it).
    COMMAND_NOT_FOUND = 127
    #: Ctrl-C (128 + SIGINT).
    INTERRUPTED = 130
    #: The reader of standard output went away (``callscope tree FILE | head``): 128 + SIGPIPE,
    #: what a tool killed by the signal reports, without a word.
    BROKEN_PIPE = 141


class UsageError(CallscopeError):
    """A wrong command line."""


class InputError(CallscopeError):
    """Input that parsed but cannot be shown, e.g. an unknown trace id."""


class UnavailableError(CallscopeError):
    """A server that could not be reached, timed out, or answered with an error."""


class CommandError(CallscopeError):
    """``callscope run``'s command could not be started."""


_EXIT_BY_ERROR: tuple[tuple[type[BaseException], Exit], ...] = (
    (UsageError, Exit.USAGE),
    (TraceDataError, Exit.BAD_INPUT),
    (InputError, Exit.BAD_INPUT),
    (JaegerNotFoundError, Exit.BAD_INPUT),
    (UnavailableError, Exit.UNAVAILABLE),
    (CommandError, Exit.COMMAND_NOT_FOUND),
    (JaegerUnavailableError, Exit.UNAVAILABLE),
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

    run = commands.add_parser(
        "run",
        help="run a Python command (a script, python -m, pytest, uvicorn) traced, and show its trace tree",
        description=(
            "Run COMMAND with callscope in each of its Python processes and no code change, append every "
            "span to a trace file, and when the command ends (normally, by an exception, Ctrl-C or SIGTERM) "
            "print the tree of the traces it wrote on standard error. The command's own output and exit "
            "status are untouched. Spans also go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."
        ),
    )
    run.add_argument(
        "--file", "-f", type=Path, default=None, metavar="PATH", help=f"trace file to append to (default: ./{DEFAULT_RUN_FILE})"
    )
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("--live", action="store_true", help="print each trace as soon as it completes (for servers)")
    shown.add_argument("--no-tree", action="store_true", help="only write the trace file")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="the command, after --")

    tree = commands.add_parser(
        "tree",
        help="show traces from an OTLP/JSON lines file or from Jaeger",
        description="Show traces as a tree with one column per callback handler.",
        epilog=(
            "e.g. callscope tree --jaeger http://localhost:16686 --service callscope-demo --missed-by RuntimeLogger "
            "--since 24h: the demo's traces in which the handler RuntimeLogger missed runs"
        ),
    )
    tree.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="OTLP/JSON lines file, e.g. from `callscope demo`; - reads standard input"
    )
    tree.add_argument("--trace", metavar="ID", help="show only this trace (hex id; a unique prefix is enough for a file)")
    tree.add_argument(
        "--jaeger",
        metavar="URL",
        help="Jaeger v2 query base URL, e.g. http://localhost:16686; alone, lists Jaeger's services",
    )
    tree.add_argument("--service", metavar="NAME", help="with --jaeger: the latest traces of this service, newest first")
    tree.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help=f"with FILE: only the N traces written last; with --service: at most N traces (default {DEFAULT_LIMIT})",
    )
    tree.add_argument(
        "--since",
        type=_age,
        metavar="AGE",
        help=f"with --service: traces started in the last AGE, e.g. 30s, 15m, 2h, 7d (default {DEFAULT_SINCE})",
    )
    for kept in _TRACE_FILTERS:
        explained = f"with --service: {kept.help}"
        if kept.with_label is None:
            tree.add_argument(kept.flag, dest=kept.dest, action="store_const", const=True, help=explained)
        else:  # the flag alone, where it may stand alone, gives True
            alone = kept.alone is not None
            tree.add_argument(
                kept.flag, dest=kept.dest, nargs="?" if alone else None, const=True if alone else None, metavar="LABEL", help=explained
            )
    for shows_trees in (run, tree):
        shows_trees.add_argument("--errors-only", action="store_true", help="only failing spans, with their ancestors")
        shows_trees.add_argument("--depth", type=_positive_int, metavar="N", help="only N levels of each tree (1 = its root spans)")
    for command in (demo, run, tree):
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


def _age(text: str) -> timedelta:
    found = _AGE.fullmatch(text.strip().lower())
    if found is None or int(found.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; pass a number and a unit: 30s, 15m, 2h or 7d")
    return timedelta(seconds=int(found.group(1)) * _AGE_UNITS[found.group(2)])


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
    except BrokenPipeError:
        _stop_writing_to_stdout()
        return Exit.BROKEN_PIPE
    except Exception as error:
        status, message = _describe(error)
        # --traceback is for bug reports: a mistake in the input or the command line stays one line.
        if show_traceback and status is Exit.ERROR:
            raise
        err.print(Text(f"callscope: error: {message}"), markup=False)
        return status


def _stop_writing_to_stdout() -> None:
    # Python flushes stdout again at exit and would report that write failing too: point the
    # descriptor at /dev/null (the recipe in the docs of the signal module).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _describe(error: Exception) -> tuple[Exit, str]:
    for kind, status in _EXIT_BY_ERROR:
        if isinstance(error, kind):
            return status, _one_line(str(error))
    return Exit.ERROR, _one_line(
        f"unexpected {type(error).__name__}: {error}; rerun with --traceback and report it at the callscope issue tracker"
    )


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _run(argv: list[str]) -> Exit | int:
    """The program without error handling."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        raise UsageError("no command given; run `callscope demo` or `callscope tree FILE` (see `callscope --help`)")
    _route_library_logs()
    out = _stdout_console()
    if args.command == "demo":
        return _demo(out, args.output)
    if args.command == "run":
        return _run_command(args)
    show = TracePrinter(out, max_depth=args.depth, errors_only=args.errors_only)
    tags = _filter_tags(args)
    if args.jaeger is not None:
        if args.file is not None:
            raise UsageError("give either FILE or --jaeger URL, not both; e.g. `callscope tree callscope-traces.jsonl`")
        return _tree_from_jaeger(
            show, args.jaeger, trace=args.trace, service=args.service, limit=args.limit, since=args.since, tags=tags
        )
    for flag, value in (("--service", args.service), ("--since", args.since)):
        if value is not None:
            raise UsageError(f"{flag} goes with --jaeger URL; for a file, use --trace ID or --limit N, or show all its traces")
    return _tree(show, file=args.file, trace=args.trace, limit=args.limit)


def _stdout_console() -> Console:
    return _console(stderr=False)


def _console(*, stderr: bool) -> Console:
    # no_color=None lets rich honour NO_COLOR (and FORCE_COLOR); a pipe gets plain text anyway.
    console = Console(stderr=stderr, no_color=None, highlight=False)
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
    ``callscope:`` for apps that log them bare), ``<logger>: ERROR: <message>`` for the
    libraries': one prefix per line, naming who said it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message.removeprefix("callscope: ")
        if record.name == "callscope" or record.name.startswith("callscope."):
            return f"callscope: {record.levelname}: {message}"
        # Another library's (the OpenTelemetry SDK's): named after it, not read as callscope's.
        return f"{record.name}: {record.levelname}: {message}"


# --- demo -------------------------------------------------------------------------------------


def _demo(out: Console, output: Path | None) -> Exit:
    from callscope._tools.demo import DEFAULT_OUTPUT, DEFAULT_SERVICE_NAME, DemoResult, run_demo

    views: list[TraceView] = []

    def show(result: DemoResult) -> None:
        read = read_spans_file(result.output)
        views.extend(build_traces(read.spans))
        out.print(Text(f"wrote {len(read.spans)} spans in {len(views)} traces to {result.output}"))
        if result.failure:
            out.print(Text(f"the strict step failed on purpose (caught): {result.failure}", style="dim"))
        for line in result.langchain_log:
            out.print(Text(f"LangChain logged, and went on: {line}", style="dim"))
        out.print()
        _render(out, views)
        out.print(Text(f"see it again: callscope tree {result.output}", style="dim"))
        if result.models:
            out.print()
            _render_models(out, result.models)
        if result.otlp_endpoint is not None:
            out.print(Text(f"sending the spans over OTLP ({result.otlp_protocol}) to {result.otlp_endpoint} ..."))

    result = run_demo(output if output is not None else DEFAULT_OUTPUT, on_file_written=show)
    if result.otlp_endpoint is not None:
        service = views[0].service_name if views else None
        # The SDK logs export failures above; it offers no way to ask whether this one worked.
        out.print(Text(f"done (service {service!r}; export errors, if any, are logged above)"))
        if _is_local(result.otlp_endpoint):
            out.print(
                Text(
                    f"with docker-compose's Jaeger or deploy/jaeger.sh: callscope tree --jaeger http://localhost:16686 "
                    f"--service {shlex.quote(service or DEFAULT_SERVICE_NAME)}"
                )
            )
    return Exit.OK


def _render_models(out: Console, models: list[ModelSummary]) -> None:
    title = "GenAI client metrics per model (gen_ai.client.*)"
    table = Table(box=None, pad_edge=False, title=title, title_justify="left", title_style="bold")
    for header in ("model", "provider", "runs", "errors", "p50 duration", "p95 duration", "input tokens", "output tokens"):
        table.add_column(header, justify="left" if header in ("model", "provider") else "right", no_wrap=True)
    for m in models:
        table.add_row(Text(m.model), Text(m.provider or "-"), *_model_numbers(m))
    probe = Console(file=io.StringIO(), width=10_000, no_color=True)
    probe.print(table)
    if max(len(line.rstrip()) for line in probe.file.getvalue().splitlines()) <= out.width:
        out.print(table)
    else:  # a narrow terminal: one model per paragraph, never a number cut from its unit
        out.print(Text(title, style="bold"))
        for m in models:
            runs, errors, p50, p95, tokens_in, tokens_out = _model_numbers(m)
            out.print(Text(f"{m.model}" + (f" ({m.provider})" if m.provider else "")))
            facts = [f"{runs} runs", f"{errors} errors", f"p50 {p50}", f"p95 {p95}", f"tokens {tokens_in} in, {tokens_out} out"]
            for line in wrap_items(facts, " · ", out.width, first="  ", rest="  "):
                out.print(Text(line), no_wrap=True, crop=False)
    out.print(Text("p50/p95 are estimated from the histogram buckets; '-': the model reported no usage", style="dim"))


def _model_numbers(m: ModelSummary) -> tuple[str, str, str, str, str, str]:
    tokens_in = "-" if m.input_tokens is None else str(m.input_tokens)
    tokens_out = "-" if m.output_tokens is None else str(m.output_tokens)
    return str(m.runs), str(m.errors), _seconds(m.p50_s), _seconds(m.p95_s), tokens_in, tokens_out


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` looks like docker-compose.yml's Jaeger or collector ports."""
    parts = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.hostname in ("localhost", "127.0.0.1", "::1") and port in (4317, 4318, 14317, 14318)


# --- run --------------------------------------------------------------------------------------


def _run_command(args: argparse.Namespace) -> Exit | int:
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command to run; e.g. `callscope run -- python app.py`")
    trace_file = (args.file if args.file is not None else Path(DEFAULT_RUN_FILE)).expanduser().absolute()
    if not trace_file.parent.is_dir():
        raise UsageError(f"--file {args.file}: the directory {trace_file.parent} does not exist; create it or pick another path")
    # The command owns standard output: callscope's lines and trees go to standard error.
    err = _console(stderr=True)
    err.print(Text(f"callscope run: spans go to {trace_file}", style="dim"), markup=False)
    show = TracePrinter(err, max_depth=args.depth, errors_only=args.errors_only)

    def show_live(spans: list[SpanRecord]) -> None:
        show.all(build_traces(spans))

    try:
        status, new_spans = run_command(command, trace_file, live=show_live if args.live else None)
    except CommandNotFound as error:
        raise CommandError(f"cannot run {error}; check the command's name, or give its path") from None
    read = new_spans.read
    views = build_traces(read.spans)
    if not args.live and not args.no_tree:
        show.all(views)
    if show.traces:
        show.finish(str(trace_file))
    if not read.spans:
        err.print(
            Text(
                f"callscope run: the command wrote no spans to {trace_file}: it ran no LangChain code, or its "
                "Python cannot import callscope (said above if so)"
            ),
            markup=False,
        )
    else:
        plural = "s" if len(views) != 1 else ""
        err.print(
            Text(f"callscope run: {len(read.spans)} spans in {len(views)} trace{plural}; again: callscope tree {shlex.quote(str(trace_file))} --limit {len(views)}", style="dim"),
            markup=False,
        )
    if read.skipped_lines or read.skipped_spans:
        _report_skipped(read, str(trace_file))
    return status


# --- tree -------------------------------------------------------------------------------------


def _tree(show: TracePrinter, *, file: Path | None, trace: str | None, limit: int | None) -> Exit:
    if file is None:
        raise UsageError("give either FILE or --jaeger URL; e.g. `callscope tree callscope-traces.jsonl`")
    trace = _trace_option(trace)
    if trace is not None and limit is not None:
        raise UsageError("give --trace ID or --limit N, not both; --trace already picks one trace")
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


def _trace_option(trace: str | None) -> str | None:
    if trace is None:
        return None
    trace = trace.strip().lower()
    if not trace or not re.fullmatch(r"[0-9a-f]+", trace):
        raise UsageError(f"--trace {trace!r} is not a hex trace id; copy the id from a tree title or Jaeger")
    return trace


def _filter_tags(args: argparse.Namespace) -> dict[str, str]:
    """The Jaeger tags of the trace filters given (all must match), or a UsageError."""
    tags: dict[str, str] = {}
    for kept in _TRACE_FILTERS:
        given = getattr(args, kept.dest)
        if given is None:
            continue
        if args.service is None:
            raise UsageError(
                f"{kept.flag} searches one service's traces in Jaeger; add --jaeger URL --service NAME "
                "(`callscope tree --jaeger URL` lists the services)"
            )
        label = "" if given is True else given.strip()
        if given is not True and not label:
            raise UsageError(f"{kept.flag} needs a handler label, e.g. {kept.flag} RequestLogger: a column title of the tree")
        tag = kept.with_label if label else kept.alone
        assert tag is not None  # argparse gives True only to a flag that may stand alone, a label only to one that takes it
        key, value = tag
        tags[key.replace("{}", label)] = value.replace("{}", label)
    return tags


def _tree_from_jaeger(
    show: TracePrinter,
    url: str,
    *,
    trace: str | None,
    service: str | None,
    limit: int | None,
    since: timedelta | None,
    tags: dict[str, str],
) -> Exit:
    try:
        jaeger = Jaeger(url, timeout=JAEGER_TIMEOUT_SECONDS)
    except ValueError:
        raise UsageError(f"--jaeger {url!r} is not an http(s) URL; pass e.g. http://localhost:16686") from None
    trace = _trace_option(trace)
    source = f"Jaeger at {jaeger.base_url}"
    if trace is not None and service is not None:
        raise UsageError("give --trace ID or --service NAME, not both; --trace already names one trace")
    if service is None and (limit is not None or since is not None):
        raise UsageError("--limit and --since go with --service NAME; e.g. `--service callscope-demo --since 15m`")
    if trace is not None:
        if not _TRACE_ID.fullmatch(trace):
            raise UsageError(f"--trace {trace!r} is not a 32-digit hex trace id; Jaeger needs the full id")
        read = jaeger.trace(trace)
        views = [view for view in build_traces(read.spans) if view.trace_id == trace]
    elif service is not None:
        if not service.strip():
            raise UsageError("--service needs a name; run `callscope tree --jaeger URL` to list them")
        since = since if since is not None else _age(DEFAULT_SINCE)
        limit = limit if limit is not None else DEFAULT_LIMIT
        read = jaeger.search(service, since=since, limit=limit, tags=tags)
        views = build_traces(read.spans)
        views.sort(key=lambda view: min((n.span.start_ns for n in view.roots), default=0), reverse=True)
        views = views[:limit]
    else:
        return _list_services(show.out, jaeger)
    if not views:
        what = f"trace {trace}" if trace is not None else f"service {service}"
        raise InputError(f"{source} returned no spans of {what}; retry in a few seconds (spans arrive in batches)")
    show.all(views)
    show.finish(source)
    if read.skipped_lines or read.skipped_spans:
        _report_skipped(read, source)
    return Exit.OK


def _list_services(out: Console, jaeger: Jaeger) -> Exit:
    services = jaeger.services()
    if not services:
        raise InputError(
            f"Jaeger at {jaeger.base_url} holds no traces yet; send some, e.g. "
            "`OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 callscope demo`"
        )
    out.print(Text(f"services in Jaeger at {jaeger.base_url}:"))
    for name in services:
        out.print(Text(f"  {name}"))
    out.print(Text(f"show one: callscope tree --jaeger {jaeger.base_url} --service {services[0]}", style="dim"))
    return Exit.OK


def _nothing_in(source: str, read: SpansRead) -> str:
    if not (read.skipped_spans or read.skipped_lines):
        return f"{source} holds no spans; export some first, e.g. with `callscope demo`"
    why = f" (first: {read.problems[0]})" if read.problems else ""
    return (
        f"{source} holds no usable spans: skipped {_skipped(read)}{why}; "
        "check what wrote it against the OTLP/JSON format, or try a file written by `callscope demo`"
    )


def _skipped(read: SpansRead) -> str:
    """What a read skipped, e.g. "3 malformed spans and 2 of 40 lines"."""
    parts = []
    if read.skipped_spans:
        parts.append(f"{read.skipped_spans} malformed span{'s' if read.skipped_spans != 1 else ''}")
    if read.skipped_lines:
        parts.append(f"{read.skipped_lines} of {read.lines} lines")
    return " and ".join(parts)


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
    show = TracePrinter(out, max_depth=None, errors_only=False)
    show.all(views)
    show.finish("")


def _report_skipped(read: SpansRead, source: str) -> None:
    err = Console(stderr=True, no_color=None, highlight=False, soft_wrap=True)
    detail = f" ({read.problems[0]})" if read.problems else ""
    err.print(
        Text(f"callscope: warning: skipped {_skipped(read)} of {source}{detail}; the rest is shown above"),
        markup=False,
    )
