"""The trace tools: what reads traces afterwards.

The ``callscope`` command (``cli``), the terminal tree (``tree``), the OTLP/JSON and Jaeger
readers (``otlp_json``, ``jaeger``) and the demo (``demo``). Reading traces imports neither
LangChain nor OpenTelemetry; only the demo, an application of its own, runs the bridge.
"""
