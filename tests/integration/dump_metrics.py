"""rotel metrics processor (run inside rotel's embedded Python): append every received histogram
point to the JSON-lines file named by $CALLSCOPE_METRIC_DUMP, with its metric's name, unit and
kind, its scope and its resource's service.name."""

import json
import os


# rotel runs every processor file in one namespace: a helper named like dump_spans.py's would
# replace it there, so these names are this file's own.
def _metric_attribute(any_value):
    return any_value.value if any_value is not None else None


def process_metrics(resource_metrics):
    resource = {}
    if resource_metrics.resource is not None:
        resource = {kv.key: _metric_attribute(kv.value) for kv in resource_metrics.resource.attributes}
    rows = []
    for scope_metrics in resource_metrics.scope_metrics:
        scope = scope_metrics.scope.name if scope_metrics.scope is not None else None
        for metric in scope_metrics.metrics:
            # rotel's MetricData is a tagged union; its one field holds the Histogram, Sum, ...
            kind = type(metric.data).__name__.removeprefix("MetricData_")
            data = metric.data[0]
            for point in getattr(data, "data_points", ()):
                rows.append(
                    {
                        "service": resource.get("service.name"),
                        "scope": scope,
                        "name": metric.name,
                        "unit": metric.unit,
                        "kind": kind,
                        "attributes": {kv.key: _metric_attribute(kv.value) for kv in point.attributes},
                        "count": getattr(point, "count", None),
                        "sum": getattr(point, "sum", None),
                        "explicit_bounds": list(getattr(point, "explicit_bounds", None) or ()),
                    }
                )
    with open(os.environ["CALLSCOPE_METRIC_DUMP"], "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=repr) + "\n")
