"""Instructions per LangChain run, under callgrind: robust on a shared, noisy machine where
wall-clock timings are not.

    python benchmarks/per_run_instructions.py [SRC ...]

For each ``SRC`` (a ``src`` directory holding a callscope checkout; default: this one), runs the
benchmark's ``invoke`` workload (``prompt | chat model | parser | lambda``, one runtime handler
receiving every run: 5 runs per invoke) under ``valgrind --tool=callgrind`` twice, with 50 and
250 invokes after a warm-up and with the garbage collector off, and prints the difference
divided by the 1000 extra runs. Needs valgrind; takes about a minute and a half per ``SRC``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOAD = """
import gc, sys
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
import callscope

class Sink(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

class Runtime(BaseCallbackHandler):
    def on_chain_start(self, *args, **kwargs):
        pass

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Sink()))
callscope.instrument(tracer_provider=provider)
chain = ChatPromptTemplate.from_template("q {x}") | FakeListChatModel(responses=["abc"]) | StrOutputParser() | RunnableLambda(lambda s: s)
config = {"callbacks": [Runtime()]}
for _ in range(200):
    chain.invoke({"x": "1"}, config)
gc.collect()
gc.disable()
for _ in range(int(sys.argv[1])):
    chain.invoke({"x": "1"}, config)
"""
RUNS_PER_INVOKE = 5


def instructions(src: Path, invokes: int, script: Path) -> int:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg", sys.executable, str(script), str(invokes)],
            env={**os.environ, "PYTHONPATH": str(src)},
            capture_output=True,
            text=True,
            check=True,
        )
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    sources = [Path(arg).resolve() for arg in sys.argv[1:]] or [Path(__file__).resolve().parents[1] / "src"]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        for src in sources:
            low, high = instructions(src, 50, script), instructions(src, 250, script)
            print(f"{src}: {(high - low) / (200 * RUNS_PER_INVOKE):,.0f} instructions per run")


if __name__ == "__main__":
    main()
