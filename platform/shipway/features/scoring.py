"""One-call scoring: entity ids and request fields in, the score out.

For `POST /score/{model}` the feature service looks the features up (each served version's own
feature service, recorded in its bundle), fills the views' defaults as training did, and calls
the model through the data plane's front door: Envoy picks the version by the rollout's weights,
so a canary sees its share of scoring traffic like any other. The answer carries the request id
and the version that answered; the prediction log records the exact vector that version scored.

Request body:

    {"entities": {"customer_id": [17], "merchant_id": [4], "event_timestamp": ["..."],
                  "amount": [42.0], "channel": ["online"], "merchant_category": ["travel"],
                  "transaction_id": ["t-1"]},
     "row_keys": ["t-1"]}

`row_keys` is optional: without it, the model's declared prediction keys (its label's row id,
or its entity keys and time) are taken from the entities, when they are there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from shipway.errors import BadRequest, NotFound
from shipway.features.lookup import OnlineLookup
from shipway.names import SCORE
from shipway.paths import ShipwayHome
from shipway.serving.protocol import EXTRA_INPUTS_PARAMETER, ROW_KEYS_PARAMETER

STATE_CHECK_SECONDS = 1.0


class Scorer:
    def __init__(
        self, home: ShipwayHome, lookup: OnlineLookup, serving_url: str, models_dir: Path
    ) -> None:
        self.home = home
        self.models_dir = models_dir
        self.lookup = lookup
        self.http = httpx.AsyncClient(base_url=serving_url, timeout=30.0)
        self._served: dict[str, dict[str, str | None]] = {}
        self._state_mtime: float | None = None
        self._checked = 0.0
        self._keys: dict[str, Any] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def served(self, model: str) -> dict[str, str | None]:
        """Version → its feature service, for the versions serving now holds for `model`."""
        now = time.monotonic()
        if now - self._checked > STATE_CHECK_SECONDS:
            self._checked = now
            path = self.home.serving / ".control" / "state.json"
            mtime = path.stat().st_mtime if path.exists() else None
            if mtime != self._state_mtime:
                self._state_mtime = mtime
                self._served = _served_versions(path)
        if model not in self._served or not self._served[model]:
            raise NotFound(f"model {model!r} is not served; served: {sorted(self._served)}")
        return self._served[model]

    def prediction_keys(self, model: str, entities: dict[str, list[Any]]) -> list[str] | None:
        from shipway.models.catalog import declaration_files, prediction_keys
        from shipway.models.declaration import load_declaration

        if model not in self._keys:
            found = (load_declaration(p) for p in declaration_files(self.models_dir))
            self._keys[model] = next((d for d in found if d.name == model), None)
        declaration = self._keys[model]
        if declaration is None:
            return None
        return prediction_keys(declaration, pd.DataFrame(entities))

    async def score(self, model: str, body: Any, request_id: str, missing: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
            raise BadRequest('request body must be {"entities": {column: [values]}}')
        entities: dict[str, list[Any]] = body["entities"]
        services = sorted({s for s in self.served(model).values() if s is not None})
        if not services:
            raise NotFound(
                f"model {model!r}: no served version records its feature service; redeploy it"
            )
        columns: dict[str, list[float | None]] = {}
        for service in services:
            plan = self.lookup.service_plan(service)
            found = self.lookup.lookup(plan, entities, fill_defaults=True)
            for view, count in found.missing.items():
                missing.labels(service, view).inc(count)
            for _, feature in plan.outputs:
                columns[feature] = found.column(feature)
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
        if row_keys is None:
            row_keys = self.prediction_keys(model, entities)
        parameters: dict[str, Any] = {}
        if row_keys is not None:
            parameters[ROW_KEYS_PARAMETER] = [str(k) for k in row_keys]
        if len(services) > 1:
            parameters[EXTRA_INPUTS_PARAMETER] = "ignore"
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
        try:
            response = await self.http.post(
                f"/v2/models/{model}/infer",
                json=request,
                headers={"x-request-id": request_id},
            )
        except httpx.HTTPError as exc:
            raise ScoringUnavailable(f"the serving front door is unreachable: {exc}") from None
        if response.status_code >= 400:
            detail = _error_of(response)
            if response.status_code < 500:
                raise BadRequest(f"model {model}: {detail}")
            raise ScoringUnavailable(f"model {model} answered {response.status_code}: {detail}")
        answer = response.json()
        scores = next(o["data"] for o in answer["outputs"] if o["name"] == SCORE)
        return {
            "model": model,
            "model_version": answer.get("model_version"),
            "request_id": request_id,
            "scores": scores,
            "features": columns,
        }


class ScoringUnavailable(Exception):
    """The data plane failed: the scoring endpoint answers 502 and says why."""


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def _served_versions(path: Path) -> dict[str, dict[str, str | None]]:
    from shipway.serving.bundle import read_bundle

    if not path.exists():
        return {}
    try:
        models = json.loads(path.read_text())["models"]
    except (ValueError, KeyError):
        return {}
    served: dict[str, dict[str, str | None]] = {}
    for model, record in models.items():
        versions = record.get("versions", {})
        served[model] = {}
        for version, where in versions.items():
            try:
                served[model][version] = read_bundle(Path(where["bundle"])).feature_service
            except (BadRequest, KeyError, TypeError):
                served[model][version] = None
    return served
