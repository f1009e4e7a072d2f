"""Environment variables callscope reads, once, when it is instrumented.

Precedence is: argument to ``instrument()`` > environment variable > default. An unparsable
environment value logs a warning and falls back to the default; it never raises.
"""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""
.. envvar:: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

The standard OpenTelemetry GenAI switch for message content (prompts, completions, tool
arguments and results, chain inputs and outputs). Default: off. ``true``, ``SPAN_ONLY`` and
``SPAN_AND_EVENT`` put content on spans; ``false``, ``NO_CONTENT`` and ``EVENT_ONLY`` (callscope
emits no log events) keep it off. Secrets are removed whatever the setting.
"""

CALLSCOPE_MAX_IN_FLIGHT_RUNS = "CALLSCOPE_MAX_IN_FLIGHT_RUNS"
"""
.. envvar:: CALLSCOPE_MAX_IN_FLIGHT_RUNS

How many runs may be started and not yet ended before the oldest is ended with status ERROR
("evicted") to keep memory flat. Default: ``10000``.
"""

CALLSCOPE_RUN_TTL_SECONDS = "CALLSCOPE_RUN_TTL_SECONDS"
"""
.. envvar:: CALLSCOPE_RUN_TTL_SECONDS

A run still open this many seconds after it started is ended with status ERROR ("evicted"),
because its end callback will evidently never come. ``0`` disables the age limit (the count
limit still applies). Default: ``3600``.
"""

CALLSCOPE_METRICS = "CALLSCOPE_METRICS"
"""
.. envvar:: CALLSCOPE_METRICS

``false`` turns callscope's GenAI client metrics off (spans are unaffected); ``true`` keeps them
on. With no meter provider configured they cost nothing either way. Default: ``true``.
"""

CALLSCOPE_MAX_ATTRIBUTE_LENGTH = "CALLSCOPE_MAX_ATTRIBUTE_LENGTH"
"""
.. envvar:: CALLSCOPE_MAX_ATTRIBUTE_LENGTH

Longest string callscope writes into one attribute (captured content, error messages); longer
values are cut and marked ``…[N more chars]``. Default: ``8192``.
"""

CALLSCOPE_CONVERSATION_KEYS = "CALLSCOPE_CONVERSATION_KEYS"
"""
.. envvar:: CALLSCOPE_CONVERSATION_KEYS

Comma-separated ``configurable`` / metadata keys whose value names the conversation a run
belongs to (``gen_ai.conversation.id``), first match wins. Default:
``thread_id,session_id,conversation_id`` (LangGraph's thread, ``RunnableWithMessageHistory``'s
session).
"""

CALLSCOPE_TRACE_FILE = "CALLSCOPE_TRACE_FILE"
"""
.. envvar:: CALLSCOPE_TRACE_FILE

A path: every span is also appended there as OTLP/JSON lines, the file ``callscope tree``
reads. :func:`callscope.configure`, :func:`callscope.instrument` and the zero-code path
(``opentelemetry-instrument``, ``callscope run``) add the exporter to the OpenTelemetry SDK tracer
provider they use, behind a ``BatchSpanProcessor``. Default: unset (no file).
"""
