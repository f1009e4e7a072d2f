"""The bridge: what runs inside the traced process.

LangChain's callbacks become OpenTelemetry spans and GenAI metrics here, from
``instrumentor.CallscopeInstrumentor`` down to the exporters. Nothing here imports the trace
tools (``callscope._tools``). The README's "Architecture" section follows one run through these
modules.
"""
