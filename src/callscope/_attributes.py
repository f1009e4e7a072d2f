"""The names callscope writes on spans: the contract between the two houses.

The bridge (``callscope._bridge``) writes them; the trace tools (``callscope._tools``: the tree,
the file and Jaeger readers) read them back. GenAI, error and server attributes are the
OpenTelemetry semantic conventions' own, named from ``opentelemetry-semantic-conventions`` where
they are written; the names here are callscope's, under ``callscope.``. Plain strings, so that
reading traces imports nothing of the bridge, LangChain or the SDK.
"""

#: The instrumentation scope of every span callscope starts.
TRACER_NAME = "callscope"

# --- which handlers a run reached, and which missed it (the README's handler table) -----------

#: Constructor handlers of this component that received the run.
HANDLERS_LOCAL = "callscope.handlers.local"
#: Runtime handlers passed down to this run.
HANDLERS_INHERITED = "callscope.handlers.inherited"
#: Handlers on the run's manager whose ``ignore_*`` flag kept this run from them.
HANDLERS_FILTERED = "callscope.handlers.filtered"
#: Handlers the step this run's LangChain root started in passed down, which this run lacks.
HANDLERS_DROPPED = "callscope.handlers.dropped"
#: On the run that started without its caller's config: the step it started in.
HANDLERS_DROPPED_IN = "callscope.handlers.dropped_in"
#: Handlers that raised from one of this run's callbacks (each failure is also a span event).
HANDLERS_FAILED = "callscope.handlers.failed"
#: On each LangChain root: one line per handler that missed a run under it, with the reasons.
HANDLERS_MISSED = "callscope.handlers.missed"
#: Prefix of the per-handler root attributes: ``callscope.handlers.missed.<label>``.
HANDLERS_MISSED_PREFIX = HANDLERS_MISSED + "."

# --- another handler's failure: a span event ------------------------------------------------

HANDLER_FAILED_EVENT = "callscope.handler.failed"
#: The failing handler's label, and the callback it raised from.
FAILED_HANDLER = "callscope.handler"
FAILED_CALLBACK = "callscope.callback"
#: On a failure event recorded on a parent's span because the failing run's own span had ended
#: (LangChain dispatched the callback to callscope before the failing handler): that run's
#: name, so a reader puts the failure under the child of that name. (Not its span id: keeping
#: that for every run would cost every run, and nothing at all is spent until a handler fails.)
FAILED_RUN = "callscope.callback.run"
#: The handler has ``raise_error=True``: its exception aborted the run.
FAILED_ABORTED = "callscope.handler.raise_error"

# --- markers: a scalar True, written only where the fact holds -------------------------------
# The arrays above say the detail, but an exact-match search cannot look inside an array, at an
# event's name, or (in Jaeger v2's in-memory store) at a span's status: these markers are for it.

#: For exact-match search (Jaeger tags, tail sampling): a span whose run ended with status ERROR.
ERROR_MARK = "callscope.error"
#: For exact-match search (Jaeger tags, tail sampling): a span holding a handler-failed event.
HANDLER_FAILED_MARK = HANDLER_FAILED_EVENT
#: For exact-match search (Jaeger tags, tail sampling): the span with ``HANDLERS_DROPPED_IN``.
CONFIG_DROPPED = "callscope.config.dropped"
#: For exact-match search (Jaeger tags, tail sampling): ``callscope.missed_by.<label>`` on the
#: LangChain root that has ``callscope.handlers.missed.<label>``.
MISSED_BY_PREFIX = "callscope.missed_by."

# --- the run ----------------------------------------------------------------------------------

RUN_TYPE = "callscope.run.type"
COMPONENT = "callscope.component"
INPUT = "callscope.input"
OUTPUT = "callscope.output"
RETRY_ATTEMPT = "callscope.retry.attempt"
#: The user's RunnableConfig tags and metadata set on this run (not inherited from its parent).
RUN_TAGS = "callscope.run.tags"
RUN_METADATA_PREFIX = "callscope.run.metadata."
#: With content capture on: a custom event's payload.
EVENT_DATA = "callscope.event.data"
STREAM_CHUNKS = "callscope.stream.chunks"
STREAM_ABANDONED = "callscope.stream.abandoned"
RUN_CANCELLED = "callscope.run.cancelled"
#: A run whose end never arrived, ended by callscope (in-flight limit, TTL, exit, uninstrument).
RUN_EVICTED = "callscope.run.evicted"
LANGGRAPH_NODE = "callscope.langgraph.node"
LANGGRAPH_STEP = "callscope.langgraph.step"
#: Set instead of an error when LangGraph steered a run with an exception.
LANGGRAPH_CONTROL_FLOW = "callscope.langgraph.control_flow"
LANGGRAPH_INTERRUPTED = "callscope.langgraph.interrupted"
LANGGRAPH_INTERRUPT_IDS = "callscope.langgraph.interrupt.ids"
LANGGRAPH_GOTO = "callscope.langgraph.goto"
LANGGRAPH_DRAIN_REASON = "callscope.langgraph.drain_reason"
LANGGRAPH_RESUMED = "callscope.langgraph.resumed"
