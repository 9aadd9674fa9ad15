"""A feature service as the model's feature vector: names, order, defaults, inputs.

The service is the one definition of what a model sees. Its features, in the service's order,
are the model's columns in training and serving alike; a feature view's `default` tag fills an
entity with no row; on-demand views add the request fields a caller must send. The same spec is
read from the repository's code (to validate declarations before anything is applied) or from
Feast's registry (what training and serving run against).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from shipway.errors import ShipwayError
from shipway.features.on_demand import check_on_demand
from shipway.paths import FEATURE_REPO_DIR

DEFAULT_TAG = "default"
MAX_LAG_TAG = "max_online_lag_hours"


@dataclass(frozen=True)
class Feature:
    name: str
    view: str
    default: float | None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    features: tuple[Feature, ...]
    join_keys: tuple[str, ...]
    request_fields: tuple[str, ...]
    tables: tuple[str, ...]
    """Delta tables the service's feature views read (its training-set inputs)."""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def _table_of(view: Any) -> str:
    return Path(str(view.batch_source.path)).name


def service_spec(
    service: Any,
    views: Mapping[str, Any],
    on_demand: Mapping[str, Any],
    join_key_of: Mapping[str, str],
) -> ServiceSpec:
    """The spec of a Feast FeatureService, given the views and entities it may reference."""
    features: list[Feature] = []
    join_keys: list[str] = []
    request_fields: list[str] = []
    tables: list[str] = []

    def add_view(view: Any) -> None:
        for entity in view.entities:
            if join_key_of[entity] not in join_keys:
                join_keys.append(join_key_of[entity])
        if _table_of(view) not in tables:
            tables.append(_table_of(view))

    for projection in service.feature_view_projections:
        name = projection.name
        if name in views:
            view = views[name]
            add_view(view)
            default = view.tags.get(DEFAULT_TAG)
            value = float(default) if default is not None else None
            features += [Feature(f.name, name, value) for f in projection.features]
        elif name in on_demand:
            odfv = on_demand[name]
            for request in odfv.source_request_sources.values():
                request_fields += [f.name for f in request.schema if f.name not in request_fields]
            for source in odfv.source_feature_view_projections.values():
                if source.name in views:
                    add_view(views[source.name])
            features += [Feature(f.name, name, None) for f in projection.features]
        else:
            raise ShipwayError(f"feature service {service.name} uses unknown view {name!r}")
    return ServiceSpec(
        service.name, tuple(features), tuple(join_keys), tuple(request_fields), tuple(tables)
    )


def registry_spec(store: Any, service: str) -> ServiceSpec:
    """The spec as applied: what training and serving run against."""
    views = {v.name: v for v in store.list_feature_views()}
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    entities = {e.name: e.join_key for e in store.list_entities()}
    return service_spec(store.get_feature_service(service), views, on_demand, entities)


@dataclass(frozen=True)
class FreshnessRule:
    """How stale a view's online rows may get: behind its Delta table (the view's
    `max_online_lag_hours` tag), and old at all (its ttl: older rows no longer count)."""

    view: str
    max_lag_hours: float
    ttl_hours: float


@dataclass(frozen=True)
class Repository:
    """The feature repository as its code defines it, before anything is applied."""

    services: dict[str, ServiceSpec]
    tables: tuple[str, ...]
    """Delta tables every feature view reads: what `feast apply` and the online store follow."""
    freshness: tuple[FreshnessRule, ...] = ()


@cache
def repository(repo: Path = FEATURE_REPO_DIR) -> Repository:
    """Parse the repository's code, without a registry.

    Feast imports the repository's files as top-level modules, with the repository on the path;
    so does this. Each on-demand function is run as Feast will run it (`check_on_demand`).
    """
    from feast.repo_operations import parse_repo

    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    contents = parse_repo(repo)
    check_on_demand(contents.on_demand_feature_views)
    views = {v.name: v for v in contents.feature_views}
    on_demand = {v.name: v for v in contents.on_demand_feature_views}
    entities = {e.name: e.join_key for e in contents.entities}
    services = {
        s.name: service_spec(s, views, on_demand, entities) for s in contents.feature_services
    }
    freshness = tuple(
        FreshnessRule(
            v.name,
            float(v.tags.get(MAX_LAG_TAG, 24)),
            v.ttl.total_seconds() / 3600 if v.ttl else 0.0,
        )
        for v in sorted(views.values(), key=lambda v: v.name)
        if v.online
    )
    return Repository(services, tuple(sorted({_table_of(v) for v in views.values()})), freshness)


def feature_frame(joined: pd.DataFrame, spec: ServiceSpec) -> pd.DataFrame:
    """The model's feature vector: the service's features in order, defaults filled, floats.

    A feature whose view has no default keeps a missing value missing (XGBoost's own path).
    """
    missing = [name for name in spec.feature_names if name not in joined.columns]
    if missing:
        raise ShipwayError(f"feature service {spec.name} returned no column(s) {missing}")
    columns = {}
    for feature in spec.features:
        values = pd.to_numeric(joined[feature.name], errors="coerce").astype(float)
        if feature.default is not None:
            values = values.fillna(feature.default)
        columns[feature.name] = values.to_numpy()
    return pd.DataFrame(columns, index=joined.index)


def entity_rows(rows: pd.DataFrame, spec: ServiceSpec) -> list[dict[str, Any]]:
    """Rows as Feast's online lookup takes them: join keys plus the request fields."""
    wanted = [*spec.join_keys, *spec.request_fields]
    missing = [c for c in wanted if c not in rows.columns]
    if missing:
        raise ShipwayError(
            f"feature service {spec.name} needs {missing} in each row (join keys "
            f"{list(spec.join_keys)}, request fields {list(spec.request_fields)})"
        )
    records = [{str(k): v for k, v in r.items()} for r in rows[wanted].to_dict("records")]
    for record in records:
        for key in spec.join_keys:
            record[key] = int(record[key])
        for field in spec.request_fields:
            value = record[field]
            if isinstance(value, pd.Timestamp):
                record[field] = value.to_pydatetime()
    return records
