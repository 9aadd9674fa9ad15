"""The gates of a data contract: every rule of `shipway.data.contracts` run on a dataset version.

Each rule family is one gate; a finding names the dataset, column, rule, observed vs expected
values and a sample of offending rows. Row rules (nulls, ranges, categories, keys) run through
pandera, statistics through `shipway.stats`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
from scipy import stats

from shipway.data.contracts import Contract, GateName, Level
from shipway.errors import cut
from shipway.stats.divergence import psi
from shipway.stats.metrics import single_column_auc

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Finding:
    """One violated rule: where, which rule, what was seen, what was expected, and examples."""

    column: str | None
    rule: str
    observed: str
    expected: str
    level: Level = "error"
    rows: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A 5 MB value must not become 5 MB of every message, run log and ledger row.
        object.__setattr__(self, "observed", cut(self.observed))
        object.__setattr__(self, "expected", cut(self.expected))
        object.__setattr__(
            self,
            "sample",
            [
                {k: cut(v) if isinstance(v, str) else v for k, v in row.items()}
                for row in self.sample
            ],
        )

    def sentence(self) -> str:
        where = f"column `{self.column}`" if self.column else "dataset"
        text = f"{where}, rule {self.rule}: observed {self.observed}, expected {self.expected}"
        if self.rows:
            text += f" ({self.rows} offending rows)"
        if self.sample:
            text += "; sample: " + " | ".join(_row_text(r) for r in self.sample)
        return text


def _row_text(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items())


@dataclass(frozen=True)
class GateResult:
    dataset: str
    gate: GateName
    findings: list[Finding]
    checked: str
    severity_override: Level | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def level(self) -> Level:
        """`error` blocks downstream; the contract may lower a gate to `warn`."""
        if self.severity_override is not None:
            return self.severity_override
        return "error" if any(f.level == "error" for f in self.findings) else "warn"

    @property
    def blocks(self) -> bool:
        return not self.passed and self.level == "error"

    def message(self) -> str:
        if self.passed:
            return f"{self.dataset}: {self.gate} gate passed ({self.checked})"
        return f"{self.dataset}: {self.gate} gate failed ({self.level}): " + "; ".join(
            f.sentence() for f in self.findings
        )


@dataclass(frozen=True)
class Reference:
    """The last accepted data of the same dataset, for the statistical gates."""

    label: str
    frame: pd.DataFrame
    group_sizes: pd.Series | None = None


@dataclass(frozen=True)
class Batch:
    """A dataset version under test: its rows and the Arrow schema it was stored with."""

    frame: pd.DataFrame
    schema: pa_arrow.Schema

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Batch:
        return cls(frame, pa_arrow.Schema.from_pandas(frame, preserve_index=False))

    @cached_property
    def logical_types(self) -> dict[str, str]:
        """Each stored column's type in contract terms (`int`, `string`, ...)."""
        return {f.name: _logical_type(f.type) for f in self.schema}


def evaluate(
    contract: Contract,
    batch: Batch,
    as_of: datetime | None = None,
    reference: Reference | None = None,
) -> list[GateResult]:
    """Run every gate the contract configures. A column missing from the batch is reported by
    the schema gate, and one stored with another type than declared by the types gate; the
    other gates judge the batch without them, so each gate reports only its own rule. A gate
    that cannot judge the batch at all fails with its error named: never a pass, never a
    crash."""
    present = [c for c in contract.columns if c in batch.frame.columns]
    mistyped = [c for c in present if batch.logical_types.get(c) != contract.columns[c].type]
    typed = Batch(
        batch.frame.drop(columns=mistyped),
        pa_arrow.schema([f for f in batch.schema if f.name not in mistyped]),
    )
    full = _Context(contract, batch, present, as_of, reference)
    narrowed = _Context(
        contract, typed, [c for c in present if c not in mistyped], as_of, reference
    )
    results = []
    for gate in contract.gates():
        started = time.perf_counter()
        context = full if gate in ("schema", "types") else narrowed
        try:
            findings, checked, metrics = _GATE_FUNCTIONS[gate](context)
        except Exception as exc:  # fail closed: a gate that cannot judge does not pass
            findings = [
                Finding(None, f"{gate} gate runs", f"{type(exc).__name__}: {exc}", "a verdict")
            ]
            checked, metrics = f"{gate} (could not run)", {}
        results.append(
            GateResult(
                contract.dataset,
                gate,
                findings,
                checked,
                contract.severity.get(gate),
                metrics,
                time.perf_counter() - started,
            )
        )
    return results


@dataclass(frozen=True)
class _Context:
    contract: Contract
    batch: Batch
    present: list[str]
    as_of: datetime | None
    reference: Reference | None

    @property
    def frame(self) -> pd.DataFrame:
        return self.batch.frame

    def finding(
        self, column: str, rule: str, observed: str, expected: str, mask: pd.Series | np.ndarray
    ) -> Finding:
        """A row-level finding: how many rows break the rule, and the first of them."""
        return Finding(
            column,
            rule,
            observed,
            expected,
            rows=int(np.asarray(mask).sum()),
            sample=self.sample(mask, column),
        )

    def sample(self, mask: pd.Series | np.ndarray, column: str | None) -> list[dict[str, Any]]:
        """Key columns plus the offending column of the first offending rows."""
        columns = [c for c in self.contract.key if c in self.frame.columns]
        if column and column in self.frame.columns and column not in columns:
            columns.append(column)
        rows = self.frame.loc[np.asarray(mask), columns].head(SAMPLE_ROWS)
        return [{str(k): _plain(v) for k, v in row.items()} for row in rows.to_dict("records")]


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return str(value) if not isinstance(value, int | str) else value


_GateOutput = tuple[list[Finding], str, dict[str, float]]


def _schema_gate(ctx: _Context) -> _GateOutput:
    expected = list(ctx.contract.columns)
    found = list(ctx.frame.columns)
    missing = [c for c in expected if c not in found]
    unexpected = [c for c in found if c not in ctx.contract.columns]
    findings = []
    renamed = set()
    for column in missing:
        close = difflib.get_close_matches(column, unexpected, n=1, cutoff=0.4)
        renamed.update(close)
        observed = f"missing, found `{close[0]}` instead" if close else "missing"
        findings.append(
            Finding(column, "required column", observed, f"columns {expected}, found {found}")
        )
    if unexpected and not ctx.contract.allow_extra_columns:
        for column in [c for c in unexpected if c not in renamed]:
            findings.append(
                Finding(column, "no unexpected columns", "present", f"only columns {expected}")
            )
    return findings, f"{len(expected)} columns", {"missing_columns": float(len(missing))}


def _logical_type(dtype: pa_arrow.DataType) -> str:
    if pa_arrow.types.is_boolean(dtype):
        return "bool"
    if pa_arrow.types.is_integer(dtype):
        return "int"
    if pa_arrow.types.is_floating(dtype):
        return "float"
    if pa_arrow.types.is_timestamp(dtype):
        return "timestamp"
    if pa_arrow.types.is_date(dtype):
        return "date"
    if pa_arrow.types.is_string(dtype) or pa_arrow.types.is_large_string(dtype):
        return "string"
    return str(dtype)


def _types_gate(ctx: _Context) -> _GateOutput:
    findings = []
    stored = ctx.batch.logical_types
    for column in ctx.present:
        declared = ctx.contract.columns[column].type
        actual = stored.get(column, "unknown")
        if actual != declared:
            arrow = ctx.batch.schema.field(column).type if column in stored else None
            findings.append(Finding(column, f"type: {declared}", f"{actual} ({arrow})", declared))
    return findings, f"{len(ctx.present)} column types", {}


def _nulls_gate(ctx: _Context) -> _GateOutput:
    findings = []
    rows = max(len(ctx.frame), 1)
    for column in ctx.present:
        rule = ctx.contract.columns[column]
        nulls = ctx.frame[column].isna()
        rate = int(nulls.sum()) / rows
        if rate > rule.null_limit:
            findings.append(
                ctx.finding(
                    column,
                    "not null" if not rule.nullable else f"max_null_rate: {rule.null_limit}",
                    f"{rate:.2%} null",
                    f"<= {rule.null_limit:.2%}",
                    nulls,
                )
            )
    return findings, f"null rates of {len(ctx.present)} columns", {}


def _pandera_failures(ctx: _Context, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Failure cases of a lazy pandera validation (empty when everything passes)."""
    try:
        schema.validate(ctx.frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases: pd.DataFrame = errors.failure_cases
        return cases
    return pd.DataFrame(columns=["column", "check", "failure_case", "index"])


def _failures_by_column(
    ctx: _Context, columns: dict[str, pa.Column]
) -> Iterator[tuple[str, pd.DataFrame, np.ndarray]]:
    """Per failing column: its pandera failure cases and a mask of the offending rows."""
    cases = _pandera_failures(ctx, pa.DataFrameSchema(columns))
    for failing, group in cases.groupby("column", sort=True):
        yield str(failing), group, ctx.frame.index.isin(group["index"])


def _typed(ctx: _Context, column: str, kinds: tuple[str, ...]) -> bool:
    """Row rules only apply to a column stored with its declared type (else: types gate)."""
    return ctx.batch.logical_types.get(column) in kinds


def _ranges_gate(ctx: _Context) -> _GateOutput:
    columns = {}
    bounds = {}
    for column in ctx.present:
        rule = ctx.contract.columns[column]
        if (rule.min is None and rule.max is None) or not _typed(ctx, column, ("int", "float")):
            continue
        checks = []
        if rule.min is not None:
            checks.append(pa.Check.ge(rule.min))
        if rule.max is not None:
            checks.append(pa.Check.le(rule.max))
        columns[column] = pa.Column(checks=checks, nullable=True)
        bounds[column] = (rule.min, rule.max)
    findings = []
    for name, group, mask in _failures_by_column(ctx, columns):
        low, high = bounds[name]
        values = pd.to_numeric(group["failure_case"], errors="coerce")
        findings.append(
            ctx.finding(
                name,
                f"range [{low}, {high}]",
                f"min {values.min()}, max {values.max()}",
                f"{low} <= {name} <= {high}",
                mask,
            )
        )
    return findings, f"ranges of {len(columns)} columns", {}


def _categories_gate(ctx: _Context) -> _GateOutput:
    columns = {}
    for column in ctx.present:
        allowed = ctx.contract.columns[column].allowed
        if allowed:
            columns[column] = pa.Column(checks=pa.Check.isin(allowed), nullable=True)
    findings = []
    for name, group, mask in _failures_by_column(ctx, columns):
        unknown = group["failure_case"].astype(str).value_counts()
        findings.append(
            ctx.finding(
                name,
                "allowed values",
                "unknown " + ", ".join(f"{v!r} x{n}" for v, n in unknown.head(5).items()),
                f"one of {ctx.contract.columns[name].allowed}",
                mask,
            )
        )
    return findings, f"categories of {len(columns)} columns", {}


def _keys_gate(ctx: _Context) -> _GateOutput:
    key = ctx.contract.key
    if any(k not in ctx.frame.columns for k in key):
        return [], f"key {key} (missing columns: see schema)", {}
    cases = _pandera_failures(ctx, pa.DataFrameSchema(unique=key))
    if cases.empty:
        return [], f"key {key} unique over {len(ctx.frame)} rows", {}
    mask = ctx.frame.index.isin(cases["index"].dropna())
    duplicated = ctx.frame.loc[mask, key]
    return (
        [
            Finding(
                ", ".join(key),
                "unique key",
                f"{duplicated.drop_duplicates().shape[0]} key values repeated",
                "each key once",
                rows=int(mask.sum()),
                sample=ctx.sample(mask, None),
            )
        ],
        f"key {key}",
        {"duplicate_rows": float(mask.sum())},
    )


def _floats(series: pd.Series, log_scale: bool = False) -> np.ndarray:
    """One float per row (NaN where missing or not a number), on a log1p scale if asked."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return np.log1p(np.clip(values, 0, None)) if log_scale else values


def _numeric(series: pd.Series, log_scale: bool = False) -> np.ndarray:
    """The numbers of a column, missing ones dropped."""
    values = _floats(series, log_scale)
    return values[~np.isnan(values)]


def _outliers_gate(ctx: _Context) -> _GateOutput:
    findings = []
    metrics = {}
    for column in ctx.present:
        rule = ctx.contract.columns[column].outliers
        if rule is None or not _typed(ctx, column, ("int", "float")):
            continue
        source = ctx.reference.frame if ctx.reference is not None else ctx.frame
        basis = _numeric(source[column], rule.log_scale) if column in source else np.array([])
        if basis.size < 10:
            basis = _numeric(ctx.frame[column], rule.log_scale)
        if basis.size == 0:
            continue
        centre = float(np.median(basis))
        spread = float(stats.median_abs_deviation(basis, scale="normal")) or 1e-9
        z = np.abs(_floats(ctx.frame[column], rule.log_scale) - centre) / spread
        mask = np.nan_to_num(z, nan=0.0) > rule.max_robust_z
        share = float(mask.mean()) if mask.size else 0.0
        metrics[f"{column}_outlier_share"] = share
        if share > rule.max_share:
            scale = "log1p " if rule.log_scale else ""
            findings.append(
                ctx.finding(
                    column,
                    f"robust z ({scale}scale) <= {rule.max_robust_z}",
                    f"{share:.2%} of rows beyond, max z {float(np.nanmax(z)):.1f}",
                    f"<= {rule.max_share:.2%} of rows",
                    mask,
                )
            )
    return findings, "robust z-scores", metrics


def _freshness_gate(ctx: _Context) -> _GateOutput:
    rule = ctx.contract.freshness
    assert rule is not None
    if rule.column not in ctx.frame.columns or ctx.as_of is None or ctx.frame.empty:
        return [], f"freshness of {rule.column} (nothing to compare)", {}
    stamps = pd.to_datetime(ctx.frame[rule.column], utc=True, errors="coerce")
    newest = stamps.max()
    as_of = pd.Timestamp(ctx.as_of).tz_convert("UTC")
    age_hours = (as_of - newest) / pd.Timedelta(hours=1)
    findings = []
    if pd.isna(newest) or age_hours > rule.max_age_hours:
        findings.append(
            Finding(
                rule.column,
                f"max_age_hours: {rule.max_age_hours}",
                f"newest {newest} is {age_hours:.1f} h old at {as_of}",
                f"<= {rule.max_age_hours} h",
                sample=ctx.sample(stamps == newest, rule.column),
            )
        )
    future = stamps > as_of + pd.Timedelta(hours=1)
    if future.any():
        findings.append(
            ctx.finding(
                rule.column,
                "not in the future",
                f"{int(future.sum())} rows after {as_of}",
                f"<= {as_of}",
                future,
            )
        )
    return findings, f"newest {rule.column} at {as_of}", {"age_hours": float(age_hours)}


def _volume_gate(ctx: _Context) -> _GateOutput:
    rule = ctx.contract.volume
    assert rule is not None
    rows = len(ctx.frame)
    if rows < rule.min_rows:
        return (
            [Finding(None, f"min_rows: {rule.min_rows}", f"{rows} rows", f">= {rule.min_rows}")],
            "row count",
            {"rows": float(rows)},
        )
    if ctx.reference is None:
        return [], f"{rows} rows (no accepted version to compare with yet)", {"rows": float(rows)}
    if rule.group_by:
        if rule.group_by not in ctx.frame.columns or ctx.reference.group_sizes is None:
            return [], f"rows per {rule.group_by} (column missing: see schema)", {}
        sizes = ctx.frame.groupby(rule.group_by, sort=True).size()
        baseline = float(ctx.reference.group_sizes.tail(rule.reference_groups).median())
    else:
        sizes = pd.Series({"batch": rows})
        baseline = float(len(ctx.reference.frame))
    findings = []
    for group, size in sizes.items():
        ratio = size / baseline if baseline else float("inf")
        if not rule.min_ratio <= ratio <= rule.max_ratio:
            where = f"{rule.group_by} {group}" if rule.group_by else "batch"
            findings.append(
                Finding(
                    rule.group_by,
                    f"volume ratio in [{rule.min_ratio}, {rule.max_ratio}]",
                    f"{where}: {size} rows = {ratio:.2f} x the accepted median {baseline:.0f}",
                    f"{rule.min_ratio * baseline:.0f} .. {rule.max_ratio * baseline:.0f} rows",
                )
            )
    return findings, f"rows against {ctx.reference.label}", {"rows": float(rows)}


def _labels_gate(ctx: _Context) -> _GateOutput:
    rule = ctx.contract.labels
    assert rule is not None
    if rule.column not in ctx.frame.columns:
        return [], f"labels in {rule.column} (column missing: see schema)", {}
    labels = pd.to_numeric(ctx.frame[rule.column], errors="coerce")
    known = labels.dropna()
    findings = []
    rate = float(known.mean()) if len(known) else float("nan")
    if len(known) and not rule.rate_min <= rate <= rule.rate_max:
        findings.append(
            Finding(
                rule.column,
                f"label rate in [{rule.rate_min}, {rule.rate_max}]",
                f"{rate:.2%} of {len(known)} labelled rows",
                f"{rule.rate_min:.2%} .. {rule.rate_max:.2%}",
                rows=int(known.sum()),
            )
        )
    if rule.max_delay_days is not None and rule.timestamp in ctx.frame.columns:
        stamps = pd.to_datetime(ctx.frame[rule.timestamp], utc=True, errors="coerce")
        delay = pd.Timedelta(days=rule.max_delay_days)
        overdue = pd.Series(False, index=ctx.frame.index)
        if ctx.as_of is not None:
            overdue |= labels.isna() & (stamps < pd.Timestamp(ctx.as_of) - delay)
        if rule.available_at and rule.available_at in ctx.frame.columns:
            arrives = pd.to_datetime(ctx.frame[rule.available_at], utc=True, errors="coerce")
            overdue |= arrives.isna() | (arrives - stamps > delay)
        share = float(overdue.mean()) if len(overdue) else 0.0
        if share > rule.max_overdue_share:
            findings.append(
                ctx.finding(
                    rule.column,
                    f"label within {rule.max_delay_days} days",
                    f"{share:.2%} of rows overdue or missing their label",
                    f"<= {rule.max_overdue_share:.2%}",
                    overdue,
                )
            )
    return findings, f"label rate {rate:.2%}", {"label_rate": rate}


def _leakage_gate(ctx: _Context) -> _GateOutput:
    rule = ctx.contract.leakage
    assert rule is not None
    if rule.label not in ctx.frame.columns:
        return [], "leakage (label column missing: see schema)", {}
    labelled = ctx.frame[ctx.frame[rule.label].notna()]
    if len(labelled) > rule.max_rows:
        labelled = labelled.sample(rule.max_rows, random_state=0)
    labels = pd.to_numeric(labelled[rule.label], errors="coerce").to_numpy(dtype=int)
    findings = []
    metrics = {}
    for column in rule.columns:
        if column not in labelled.columns or not _typed(ctx, column, ("int", "float", "bool")):
            continue
        values = pd.to_numeric(labelled[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        auc = single_column_auc(values, labels)
        metrics[f"{column}_auc"] = auc
        if auc >= rule.max_auc:
            findings.append(
                Finding(
                    column,
                    f"single-column AUC < {rule.max_auc}",
                    f"AUC {auc:.4f} against {rule.label}",
                    f"< {rule.max_auc} (a column this predictive usually encodes the label)",
                )
            )
    return findings, f"single-column AUC of {len(metrics)} columns", metrics


def column_shift(reference: pd.Series, batch: pd.Series, bins: int) -> tuple[float, float | None]:
    """PSI (and the KS statistic for numbers) of a column against its reference."""
    if pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(batch):
        ref = _numeric(reference)
        cur = _numeric(batch)
        if ref.size == 0 or cur.size == 0:
            return 0.0, None
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
        actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
        ks = float(stats.ks_2samp(ref, cur).statistic)
        return psi(expected / ref.size, actual), ks
    ref_share = reference.astype(str).value_counts(normalize=True)
    cur_counts = batch.astype(str).value_counts()
    categories = ref_share.index.union(cur_counts.index)
    return (
        psi(
            ref_share.reindex(categories, fill_value=0).to_numpy(),
            cur_counts.reindex(categories, fill_value=0).to_numpy(),
        ),
        None,
    )


def _shift_gate(ctx: _Context) -> _GateOutput:
    rule = ctx.contract.shift
    assert rule is not None
    if ctx.reference is None:
        return [], "shift (no accepted version to compare with yet)", {}
    findings = []
    metrics = {}
    for column in rule.columns:
        if column not in ctx.frame.columns or column not in ctx.reference.frame.columns:
            continue
        value, ks = column_shift(ctx.reference.frame[column], ctx.frame[column], rule.bins)
        metrics[f"{column}_psi"] = value
        levels = [rule.psi.level(value)]
        observed = f"PSI {value:.3f}"
        expected = f"PSI < {rule.psi.warn} (warn) / {rule.psi.error} (error)"
        if ks is not None:
            metrics[f"{column}_ks"] = ks
            observed += f", KS {ks:.3f}"
            if rule.ks is not None:
                levels.append(rule.ks.level(ks))
                expected += f", KS < {rule.ks.warn} / {rule.ks.error}"
        if "error" in levels or "warn" in levels:
            findings.append(
                Finding(
                    column,
                    "distribution shift",
                    f"{observed} against {ctx.reference.label}",
                    expected,
                    level="error" if "error" in levels else "warn",
                )
            )
    return findings, f"shift of {len(metrics)} measures against {ctx.reference.label}", metrics


_GATE_FUNCTIONS: dict[GateName, Callable[[_Context], _GateOutput]] = {
    "schema": _schema_gate,
    "types": _types_gate,
    "nulls": _nulls_gate,
    "ranges": _ranges_gate,
    "categories": _categories_gate,
    "keys": _keys_gate,
    "outliers": _outliers_gate,
    "freshness": _freshness_gate,
    "volume": _volume_gate,
    "labels": _labels_gate,
    "leakage": _leakage_gate,
    "shift": _shift_gate,
}
