"""The trace tree, drawn from spans of real LangChain runs traced by callscope."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from callscope._otlp_json import SpanRecord, parse_document, to_otlp_json
from callscope._tree import (
    HANDLERS_INHERITED,
    HANDLERS_LOCAL,
    build_traces,
    failure_lines,
    format_duration,
    handler_cell,
    render_legend,
    render_trace,
)

# Colour SGR parameters: 30-37/90-97 foreground, 38 extended; bold (1) and dim (2) are not colour.
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colour_codes(text: str) -> list[str]:
    codes = []
    for params in _SGR.findall(text):
        for param in params.split(";"):
            if param and (30 <= int(param) <= 38 or 90 <= int(param) <= 97):
                codes.append(param)
    return codes


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs = 0

    def on_chain_start(self, *args, **kwargs) -> None:
        self.runs += 1


def _records(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    # Through the same OTLP/JSON encoding the file and Jaeger use, so the tree sees what they see.
    return parse_document(to_otlp_json(exporter.get_finished_spans())).spans


def _with_handlers(records: list[SpanRecord], handlers: dict[str, tuple[list[str], list[str]]]) -> list[SpanRecord]:
    """Set the handler attributes by span name, replacing whatever scoping wrote, so the
    renderer is tested on known labels."""
    out = []
    for record in records:
        attributes = {k: v for k, v in record.attributes.items() if not k.startswith("callscope.handlers.")}
        local, inherited = handlers.get(record.name, ([], ["Runtime"]))
        if local:
            attributes[HANDLERS_LOCAL] = local
        if inherited:
            attributes[HANDLERS_INHERITED] = inherited
        out.append(dataclasses.replace(record, attributes=attributes))
    return out


@pytest.fixture
def chain_records(span_exporter: InMemorySpanExporter, instrumented) -> list[SpanRecord]:
    model = FakeListChatModel(responses=["fine"], callbacks=[Recorder()])
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | model | RunnableLambda(lambda m: m.content, name="extract")
    chain.invoke({"q": "a"}, config={"callbacks": [Recorder()], "run_name": "first"})
    with pytest.raises(ZeroDivisionError):
        (chain | RunnableLambda(lambda _: 1 / 0, name="divide")).invoke({"q": "b"}, config={"run_name": "second"})
    return _records(span_exporter)


def test_traces_are_grouped_ordered_and_linked(chain_records: list[SpanRecord]) -> None:
    views = build_traces(chain_records)
    assert [v.roots[0].span.name for v in views] == ["first", "second"]
    first = views[0]
    assert first.span_count == 4 and len(first.roots) == 1
    children = [node.span.name for node in first.roots[0].children]
    assert children[0] == "ChatPromptTemplate" and children[-1] == "extract"
    starts = [node.span.start_ns for node in first.roots[0].children]
    assert starts == sorted(starts)
    assert [node.span.name for node, _ in first.walk()][0] == "first"


def test_handler_columns_are_the_union_in_order_of_first_appearance(chain_records: list[SpanRecord]) -> None:
    records = _with_handlers(chain_records, {"first": ([], ["Runtime"]), "chat": (["ModelLogger"], ["Runtime"])})
    first = build_traces(records)[0]
    assert first.handlers == ["Runtime", "ModelLogger"]
    cells = {node.span.name: [handler_cell(node.span, label) for label in first.handlers] for node, _ in first.walk()}
    chat_name = next(name for name in cells if name not in ("first", "ChatPromptTemplate", "extract"))
    assert cells[chat_name] == ["inherited", "local"]
    assert cells["first"] == ["inherited", "missed"]
    assert cells["extract"] == ["inherited", "missed"]


def test_a_callscope_span_without_handler_attributes_missed_them_all() -> None:
    span = SpanRecord("a" * 32, "b" * 16, None, "RunnableLambda", 0, 1, scope_name="callscope")
    assert handler_cell(span, "Runtime") == "missed"
    foreign = dataclasses.replace(span, scope_name="opentelemetry.instrumentation.httpx")
    assert handler_cell(foreign, "Runtime") == "·"


def test_plain_text_off_a_terminal(chain_records: list[SpanRecord]) -> None:
    records = _with_handlers(chain_records, {"chat": (["ModelLogger"], ["Runtime"])})
    out = io.StringIO()
    console = Console(file=out, width=200, no_color=None)
    for view in build_traces(records):
        render_trace(view, console)
    render_legend(console)
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    first_title = next(line for line in lines if line.startswith("trace "))
    assert re.fullmatch(r"trace [0-9a-f]{32}  unknown_service\S* · 4 spans · [0-9.]+ m?s", first_title.strip())
    header = next(line for line in lines if line.lstrip().startswith("span"))
    assert header.split() == ["span", "duration", "status", "Runtime", "ModelLogger"]
    chat_row = next(line for line in lines if "─ chat" in line)
    assert chat_row.split()[-2:] == ["inherited", "local"]
    assert any(line.startswith("└─ extract") for line in lines)
    divide_row = next(line for line in lines if "divide" in line)
    assert "error: ZeroDivisionError: division by zero" in divide_row
    assert "scope (S): missed: a constructor handler of other components" in text
    assert next(line for line in lines if line.startswith("└─ extract")).split()[-2:] == ["inherited", "scope"]


def test_colour_on_a_terminal_and_none_under_no_color(
    chain_records: list[SpanRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _with_handlers(chain_records, {"chat": (["ModelLogger"], ["Runtime"])})
    view = build_traces(records)[1]

    def draw() -> str:
        out = io.StringIO()
        render_trace(view, Console(file=out, width=200, force_terminal=True, color_system="standard", no_color=None))
        return out.getvalue()

    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = draw()
    assert _colour_codes(coloured), "expected colour on a terminal"
    monkeypatch.setenv("NO_COLOR", "1")
    plain = draw()
    assert _colour_codes(plain) == []
    assert re.sub(r"\x1b\[[0-9;]*m", "", plain) == re.sub(r"\x1b\[[0-9;]*m", "", coloured)


def test_orphans_and_cycles_are_drawn_not_lost() -> None:
    t = "c" * 32
    spans = [
        SpanRecord(t, "0000000000000001", "00000000000000ff", "orphan", 10, 20),
        SpanRecord(t, "0000000000000002", "0000000000000003", "loop-a", 30, 40),
        SpanRecord(t, "0000000000000003", "0000000000000002", "loop-b", 31, 39),
    ]
    [view] = build_traces(spans)
    assert sorted(node.span.name for node, _ in view.walk()) == ["loop-a", "loop-b", "orphan"]
    out = io.StringIO()
    render_trace(view, Console(file=out, width=200))
    assert "orphan  (parent 00000000000000ff not in data)" in out.getvalue()


def test_ascii_guides_when_the_console_cannot_encode_box_drawing(chain_records: list[SpanRecord]) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    console = Console(file=out, width=200)
    render_trace(build_traces(chain_records)[0], console)
    out.flush()
    text = out.buffer.getvalue().decode("ascii")
    assert "`- extract" in text


@pytest.mark.parametrize(
    ("ns", "text"), [(420_000, "0.42 ms"), (12_345_678, "12.3 ms"), (1_250_000_000, "1.25 s"), (0, "0.00 ms")]
)
def test_format_duration(ns: int, text: str) -> None:
    assert format_duration(ns) == text


# --- why a handler missed a run, and failures under their span ------------------------------


class Audit(BaseCallbackHandler):
    pass


class ModelsOnly(BaseCallbackHandler):
    ignore_chain = True


class FailsOnLLMEnd(BaseCallbackHandler):
    def on_llm_end(self, *args, **kwargs) -> None:
        raise RuntimeError("store down")


def test_cells_say_why_each_handler_missed_each_run(span_exporter, instrumented):
    inner = (ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["in"])).with_config(callbacks=[Audit()], run_name="inner")
    model = FakeListChatModel(responses=["a"], callbacks=[FailsOnLLMEnd()])
    chain = (
        ChatPromptTemplate.from_template("{q}")
        | model
        | RunnableLambda(lambda m: m.content, name="unwrap")
        | RunnableLambda(lambda v: inner.invoke({"q": v}).content, name="nest")
    )
    chain.invoke({"q": "x"}, {"callbacks": [Recorder(), ModelsOnly()]})
    (view,) = build_traces(_records(span_exporter))
    cells = {
        node.span.name + (f"<{len(lasts)}" if node.span.name in ("chat", "ChatPromptTemplate") else ""): {
            label: handler_cell(node.span, label, view) for label in view.handlers
        }
        for node, lasts in view.walk()
    }
    assert cells["RunnableSequence"] == {"Recorder": "inherited", "ModelsOnly": "filtered", "FailsOnLLMEnd": "scope", "Audit": "subtree"}
    assert cells["chat<2"] == {"Recorder": "inherited", "ModelsOnly": "inherited", "FailsOnLLMEnd": "failed", "Audit": "subtree"}
    assert cells["inner"] == {"Recorder": "dropped", "ModelsOnly": "dropped", "FailsOnLLMEnd": "scope", "Audit": "inherited"}
    assert cells["chat<4"]["Recorder"] == "dropped"
    # The failure was recorded on the parent (the model's span had ended first) and is drawn
    # under the model's span.
    out = io.StringIO()
    render_trace(view, Console(file=out, width=200, color_system=None))
    lines = out.getvalue().splitlines()
    chat_row = next(i for i, line in enumerate(lines) if line.startswith("├─ chat"))
    assert lines[chat_row + 1].split()[:4] == ["│", "✗", "FailsOnLLMEnd.on_llm_end", "raised"]
    assert "RuntimeError: store down" in lines[chat_row + 1]


def test_legend_gives_every_cell_its_mark_and_meaning():
    out = io.StringIO()
    render_legend(Console(file=out, width=400, color_system=None))
    text = out.getvalue()
    for cell, mark in [("local", "L"), ("inherited", "I"), ("failed", "X"), ("filtered", "F"), ("dropped", "D"), ("subtree", "T"), ("scope", "S")]:
        assert f"{cell} ({mark}): " in text


def test_a_failure_whose_run_name_is_ambiguous_stays_on_the_parent_and_names_the_run(span_exporter, instrumented):
    from langchain_core.runnables import RunnableParallel

    model = FakeListChatModel(responses=["a"], callbacks=[FailsOnLLMEnd()])
    RunnableParallel(first=model, second=model).invoke("q")
    (view,) = build_traces(_records(span_exporter))
    (parallel,) = [node for node, _ in view.walk() if node.span.name.startswith("RunnableParallel")]
    assert [where for where, _ in failure_lines(view, parallel.span)] == ["FailsOnLLMEnd.on_llm_end of chat"] * 2
    assert all(not failure_lines(view, child.span) for child in parallel.children)
