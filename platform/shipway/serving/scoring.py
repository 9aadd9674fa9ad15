"""One-call scoring: entity ids and request fields in, the score out.

For `POST /score/{model}` the feature service (`shipway.features.server`, which is handed a
`OneCallScorer` by whoever starts it) looks the features up (each served version's own feature
service, recorded in its bundle), fills the views' defaults as training did, and calls the
model through the data plane's front door: Envoy picks the version by the rollout's weights, so
a canary sees its share of scoring traffic like any other. The answer carries the request id
and the version that answered; the prediction log records the exact vector that version scored.

Request body:

    {"entities": {"customer_id": [17], "merchant_id": [4], "event_timestamp": ["..."],
                  "amount": [42.0], "channel": ["online"], "merchant_category": ["travel"],
                  "transaction_id": ["t-1"]},
     "row_keys": ["t-1"]}

`row_keys` is optional: without it, the served bundle's prediction keys (the label's row id, or
the entity keys and time, from the model's declaration) are taken from the entities, when they
are there. `event_timestamp` may be epoch seconds or ISO 8601 (UTC unless it says otherwise),
read alike for the lookup and the row key, so a key names the time its label will. With
`"contributions": true`, the answer explains each row too: `contributions`
holds, per feature of the version that answered and `bias`, one TreeSHAP value per row, adding
up to the row's margin (`shipway.serving.explanations`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd
from prometheus_client import Counter

from shipway.errors import (
    BadGateway,
    BadRequest,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthorized,
)
from shipway.features.lookup import OnlineLookup, request_time
from shipway.names import EVENT_TIMESTAMP, SCORE
from shipway.paths import ServingHome
from shipway.serving.bundle import Bundle, PredictionKeys
from shipway.serving.protocol import (
    CONTRIBUTIONS_OUTPUT,
    CONTRIBUTIONS_PARAMETER,
    EXTRA_INPUTS_PARAMETER,
    FEATURE_VERSION_SEPARATOR,
    ROW_KEYS_PARAMETER,
    wants_contributions,
)
from shipway.serving.state import SavedState

STATE_CHECK_SECONDS = 1.0


class OneCallScorer:
    """Scores a model's rows through the front door at `serving_url`, with the versions and
    bundles the control plane in `serving` saved (re-read within a second of a change)."""

    def __init__(self, serving: ServingHome, serving_url: str) -> None:
        self.serving = serving
        self.http = httpx.AsyncClient(base_url=serving_url, timeout=30.0)
        self._saved = SavedState({})
        self._state_mtime: float | None = None
        self._checked = 0.0

    async def close(self) -> None:
        await self.http.aclose()

    def served(self, model: str) -> dict[str, Bundle | None]:
        """Version → its bundle (None if unreadable), for the versions serving now holds."""
        self._refresh()
        bundles = self._saved.bundles(model)
        if not bundles:
            raise NotFound(f"model {model!r} is not served; served: {sorted(self._saved.models)}")
        return bundles

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked > STATE_CHECK_SECONDS:
            self._checked = now
            path = self.serving.state
            mtime = path.stat().st_mtime if path.exists() else None
            if mtime != self._state_mtime:
                try:
                    self._saved = SavedState.load(path)
                except ServiceError:
                    self._saved = SavedState({})
                self._state_mtime = mtime

    def by_traffic(self, model: str) -> list[Bundle]:
        """The model's readable served bundles, the champion first (`_standing`)."""
        weights = self._saved.models.get(model, {}).get("weights", {})
        bundles = [b for b in self.served(model).values() if b is not None]
        return sorted(bundles, key=lambda b: _standing(b.version, weights), reverse=True)

    def serving_version(self, service: str, owner: str | None = None) -> str | None:
        """The feature version a lookup of `service` reads by default: that of the served
        version with the most traffic among the versions using it, the model that declares the
        service (`owner`) first; at equal traffic the older version (the incumbent of a 50/50
        canary). None when no served version using it records one."""
        self._refresh()
        best: tuple[bool, int, int, str] | None = None
        for model, entry in self._saved.models.items():
            weights = entry.get("weights", {})
            for version, bundle in self._saved.bundles(model).items():
                if bundle is None or bundle.feature_service != service:
                    continue
                if bundle.feature_version is None:
                    continue
                key = (model == owner, *_standing(version, weights), bundle.feature_version)
                if best is None or key > best:
                    best = key
        return best[3] if best else None

    async def score(
        self,
        model: str,
        body: Any,
        request_id: str,
        lookups: Callable[[str | None], OnlineLookup],
        missing: Counter,
        authorization: str | None = None,
    ) -> dict[str, Any]:
        """The scores of `body`'s entities; each served version's features looked up in its
        own feature version (`lookups`), missing entities counted in `missing` (by feature
        service and view); the front door is called with the caller's own `authorization`,
        so it holds that caller to its rate.

        The champion's features go as plain inputs; a served version on another feature
        version (a canary of a feature change) gets its own as `<feature>@<digest>`, which
        its model server reads instead (`protocol.own_version_inputs`): whichever version
        Envoy picks scores its own transformation's values."""
        if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
            raise BadRequest('request body must be {"entities": {column: [values]}}')
        entities: dict[str, list[Any]] = body["entities"]
        explain = wants_contributions(body)
        bundles = self.by_traffic(model)
        sources = list(
            dict.fromkeys(
                (b.feature_service, b.feature_version)
                for b in bundles
                if b.feature_service is not None
            )
        )
        if not sources:
            raise NotFound(
                f"model {model!r}: no served version records its feature service; redeploy it"
            )
        first = sources[0][1]
        columns: dict[str, list[float | None]] = {}
        by_version: dict[str | None, dict[str, list[float | None]]] = {}
        for service, version in sources:
            lookup = lookups(version)
            plan = lookup.service_plan(service)
            found = await lookup.run(plan, entities, fill_defaults=True)
            for view, count in found.missing.items():
                missing.labels(service, view).inc(count)
            suffix = "" if version == first else f"{FEATURE_VERSION_SEPARATOR}{version}"
            for _, feature in plan.outputs:
                columns[feature + suffix] = found.column(feature)
                by_version.setdefault(version, {})[feature] = found.column(feature)
        rows = len(next(iter(columns.values())))
        empty = {
            name: i for name, values in columns.items() for i, v in enumerate(values) if v is None
        }
        if empty:
            raise BadRequest(
                f"no value for {sorted(empty)} (rows {sorted(set(empty.values()))}): the entity "
                "has no row and the feature view declares no default"
            )
        row_keys = body.get("row_keys")
        keys = next((b.prediction_keys for b in bundles if b.prediction_keys is not None), None)
        if row_keys is None and keys is not None:
            row_keys = row_keys_of(entities, keys, rows)
        parameters: dict[str, Any] = {}
        if row_keys is not None:
            parameters[ROW_KEYS_PARAMETER] = [str(k) for k in row_keys]
        if len(sources) > 1:
            parameters[EXTRA_INPUTS_PARAMETER] = "ignore"
        if explain:
            parameters[CONTRIBUTIONS_PARAMETER] = True
        request: dict[str, Any] = {
            "id": request_id,
            "inputs": [
                {
                    "name": name,
                    "shape": [rows],
                    "datatype": "FP64",
                    "data": [float(v) for v in values if v is not None],
                }
                for name, values in columns.items()
            ],
        }
        if parameters:
            request["parameters"] = parameters
        headers = {"x-request-id": request_id}
        if authorization is not None:
            headers["authorization"] = authorization
        try:
            response = await self.http.post(
                f"/v2/models/{model}/infer",
                json=request,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise BadGateway(f"the serving front door is unreachable: {exc}") from None
        if response.status_code >= 400:
            detail = _error_of(response)
            if response.status_code == 401:
                raise Unauthorized(f"the front door refused the caller's key: {detail}")
            if response.status_code == 429:
                raise RateLimited(f"the front door holds the caller to its rate: {detail}")
            if response.status_code < 500:
                raise BadRequest(f"model {model}: {detail}")
            raise BadGateway(f"model {model} answered {response.status_code}: {detail}")
        answer = response.json()
        scores = next(o["data"] for o in answer["outputs"] if o["name"] == SCORE)
        answered = next((b for b in bundles if b.version == answer.get("model_version")), None)
        version = answered.feature_version if answered is not None else first
        scored = {
            "model": model,
            "model_version": answer.get("model_version"),
            "feature_version": version,
            "request_id": request_id,
            "scores": scores,
            "features": by_version.get(version, columns),
        }
        if explain:
            explained = next(o for o in answer["outputs"] if o["name"] == CONTRIBUTIONS_OUTPUT)
            names = explained["parameters"]["columns"]
            values = explained["data"]
            scored["contributions"] = {
                name: values[i :: len(names)] for i, name in enumerate(names)
            }
        return scored


def _standing(version: str, weights: dict[str, Any]) -> tuple[int, int]:
    """How a served version ranks as its model's champion: the most traffic, and at equal
    traffic the older version (the incumbent of a 50/50 canary)."""
    return int(weights.get(version, 0)), -int(version) if version.isdigit() else 0


def row_keys_of(entities: dict[str, Any], keys: PredictionKeys, rows: int) -> list[str] | None:
    """Each row's prediction key from the entities (None when they lack its columns), event
    times read as the lookup reads them (epoch seconds or ISO 8601, in UTC), so a key names the
    time the label will: an epoch read as pandas reads an integer became a 1970 key."""
    wanted = [keys.row_id] if keys.row_id is not None else [*keys.entity_keys, EVENT_TIMESTAMP]
    columns: dict[str, Any] = {}
    for name in wanted:
        values = entities.get(name)
        if not isinstance(values, list) or len(values) != rows:
            continue
        columns[name] = (
            [request_time(v, f"entities.{name}") for v in values]
            if name == EVENT_TIMESTAMP
            else values
        )
    return keys.of(pd.DataFrame(columns))


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
