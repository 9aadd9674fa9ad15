"""On-demand feature functions as Feast runs them: from the registry, from their source alone.

`feast apply` stores an on-demand view's function as its source text; training's
point-in-time join and every online lookup rebuild it from that text, without the module
around it. A function that uses a name defined at its module's top (`import math` there, a
constant, a helper) works when imported and fails with a `NameError` in every run. So each
function is rebuilt the way Feast rebuilds it (the view's registry form, read back) and called
on two sample rows of its inputs when the repository is read: the code location's load and
`shipway ci` refuse such a view, naming the missing name, before any run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from shipway.errors import PolicyError

SAMPLE_ROWS = 2


def _sample(dtype: Any) -> Any:
    from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    if dtype == UnixTimestamp:
        return datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    if dtype in (Float64, Float32):
        return 1.5
    if dtype in (Int64, Int32):
        return 1
    if dtype == Bool:
        return True
    return "x" if dtype == String else None


def sample_inputs(view: Any) -> dict[str, list[Any]]:
    """Two rows of what the view's function reads: its request fields and source features."""
    fields = [f for source in view.source_request_sources.values() for f in source.schema]
    fields += [
        f for source in view.source_feature_view_projections.values() for f in source.features
    ]
    return {f.name: [_sample(f.dtype)] * SAMPLE_ROWS for f in fields}


def check_on_demand(views: list[Any]) -> None:
    """Refuse a view whose function, rebuilt from its source as Feast does, uses a name it
    does not define. Other errors on made-up sample values are left to the real inputs."""
    from feast.on_demand_feature_view import OnDemandFeatureView

    for view in views:
        rebuilt = OnDemandFeatureView.from_proto(view.to_proto())
        function = rebuilt.feature_transformation.udf
        inputs: Any = sample_inputs(view)
        if view.mode == "pandas":
            inputs = pd.DataFrame(inputs)
        try:
            function(inputs)
        except NameError as exc:
            name = getattr(exc, "name", None) or str(exc)
            raise PolicyError(
                f"on-demand view {view.name}: its function {function.__name__}() uses "
                f"{name!r}, defined outside the function; Feast runs the function from its "
                f"source alone, so every training set and lookup would fail. Import or define "
                f"{name!r} inside the function"
            ) from None
        except Exception:  # made-up values may be wrong for it; a missing name is not
            continue
