"""Metric gates: a model version's validation metrics against the policy's thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from shipway.models.declaration import MetricGate


@dataclass(frozen=True)
class GateOutcome:
    metric: str
    observed: float | None
    min: float | None
    max: float | None
    failure: str | None

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class GateReport:
    model: str
    version: str
    outcomes: list[GateOutcome]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def summary(self, policy_path: str) -> str:
        if self.passed:
            checks = ", ".join(f"{o.metric}={o.observed:.4f}" for o in self.outcomes)
            return f"{self.model} v{self.version} passed every gate ({checks})"
        failures = "; ".join(o.failure for o in self.outcomes if o.failure)
        return (
            f"{self.model} v{self.version} blocked: {failures} (gates in {policy_path}). "
            "Not deployed; fix the data or features and retrain, or change the policy in review."
        )


def evaluate_gates(
    model: str, version: str, gates: list[MetricGate], metrics: dict[str, float]
) -> GateReport:
    outcomes = []
    for gate in gates:
        observed = metrics.get(gate.metric)
        failure = (
            f"{gate.metric} was not recorded for this version"
            if observed is None
            else gate.check(observed)
        )
        outcomes.append(GateOutcome(gate.metric, observed, gate.min, gate.max, failure))
    return GateReport(model, version, outcomes)
