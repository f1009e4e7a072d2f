"""The benchmark's configuration names, shared by run.py (which must not import LangChain) and
worker.py. Order is the order the report prints them in."""

OWN_CONFIGS = (
    "none",
    "noop-handler",
    "floor",
    "callscope",
    "callscope-content",
    "callscope-sampled-out",
    "callscope-metrics",
    "callscope-metrics-sampled-out",
    "callscope-batch",
    "callscope-dead-collector",
)
PEERS = ("openllmetry", "openinference", "otel-genai-official")
CONFIGS = OWN_CONFIGS + PEERS
