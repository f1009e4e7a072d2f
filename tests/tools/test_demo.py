"""The demo's per-model metrics summary, from a real SDK meter provider's histograms."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from callscope._tools.demo import ModelSummary, summarize_models
from callscope._bridge.metrics import DURATION_BUCKETS


def test_summary_per_model_with_quantiles_from_the_buckets() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("callscope")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    model = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-test"}
    for _ in range(50):
        duration.record(0.005, model)
    for _ in range(49):
        duration.record(0.03, {**model, "gen_ai.response.model": "gpt-test-1"})
    duration.record(0.03, {**model, "error.type": "TimeoutError"})
    tokens.record(7, {**model, "gen_ai.token.type": "input"})
    tokens.record(3, {**model, "gen_ai.token.type": "output"})
    duration.record(0.5, {"gen_ai.operation.name": "execute_tool"})  # not a model: not summarized
    unnamed = {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "fakelistllm"}
    duration.record(0.2, unnamed)
    summaries = summarize_models(reader.get_metrics_data())
    provider.shutdown()
    # Named as their spans are: an unnamed model is plain "text_completion", its provider aside.
    assert [(s.model, s.provider) for s in summaries] == [("chat gpt-test", "openai"), ("text_completion", "fakelistllm")]
    chat, completion = summaries
    # 50 points in (0, 0.01] and 50 in (0.02, 0.04]: the median is the top of the lower bucket,
    # p95 is 45/50 of the way through the upper one, which the exact max (0.03) closes.
    assert chat.p50_s == pytest.approx(0.01)
    assert chat.p95_s == pytest.approx(0.029)
    assert (chat.runs, chat.errors, chat.input_tokens, chat.output_tokens) == (100, 1, 7, 3)
    assert completion == ModelSummary("text_completion", "fakelistllm", 1, 0, 0.2, 0.2, None, None)


def test_no_metrics_no_summary() -> None:
    assert summarize_models(None) == []
