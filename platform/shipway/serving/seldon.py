"""Seldon Core v2 on Kubernetes: the rollout's scale-out serving target.

The embedded control plane (`shipway.serving.control_plane`) serves each version as an MLServer
process behind Envoy. On a cluster, Seldon Core does that: each version is a `Model`, and one
`Experiment` per model splits traffic between them (candidates with weights) and mirrors it
for shadow. This module holds both halves of that target:

- `manifests`: the `Model` and `Experiment` objects for what a model serves at one point of
  its rollout, checked against `deploy/seldon/schemas/` (the CRDs' required fields and types);
  `shipway render seldon <model>` writes them as YAML;
- `SeldonServing`: the rollout controller's `Serving` over the Kubernetes API, so the same
  controller drives a cluster by creating `Model`s and patching the `Experiment`'s weights.

Kubernetes names allow no `_`: `fraud_model` v4 is the Model `fraud-model-v4` and the
Experiment `fraud-model`; the labels `shipway.io/model` and `shipway.io/version` keep the
names Shipway uses everywhere else. Callers address the experiment, which keeps its name
through every rollout (Seldon's `seldon-model: fraud-model.experiment` header).
May import `shipway.errors` and `shipway.paths` only.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

from shipway.errors import BadRequest, ServiceError, ShipwayError
from shipway.paths import DEPLOY_DIR
from shipway.serving.bundle import read_bundle

API_VERSION = "mlops.seldon.io/v1alpha1"
MODEL_LABEL = "shipway.io/model"
VERSION_LABEL = "shipway.io/version"
SCHEMAS_DIR = DEPLOY_DIR / "seldon" / "schemas"
PLURALS = {"Model": "models", "Experiment": "experiments"}
MERGE_PATCH = "application/merge-patch+json"
# Shipway's MLServer runtime is Python code the server must have installed.
REQUIREMENTS = ["mlserver", "python", "xgboost"]


def k8s_name(model: str, version: str | None = None) -> str:
    """`fraud_model` → `fraud-model`; with a version, `fraud-model-v4`."""
    base = model.replace("_", "-").lower()
    return base if version is None else f"{base}-v{version}"


@cache
def _schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{kind.lower()}.schema.json").read_text())
    return loaded


def validate(manifest: dict[str, Any]) -> None:
    """Raise BadRequest naming the field and the rule a manifest breaks."""
    kind = manifest.get("kind")
    if kind not in PLURALS:
        raise BadRequest(f"kind {kind!r} is not a Seldon Core kind Shipway writes: {list(PLURALS)}")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_schema(kind)).iter_errors(manifest)
    )
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        name = manifest.get("metadata", {}).get("name", "?")
        raise BadRequest(f"{kind} {name}: {where}: {error.message}")


def model_manifest(
    model: str, version: str, storage_uri: str, namespace: str, replicas: int = 1
) -> dict[str, Any]:
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {
            "name": k8s_name(model, version),
            "namespace": namespace,
            "labels": {MODEL_LABEL: model, VERSION_LABEL: version},
        },
        "spec": {"storageUri": storage_uri, "requirements": REQUIREMENTS, "replicas": replicas},
    }
    validate(manifest)
    return manifest


def experiment_manifest(
    model: str, weights: dict[str, int], shadow: str | None, namespace: str
) -> dict[str, Any]:
    """Candidates are the versions with traffic; a shadow version is the mirror, at 100%."""
    candidates = [
        {"name": k8s_name(model, v), "weight": w} for v, w in sorted(weights.items()) if w > 0
    ]
    if not candidates:
        raise BadRequest(f"{model}: no version has traffic in {weights}; nothing to serve")
    spec: dict[str, Any] = {"candidates": candidates}
    if shadow is not None:
        spec["mirror"] = {"name": k8s_name(model, shadow), "percent": 100}
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {
            "name": k8s_name(model),
            "namespace": namespace,
            "labels": {MODEL_LABEL: model},
        },
        "spec": spec,
    }
    validate(manifest)
    return manifest


def storage_uri(template: str, model: str, version: str) -> str:
    """`s3://models/{model}/{version}` → `s3://models/fraud_model/4`: where the bundle of that
    version (`.shipway/serving/<model>/<version>/`) is uploaded for Seldon to load."""
    try:
        return template.format(model=model, version=version)
    except (KeyError, IndexError) as exc:
        raise BadRequest(
            f"storage URI template {template!r} names {exc}; it may use {{model}} and {{version}}"
        ) from None


def manifests(
    model: str,
    weights: dict[str, int],
    shadow: str | None,
    storage: str,
    namespace: str = "default",
    replicas: int = 1,
) -> list[dict[str, Any]]:
    """Every object serving `model` at this point: a Model per version, then the Experiment."""
    versions = sorted({*weights, *([shadow] if shadow else [])}, key=_version_order)
    models = [
        model_manifest(model, v, storage_uri(storage, model, v), namespace, replicas)
        for v in versions
    ]
    return [*models, experiment_manifest(model, weights, shadow, namespace)]


def write_manifests(objects: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One YAML file per object, named by kind and name; other files in `out_dir` are removed
    so the folder is exactly what to `kubectl apply`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.yaml"):
        stale.unlink()
    written = []
    for obj in objects:
        path = out_dir / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    return written


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


class SeldonServing:
    """What the rollout controller and the deployment need of serving, over the Kubernetes API:
    a version is a `Model`, traffic is the model's `Experiment`."""

    def __init__(
        self,
        api_url: str,
        token: str,
        namespace: str = "default",
        storage: str = "s3://shipway-models/{model}/{version}",
        timeout: float = 30.0,
    ) -> None:
        self.namespace = namespace
        self.storage = storage
        self._http = httpx.Client(
            base_url=api_url.rstrip("/"),
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )

    def _path(self, kind: str, name: str | None = None) -> str:
        base = f"/apis/{API_VERSION}/namespaces/{self.namespace}/{PLURALS[kind]}"
        return base if name is None else f"{base}/{name}"

    def _call(
        self, method: str, path: str, body: Any = None, content_type: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            response = self._http.request(
                method,
                path,
                content=None if body is None else json.dumps(body),
                headers=headers,
                **kw,
            )
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"Kubernetes API at {self._http.base_url} unreachable: {exc}"
            ) from None
        if response.status_code >= 400 and response.status_code != 404:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ShipwayError(f"Kubernetes {method} {path} -> {response.status_code}: {message}")
        return response

    def deploy(self, model: str, version: str, bundle: Path) -> dict[str, Any]:
        """Create (or replace) the version's `Model`, with the bundle's replicas; `bundle` must
        have been uploaded to the storage URI the template names."""
        manifest = model_manifest(
            model,
            version,
            storage_uri(self.storage, model, version),
            self.namespace,
            read_bundle(bundle).replicas,
        )
        name = manifest["metadata"]["name"]
        current = self._call("GET", self._path("Model", name))
        if current.status_code == 404:
            self._call("POST", self._path("Model"), manifest, "application/json")
        else:
            manifest["metadata"]["resourceVersion"] = current.json()["metadata"].get(
                "resourceVersion", ""
            )
            self._call("PUT", self._path("Model", name), manifest, "application/json")
        return manifest

    def set_traffic(
        self, model: str, weights: dict[str, int], shadow: str | None = None
    ) -> dict[str, Any]:
        manifest = experiment_manifest(model, weights, shadow, self.namespace)
        name = manifest["metadata"]["name"]
        current = self._call("GET", self._path("Experiment", name))
        if current.status_code == 404:
            self._call("POST", self._path("Experiment"), manifest, "application/json")
        else:
            # A merge patch replaces lists whole; `mirror: null` removes the shadow.
            patch = {"spec": {**manifest["spec"], "mirror": manifest["spec"].get("mirror")}}
            self._call("PATCH", self._path("Experiment", name), patch, MERGE_PATCH)
        return manifest

    def undeploy(self, model: str, version: str) -> None:
        self._call("DELETE", self._path("Model", k8s_name(model, version)))

    def endpoint(self, model: str) -> str:
        """The model's Experiment in the Kubernetes API (callers reach it through Seldon's
        mesh with `seldon-model: <name>.experiment`)."""
        return f"{self._http.base_url}{self._path('Experiment', k8s_name(model))}"

    def status(self) -> dict[str, Any]:
        """Shipway's view of the cluster: per model, its versions (Models) and the weights and
        mirror of its Experiment, in the control plane's shape."""
        listed = self._call(
            "GET", self._path("Model"), params={"labelSelector": MODEL_LABEL}
        ).json()
        found: dict[str, Any] = {}
        for item in listed.get("items", []):
            labels = item["metadata"].get("labels", {})
            entry = found.setdefault(
                labels[MODEL_LABEL], {"versions": {}, "weights": {}, "shadow": None}
            )
            entry["versions"][labels[VERSION_LABEL]] = {
                "name": item["metadata"]["name"],
                "storage_uri": item["spec"]["storageUri"],
            }
        by_name = {
            k8s_name(model, v): (model, v)
            for model, entry in found.items()
            for v in entry["versions"]
        }
        experiments = self._call(
            "GET", self._path("Experiment"), params={"labelSelector": MODEL_LABEL}
        ).json()
        for item in experiments.get("items", []):
            model = item["metadata"]["labels"][MODEL_LABEL]
            entry = found.setdefault(model, {"versions": {}, "weights": {}, "shadow": None})
            for candidate in item["spec"]["candidates"]:
                _, version = by_name.get(candidate["name"], (model, candidate["name"]))
                entry["weights"][version] = candidate["weight"]
            mirror = item["spec"].get("mirror")
            if mirror:
                entry["shadow"] = by_name.get(mirror["name"], (model, mirror["name"]))[1]
        return found
