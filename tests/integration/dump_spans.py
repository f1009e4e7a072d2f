"""rotel trace processor (run inside rotel's embedded Python): append every received span to the
JSON-lines file named by $CALLSCOPE_SPAN_DUMP, with its resource's service.name."""

import json
import os


def _value(any_value):
    value = any_value.value if any_value is not None else None
    # rotel hands arrays over as an ArrayValue: a sequence of AnyValue, with no `values` field.
    if type(value).__name__ == "ArrayValue":
        return [_value(item) for item in value]
    return value


def process_spans(resource_spans):
    resource = {}
    if resource_spans.resource is not None:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
    rows = []
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            rows.append(
                {
                    "service": resource.get("service.name"),
                    "trace_id": bytes(span.trace_id).hex(),
                    "span_id": bytes(span.span_id).hex(),
                    "parent_span_id": bytes(span.parent_span_id).hex(),
                    "name": span.name,
                    "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                }
            )
    with open(os.environ["CALLSCOPE_SPAN_DUMP"], "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=repr) + "\n")
