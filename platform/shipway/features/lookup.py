"""Online lookups on the hot path: a feature service's values for a few entities, without the
SDK's per-call planning.

Feast's `get_online_features` plans every call again (resolve the service, group references,
deduplicate entities, build protobuf responses); `feast serve` then converts that protobuf to
JSON. Here the plan is made once per feature service and registry version, and a call is one
`online_read` per feature view (Feast's own online-store implementation, so SQLite and Redis are
read exactly as Feast wrote them), the on-demand views' transformation (Feast's
`transform_dict`, from the registry), and plain Python values out.

Values and statuses are Feast's: a feature of an entity with no row is null with status
NOT_FOUND. `fill_defaults` replaces such nulls with the view's `default` tag (what training and
the model see), and the status stays NOT_FOUND so the caller still knows.

Inputs are bounded, each with a named refusal: at most `MAX_ENTITIES` entities a call,
`MAX_FEATURES` different features in a feature list (a reference given twice is read once),
`MAX_CELLS` values in an answer (entities times columns), join keys within int64, timestamps
within what pandas and Feast hold (and read as UTC, whatever offset they carry: training reads
them so). A lookup of more than `INLINE_ENTITIES` entities runs on a worker thread, so small ones
are never stuck behind it; the plans of ad-hoc feature lists are kept up to `MAX_PLAN_BYTES`
(their estimated size), the least recently used dropped first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shipway.errors import BadRequest, shown
from shipway.features.service import DEFAULT_TAG

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
EPOCH = "1970-01-01T00:00:00Z"
MAX_ENTITIES = 10_000
MAX_FEATURES = 256
MAX_CELLS = 200_000
INLINE_ENTITIES = 200
MAX_PLAN_BYTES = 4 << 20
INT64 = (-(2**63), 2**63 - 1)
# pandas' nanosecond timestamps: what Feast's on-demand functions and training read.
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 11, tzinfo=UTC)


@dataclass(frozen=True)
class ViewRead:
    """One feature view's part of a plan: which features to read for which join keys."""

    view: Any
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    default: float | None

    @property
    def name(self) -> str:
        return str(self.view.name)


@dataclass(frozen=True)
class OnDemandStep:
    view: Any
    inputs: tuple[str, ...]
    """Request fields and source-view features the transformation reads."""
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What one lookup of a feature service (or a feature list) does, made once."""

    name: str
    join_keys: tuple[str, ...]
    request_fields: tuple[str, ...]
    reads: tuple[ViewRead, ...]
    on_demand: tuple[OnDemandStep, ...]
    outputs: tuple[tuple[str, str], ...]
    """(view, feature) in the service's order: the response's features after the join keys."""
    full_names: bool = False

    @property
    def feature_names(self) -> list[str]:
        names = [
            f"{view}__{feature}" if self.full_names else feature for view, feature in self.outputs
        ]
        return [*self.join_keys, *names]


@dataclass
class Lookup:
    """A lookup's answer, column by column, as Feast's response has it."""

    feature_names: list[str]
    values: list[list[Any]]
    statuses: list[list[str]]
    timestamps: list[list[str]]
    missing: dict[str, int] = field(default_factory=dict)
    """Entities not found, per feature view."""

    def to_feast(self) -> dict[str, Any]:
        """The body of Feast's `/get-online-features` answer."""
        return {
            "metadata": {"feature_names": self.feature_names},
            "results": [
                {"values": v, "statuses": s, "event_timestamps": t}
                for v, s, t in zip(self.values, self.statuses, self.timestamps, strict=True)
            ],
        }

    def column(self, name: str) -> list[Any]:
        return self.values[self.feature_names.index(name)]


def _plan_bytes(key: tuple[str, ...], plan: Plan) -> int:
    """What a kept plan costs, estimated: its key's strings and its columns, each with its
    Python object overhead (~100 bytes)."""
    return sum(len(part) + 100 for part in key) + 200 * len(plan.feature_names)


def _value(proto: Any) -> Any:
    kind = proto.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(proto, kind)


def _stamp(ts: datetime | None) -> str:
    if ts is None:
        return EPOCH
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_time(value: Any, name: str) -> datetime:
    """A timestamp request field, in UTC: epoch seconds or ISO 8601 (UTC when no zone is
    given; another offset is converted, so `09:30+05:00` is 04:30 UTC as in training)."""
    expected = f"{name}: expected a timestamp (epoch seconds or ISO 8601), got {shown(value)}"
    if isinstance(value, bool):
        raise BadRequest(expected)
    try:
        if isinstance(value, datetime):
            stamp = value
        elif isinstance(value, int | float):
            stamp = datetime.fromtimestamp(value, tz=UTC)
        elif isinstance(value, str):
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            raise BadRequest(expected)
        stamp = stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            f"{name}: {shown(value)} is not a timestamp between {EARLIEST:%Y-%m-%d} and "
            f"{LATEST:%Y-%m-%d} (epoch seconds or ISO 8601)"
        ) from None
    if not EARLIEST <= stamp <= LATEST:
        raise BadRequest(
            f"{name}: {shown(value)} is outside {EARLIEST:%Y-%m-%d} .. {LATEST:%Y-%m-%d}, the "
            "times the features can be computed for"
        )
    return stamp


def _kind(dtype: Any) -> str:
    from feast.types import Float32, Float64, Int32, Int64, String, UnixTimestamp

    if dtype == UnixTimestamp:
        return "timestamp"
    if dtype in (Float64, Float32, Int64, Int32):
        return "number"
    return "string" if dtype == String else "other"


class OnlineLookup:
    """Plans and runs lookups against one FeatureStore (one registry version)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.config = store.config
        self.provider = store._get_provider()
        self.views = {v.name: v for v in store.list_feature_views()}
        self.on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
        self.join_key_of = {e.name: e.join_key for e in store.list_entities()}
        self.services = {s.name: s for s in store.list_feature_services()}
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._feature_plans: OrderedDict[tuple[str, ...], tuple[Plan, int]] = OrderedDict()
        self.plan_bytes = 0
        """The estimated size of the ad-hoc plans kept (at most `MAX_PLAN_BYTES`)."""
        self._field_kinds = {
            f.name: _kind(f.dtype)
            for view in self.on_demand.values()
            for source in view.source_request_sources.values()
            for f in source.schema
        }

    def service_plan(self, service: str) -> Plan:
        key = ("service", service)
        if key not in self._plans:
            if service not in self.services:
                raise BadRequest(
                    f"unknown feature service {service!r}; this store has {sorted(self.services)}"
                )
            projections = [
                (p.name, tuple(f.name for f in p.features))
                for p in self.services[service].feature_view_projections
            ]
            self._plans[key] = self._plan(service, projections, full_names=False)
        return self._plans[key]

    def features_plan(self, refs: Sequence[str], full_names: bool) -> Plan:
        """The plan of an ad-hoc feature list, each reference read once, in the order first
        given; the most recently used plans are kept, up to `MAX_PLAN_BYTES`."""
        unique = list(dict.fromkeys(refs))
        if len(unique) > MAX_FEATURES:
            raise BadRequest(
                f'"features": {len(unique)} different features in one request; at most '
                f"{MAX_FEATURES} (split the request, or name a feature service)"
            )
        key = (str(full_names), *unique)
        if key in self._feature_plans:
            self._feature_plans.move_to_end(key)
        else:
            projections: dict[str, list[str]] = {}
            for ref in unique:
                view, _, feature = str(ref).partition(":")
                if not feature:
                    raise BadRequest(f"feature {ref!r}: expected 'view:feature'")
                known = self._view_features(view)
                if known is None:
                    raise BadRequest(f"feature {ref!r}: no feature view {view!r}")
                if feature not in known:
                    raise BadRequest(f"feature {ref!r}: view {view!r} has no feature {feature!r}")
                projections.setdefault(view, []).append(feature)
            plan = self._plan(
                "features", [(v, tuple(f)) for v, f in projections.items()], full_names
            )
            size = _plan_bytes(key, plan)
            self._feature_plans[key] = (plan, size)
            self.plan_bytes += size
            while self.plan_bytes > MAX_PLAN_BYTES and len(self._feature_plans) > 1:
                self.plan_bytes -= self._feature_plans.popitem(last=False)[1][1]
        return self._feature_plans[key][0]

    def _view_features(self, name: str) -> list[str] | None:
        if name in self.views:
            return [f.name for f in self.views[name].features]
        if name in self.on_demand:
            return [f.name for f in self.on_demand[name].features]
        return None

    def _plan(
        self, name: str, projections: Sequence[tuple[str, tuple[str, ...]]], full_names: bool
    ) -> Plan:
        wanted: dict[str, list[str]] = {}
        join_keys: list[str] = []
        request_fields: list[str] = []
        steps: list[OnDemandStep] = []
        outputs: list[tuple[str, str]] = []

        def read(view_name: str, features: Sequence[str]) -> None:
            view = self.views[view_name]
            for entity in view.entities:
                if self.join_key_of[entity] not in join_keys:
                    join_keys.append(self.join_key_of[entity])
            have = wanted.setdefault(view_name, [])
            have += [f for f in features if f not in have]

        for view_name, features in projections:
            outputs += [(view_name, f) for f in features]
            if view_name in self.views:
                read(view_name, features)
                continue
            odfv = self.on_demand[view_name]
            inputs: list[str] = []
            for source in odfv.source_request_sources.values():
                for f in source.schema:
                    inputs.append(f.name)
                    if f.name not in request_fields:
                        request_fields.append(f.name)
            for source in odfv.source_feature_view_projections.values():
                names = [f.name for f in source.features]
                read(source.name, names)
                inputs += names
            steps.append(OnDemandStep(odfv, tuple(inputs), features))
        reads = []
        for view_name, names in wanted.items():
            view = self.views[view_name]
            keys = tuple(self.join_key_of[e] for e in view.entities)
            default = view.tags.get(DEFAULT_TAG)
            reads.append(
                ViewRead(view, keys, tuple(names), None if default is None else float(default))
            )
        return Plan(
            name,
            tuple(join_keys),
            tuple(request_fields),
            tuple(reads),
            tuple(steps),
            tuple(outputs),
            full_names,
        )

    async def run(
        self, plan: Plan, entities: Mapping[str, Sequence[Any]], fill_defaults: bool = False
    ) -> Lookup:
        """`lookup`, on a worker thread when it has more than `INLINE_ENTITIES` entities."""
        if isinstance(entities, Mapping) and any(
            isinstance(v, list) and len(v) > INLINE_ENTITIES for v in entities.values()
        ):
            return await asyncio.to_thread(self.lookup, plan, entities, fill_defaults)
        return self.lookup(plan, entities, fill_defaults)

    def lookup(
        self, plan: Plan, entities: Mapping[str, Sequence[Any]], fill_defaults: bool = False
    ) -> Lookup:
        """Look `entities` (column → values: join keys and request fields) up by `plan`."""
        if not isinstance(entities, Mapping) or not entities:
            raise BadRequest('"entities" must be an object of column → list of values')
        needed = [*plan.join_keys, *plan.request_fields]
        missing = [c for c in needed if c not in entities]
        if missing:
            raise BadRequest(
                f"entities lack {missing}: {plan.name} needs join keys {list(plan.join_keys)}"
                + (
                    f" and request fields {list(plan.request_fields)}"
                    if plan.request_fields
                    else ""
                )
            )
        lengths = {c: len(v) if isinstance(v, list) else -1 for c, v in entities.items()}
        bad = [c for c, n in lengths.items() if n < 0]
        if bad:
            raise BadRequest(f"entities {bad}: each must be a list of values")
        n = lengths[needed[0]] if needed else max(lengths.values())
        if max(lengths.values()) > MAX_ENTITIES:
            raise BadRequest(
                f"entities: {max(lengths.values())} values in one request; at most "
                f"{MAX_ENTITIES} (split the request)"
            )
        cells = n * len(plan.feature_names)
        if cells > MAX_CELLS:
            raise BadRequest(
                f"entities: {n} entities of {len(plan.feature_names)} columns is {cells} values "
                f"in one answer; at most {MAX_CELLS} (split the request)"
            )
        uneven = {c: k for c, k in lengths.items() if c in needed and k != n}
        if uneven:
            raise BadRequest(f"entities have different lengths: {lengths}")
        keys = {k: [self._join_value(k, v) for v in entities[k]] for k in plan.join_keys}
        columns: dict[tuple[str, str], list[Any]] = {}
        statuses: dict[tuple[str, str], list[str]] = {}
        stamps: dict[tuple[str, str], list[str]] = {}
        counts: dict[str, int] = {}
        read_rows = self._read(plan, keys, n)
        for read in plan.reads:
            not_found = 0
            for feature in read.features:
                columns[(read.name, feature)] = []
                statuses[(read.name, feature)] = []
                stamps[(read.name, feature)] = []
            for ts, row in read_rows[read.name]:
                stamp = _stamp(ts)
                found_any = False
                for feature in read.features:
                    proto = row.get(feature) if row else None
                    value = None if proto is None else _value(proto)
                    found = value is not None
                    found_any = found_any or found
                    if not found and fill_defaults:
                        value = read.default
                    columns[(read.name, feature)].append(value)
                    statuses[(read.name, feature)].append(PRESENT if found else NOT_FOUND)
                    stamps[(read.name, feature)].append(stamp if found else EPOCH)
                if not found_any:
                    not_found += 1
            if not_found:
                counts[read.name] = not_found
        for step in plan.on_demand:
            inputs: dict[str, list[Any]] = {}
            for name in step.inputs:
                if name in plan.request_fields:
                    inputs[name] = self._request_values(name, entities[name])
                else:
                    view = next(r.name for r in plan.reads if name in r.features)
                    inputs[name] = columns[(view, name)]
            try:
                # Feast's function from the registry; `transform_dict` would add a type check
                # and full-name copies per call (a third of a lookup's time).
                transformation = step.view.feature_transformation
                out = (
                    step.view.transform_dict(inputs)
                    if step.view.singleton or not hasattr(transformation, "udf")
                    else transformation.udf(inputs)
                )
            except (TypeError, ValueError, AttributeError) as error:
                raise BadRequest(f"on-demand view {step.view.name}: {error}") from None
            for feature in step.outputs:
                columns[(step.view.name, feature)] = list(out[feature])
                statuses[(step.view.name, feature)] = [PRESENT] * n
                stamps[(step.view.name, feature)] = [EPOCH] * n
        values = [keys[k] for k in plan.join_keys]
        status = [[PRESENT] * n for _ in plan.join_keys]
        times = [[EPOCH] * n for _ in plan.join_keys]
        for ref in plan.outputs:
            values.append(columns[ref])
            status.append(statuses[ref])
            times.append(stamps[ref])
        return Lookup(plan.feature_names, values, status, times, counts)

    def _read(
        self, plan: Plan, keys: dict[str, list[int]], n: int
    ) -> dict[str, list[tuple[datetime | None, dict[str, Any] | None]]]:
        """Each view's rows for the entities: Feast's `online_read` per view, or, on Redis,
        every view's HMGETs in one pipeline (one round trip, as Feast's own provider does)."""
        from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        protos = {
            read.name: [
                EntityKey(
                    join_keys=list(read.join_keys),
                    entity_values=[Value(int64_val=keys[k][i]) for k in read.join_keys],
                )
                for i in range(n)
            ]
            for read in plan.reads
        }
        store = self.provider.online_store
        if not isinstance(store, RedisOnlineStore):
            return {
                read.name: self.provider.online_read(
                    self.config, read.view, protos[read.name], list(read.features)
                )
                for read in plan.reads
            }
        commands: list[tuple[bytes, list[Any]]] = []
        spans = []
        for read in plan.reads:
            name = _versioned_fv_name(read.view, self.config)
            requested, fields = store._generate_hset_keys_for_features(
                read.view, list(read.features), fv_name_override=name
            )
            spans.append((read.name, name, requested, len(commands)))
            redis_keys = store._generate_redis_keys_for_entities(self.config, protos[read.name])
            commands += [(key, fields) for key in redis_keys]
        replies = store._read_hash_fields(self.config, commands)
        return {
            view: [
                store._get_features_for_entity(reply, name, requested)
                for reply in replies[start : start + n]
            ]
            for view, name, requested, start in spans
        }

    @staticmethod
    def _join_value(key: str, value: Any) -> int:
        expected = f"join key {key!r}: expected an int64 integer, got {shown(value)}"
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise BadRequest(expected)
        if isinstance(value, str):
            try:
                number = int(value) if len(value) <= 20 else None
            except ValueError:
                number = None
            if number is None:
                raise BadRequest(expected)
        else:
            number = value
        if not INT64[0] <= number <= INT64[1]:
            raise BadRequest(f"{expected} (outside int64)")
        return number

    def _request_values(self, name: str, values: Sequence[Any]) -> list[Any]:
        kind = self._field_kinds.get(name)
        if kind == "timestamp":
            return [request_time(v, name) for v in values]
        if kind == "number":
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
            if bad:
                raise BadRequest(f"request field {name!r}: expected numbers, got {bad[0]!r}")
        elif kind == "string":
            bad = [v for v in values if not isinstance(v, str)]
            if bad:
                raise BadRequest(f"request field {name!r}: expected strings, got {bad[0]!r}")
        return list(values)
