"""A dataset's contract as Dagster asset checks: one blocking check per gate.

The checks audit the version the asset just wrote and record the outcome in the admission
ledger; each result carries the gate's message and its findings (column, rule, observed,
expected, sample rows) as metadata, so the Checks tab shows why a batch was stopped.
"""

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    multi_asset_check,
)

from shipway.data.admission import audit
from shipway.data.contracts import Contract, load_contract
from shipway.data.gates import GateResult, Reference
from shipway.data.lake import TableInfo, table_info
from shipway.defs.resources import ShipwayHomeResource
from shipway.paths import ShipwayHome

ReferenceLoader = Callable[[ShipwayHome, Contract], Reference | None]
AsOf = Callable[[TableInfo], datetime | None]
VersionOfRun = Callable[[ShipwayHome, str], int | None]
"""Which version of the table the run wrote (None: the newest)."""


def contract_checks(
    asset: AssetKey,
    contract_path: Path,
    table: str,
    reference: ReferenceLoader,
    as_of: AsOf = lambda info: None,
    version_of_run: VersionOfRun = lambda home, run_id: None,
) -> AssetChecksDefinition:
    contract = load_contract(contract_path)
    specs = [
        AssetCheckSpec(
            name=gate,
            asset=asset,
            blocking=True,
            description=f"{contract.describe(gate)}. Contract: {contract_path}",
        )
        for gate in contract.gates()
    ]

    @multi_asset_check(
        specs=specs,
        name=f"{contract.dataset}_contract",
        description=f"Contract of {contract.dataset} ({contract_path}): {contract.description}",
    )
    def _contract(
        context: AssetCheckExecutionContext, lake: ShipwayHomeResource
    ) -> Iterator[AssetCheckResult]:
        home = lake.home
        # Re-read the file: a fixed contract applies from the next audit, no reload needed.
        current = load_contract(contract_path)
        run_id = context.op_execution_context.run_id
        info = table_info(home.table(table), version_of_run(home, run_id))
        outcome = audit(
            home,
            current,
            table,
            reference(home, current),
            run_id,
            as_of(info),
            info.version,
        )
        verdict = "accepted" if outcome.accepted else "rejected (quarantined)"
        context.log.info("%s: %s v%d %s", current.dataset, table, info.version, verdict)
        for result in outcome.results:
            if not result.passed:
                (context.log.error if result.blocks else context.log.warning)(result.message())
            yield _check_result(asset, result, outcome.admission.id, contract_path)

    return _contract


def _check_result(
    asset: AssetKey, result: GateResult, batch_id: str, contract_path: Path
) -> AssetCheckResult:
    metadata: dict[str, Any] = {
        "batch": batch_id,
        "contract": MetadataValue.path(str(contract_path)),
        "checked": result.checked,
        "seconds": round(result.seconds, 3),
        **{name: float(value) for name, value in result.metrics.items()},
    }
    if result.findings:
        metadata["findings"] = MetadataValue.md(
            "| column | rule | observed | expected | rows |\n|---|---|---|---|---|\n"
            + "\n".join(
                f"| {f.column or '-'} | {f.rule} | {f.observed} | {f.expected} | {f.rows} |"
                for f in result.findings
            )
        )
        metadata["sample"] = MetadataValue.json(
            {f.column or "dataset": f.sample for f in result.findings if f.sample}
        )
    return AssetCheckResult(
        asset_key=asset,
        check_name=result.gate,
        passed=result.passed,
        severity=AssetCheckSeverity.ERROR if result.level == "error" else AssetCheckSeverity.WARN,
        description=result.message()[:2000],
        metadata=metadata,
    )
