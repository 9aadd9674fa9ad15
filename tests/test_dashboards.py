"""Grafana dashboards as code: generated from each declaration, checked against the dashboard
schema, and pushed with grafana-client.

Grafana cannot run on this machine: `GrafanaStandIn` stands in for the part of its HTTP API
that a push uses (`POST /api/dashboards/db` with a bearer token, Grafana's answers and error
shapes). Every panel's query is executed against a real Prometheus in tests/test_rollout.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from assets.definitions import models
from shipway.cli import main
from shipway.errors import BadRequest, ServiceError, ShipwayError
from shipway.models.catalog import declared_model
from shipway.monitoring import dashboards
from shipway.processes import free_port
from tests.conftest import JsonHandler

TOKEN = "glsa_test_token_never_printed"


@pytest.mark.parametrize("name", [m.declaration.name for m in models])
def test_each_model_s_dashboard_is_generated_from_its_declaration(name: str) -> None:
    declaration = declared_model(models, name).declaration
    board = dashboards.dashboard(declaration)
    committed = json.loads((dashboards.GRAFANA_DIR / f"{name}.json").read_text())
    assert committed == board, f"deploy/grafana/{name}.json is stale: shipway render dashboards"
    titles = [p["title"] for p in board["panels"]]
    assert titles == [
        "Traffic share per version",
        "Rollout",
        "Requests per second",
        "Server errors (5xx share)",
        "Latency p50 / p99",
        "Feature drift (PSI)",
        "Prediction drift (PSI)",
        "Attribution share change",
        "Mean prediction score",
        "Live quality",
        "Label coverage",
        "CPU seconds per 1,000 predictions",
        "Prediction log rows per second",
    ] + (["Live cost per 1,000 decisions (EUR)"] if declaration.release.cost else [])
    # fraud_model prices its decisions; customer_spend, a forecast, has no cost model.
    assert (declaration.release.cost is not None) == (name == "fraud_model")
    for _, expr in dashboards.queries(board):
        assert f'model="{name}"' in expr
    drift = next(p for p in board["panels"] if p["title"] == "Feature drift (PSI)")
    steps = drift["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == declaration.drift.psi_threshold, "the policy's line"
    assert [a["name"] for a in board["annotations"]["list"]] == [
        "Rollout steps",
        "Rollout phases (retrains)",
    ]


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (lambda b: b["panels"][0]["gridPos"].update(w=30), r"panels\.0\.gridPos\.w: 30 is greater"),
        (lambda b: b["panels"][2]["targets"][0].pop("expr"), r"'expr' is a required property"),
        (lambda b: b["panels"][1].update(colour="red"), r"'colour' was unexpected"),
        (lambda b: b.update(uid="shipway fraud"), r"uid: 'shipway fraud' does not match"),
    ],
)
def test_a_broken_dashboard_names_the_field_and_the_rule(broken: Any, named: str) -> None:
    board = dashboards.dashboard(declared_model(models, "fraud_model").declaration)
    broken(board)
    with pytest.raises(BadRequest, match=named):
        dashboards.validate(board)


class GrafanaStandIn:
    """`POST /api/dashboards/db` as Grafana answers it; what it received, kept."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        standin = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.answer(401, {"message": "invalid API key"})
                if self.path != "/api/dashboards/db":
                    return self.answer(404, {"message": "Not found"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                board = body.get("dashboard", {})
                if not board.get("title"):
                    return self.answer(400, {"message": "Dashboard title cannot be empty"})
                standin.received.append(body)
                uid = board["uid"]
                self.answer(
                    200,
                    {
                        "id": len(standin.received),
                        "uid": uid,
                        "url": f"/d/{uid}/{uid}",
                        "status": "success",
                        "version": 1,
                        "slug": uid,
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def grafana() -> Iterator[GrafanaStandIn]:
    standin = GrafanaStandIn()
    thread = threading.Thread(target=standin.server.serve_forever, daemon=True)
    thread.start()
    yield standin
    standin.server.shutdown()
    standin.server.server_close()


def test_dashboards_push_creates_each_model_s_dashboard_and_never_prints_the_token(
    grafana: GrafanaStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRAFANA_URL", grafana.url)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--folder", "ml"]) == 0
    out = capsys.readouterr()
    assert "pushed fraud_model: /d/shipway-fraud_model/" in out.out
    assert "pushed customer_spend: /d/shipway-customer_spend/" in out.out
    assert TOKEN not in out.out + out.err
    assert [b["dashboard"]["uid"] for b in grafana.received] == [
        "shipway-customer_spend",
        "shipway-fraud_model",
    ]
    first = grafana.received[0]
    assert first["overwrite"] is True and first["folderUid"] == "ml"
    assert first["dashboard"]["id"] is None, "Grafana matches by uid, not by its own id"


def test_a_refused_or_unreachable_grafana_is_a_clear_error(
    grafana: GrafanaStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = dashboards.dashboard(declared_model(models, "fraud_model").declaration)
    monkeypatch.delenv("GRAFANA_URL", raising=False)
    with pytest.raises(ShipwayError, match="GRAFANA_URL is not set"):
        dashboards.push([board])
    monkeypatch.setenv("GRAFANA_URL", grafana.url)
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    with pytest.raises(ShipwayError, match="Grafana refused dashboard shipway-fraud_model: 401"):
        dashboards.push([board])
    monkeypatch.setenv("GRAFANA_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    with pytest.raises(ServiceError, match="unreachable"):
        dashboards.push([board])
    assert grafana.received == []
