"""`shipway ci`: what runs when someone pushes a change to a model.

The change (the files changed since the merge base of REF and HEAD, and untracked ones)
decides which declared models it touches:

- `assets/<folder>/` of a model: that model;
- a file of `feature_repo/` that names a model's feature service or one of its feature views:
  that model (`lake_views.py` names the views two models share, so both);
- a dbt model: the models whose feature tables or label table it feeds (through dbt's
  manifest); dbt's project files and macros: every model;
- the raw-events contract or the committed sample, the platform's code, locks or deploy
  files: every model.

Then, in order, stopping at the first failure with a one-line reason: static checks (ruff,
ruff format, mypy, bandit), the feature logic's unit tests, the raw-events contract on the
committed sample (`assets/samples/raw_events.parquet`, `write_sample` regenerates it) and on the
latest batch the configured home accepted (when it has one), and per model a smoke build of
its training set from the sample in a scratch home (dbt build with its tests, feast apply, its
feature version built side by side, the training set and its contract), a smoke training with
the model's absolute gates on its validation rows, the reproducibility check (a second
training gives the same artifact hash; both lock files match their pyproject), and the signed
package of the smoke model when a signing key is in the environment. A JUnit XML report and a
markdown summary go to the report folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from shipway.errors import ShipwayError, run_failures
from shipway.git import git
from shipway.paths import ASSETS_DIR, DBT_PROJECT_DIR, RAW_EVENTS_CONTRACT, REPO_ROOT, ShipwayHome
from shipway.processes import environment, output_to

if TYPE_CHECKING:
    import pandas as pd
    from dagster import ExecuteInProcessResult

    from shipway.models.application import DeclaredApplication
    from shipway.models.catalog import DeclaredModel
    from shipway.models.training import TrainedModel

SAMPLE = ASSETS_DIR / "samples" / "raw_events.parquet"
EVERY_MODEL = (
    "platform/",
    "pyproject.toml",
    "uv.lock",
    "deploy/",
    "assets/contracts/",
    "assets/samples/",
    "assets/definitions.py",
    "workspace.yaml",
)
FEATURE_TESTS = ("tests/test_feast.py", "tests/test_contracts.py")


SAMPLE_START, SAMPLE_DAYS, SAMPLE_EVENTS_PER_DAY, SAMPLE_SEED = date(2026, 9, 1), 50, 300, 11


def write_sample(path: Path = SAMPLE) -> Path:
    """The committed sample, regenerated: 50 days of 300 baseline events from seed 11 (enough
    for the 30-day feature warm-up and both models' labels, small enough to build in seconds)."""
    from shipway.data.events import generate_events

    frame = generate_events(
        SAMPLE_START, SAMPLE_DAYS, seed=SAMPLE_SEED, events_per_day=SAMPLE_EVENTS_PER_DAY
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


class CIFailure(ShipwayError):
    """A step of `shipway ci` failed; the message is its one-line reason."""


@dataclass
class StepResult:
    name: str
    seconds: float
    passed: bool
    detail: str


@dataclass
class Plan:
    changed: list[str]
    models: list[str]
    reasons: dict[str, list[str]] = field(default_factory=dict)
    python_changed: bool = False
    applications: list[str] = field(default_factory=list)
    """LLM applications the change touches: their evaluation and red-team gates run."""
    since: str | None = None
    """What the change is measured against: an application's prompt there is its champion."""

    @property
    def empty(self) -> bool:
        return not self.models and not self.applications and not self.python_changed


def changed_files(since: str, root: Path = REPO_ROOT) -> list[str]:
    """Files changed since the merge base of `since` and HEAD (commits, staged and unstaged
    work), and untracked files: a pull request's own changes, not its base branch's news."""
    try:
        base = git("merge-base", since, "HEAD", cwd=root).strip()
        diff = git("diff", "--name-only", base, cwd=root)
        untracked = git("ls-files", "--others", "--exclude-standard", cwd=root)
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.strip() or f"{since} and HEAD have no common commit"
        raise CIFailure(f"cannot diff against {since}: {reason}") from exc
    return sorted(set(diff.split()) | set(untracked.split()))


def _dbt_downstream(manifest: dict[str, object], model: str) -> set[str]:
    """`model` and every dbt model built from it."""
    nodes = manifest["nodes"]
    assert isinstance(nodes, dict)
    children: dict[str, set[str]] = {}
    for node in nodes.values():
        if node["resource_type"] == "model":
            for parent in node["depends_on"]["nodes"]:
                children.setdefault(parent.rsplit(".", 1)[-1], set()).add(node["name"])
    found, todo = {model}, [model]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def plan(changed: list[str], models_dir: Path = ASSETS_DIR, since: str | None = None) -> Plan:
    """Which models and applications declared under `models_dir` `changed` touches, and why."""
    if not changed:
        return Plan([], [])  # nothing to load: an unchanged checkout answers at once
    from shipway.models.catalog import load_models

    declared = load_models(models_dir, RAW_EVENTS_CONTRACT)
    manifest_path = DBT_PROJECT_DIR / "target" / "manifest.json"
    if not manifest_path.is_file():
        raise CIFailure(f"{manifest_path} is missing: `shipway doctor` writes it (dbt parse)")
    manifest = json.loads(manifest_path.read_text())
    reasons: dict[str, list[str]] = {m.name: [] for m in declared}
    shapes = [
        (
            m,
            f"{ASSETS_DIR.relative_to(REPO_ROOT)}/{m.folder.name}/",
            (m.service.name, *sorted({f.view for f in m.service.features})),
            {*m.service.tables, m.declaration.label.table},
        )
        for m in declared
    ]
    for path in changed:
        for m, folder, names, inputs in shapes:
            if path.startswith(EVERY_MODEL):
                reasons[m.name].append(f"{path} (shared by every model)")
            elif path.startswith(folder):
                reasons[m.name].append(f"{path} (its declaration)")
            elif path.startswith("feature_repo/"):
                file = REPO_ROOT / path
                text = file.read_text() if file.exists() else ""
                named = [n for n in names if f'"{n}"' in text]
                if named or path == "feature_repo/feature_store.yaml":
                    reasons[m.name].append(f"{path} (defines {', '.join(named) or 'the store'})")
            elif path.startswith("dbt_project/models/") and path.endswith(".sql"):
                fed = _dbt_downstream(manifest, Path(path).stem) & inputs
                if fed:
                    reasons[m.name].append(f"{path} (feeds {', '.join(sorted(fed))})")
            elif path.startswith("dbt_project/") and not path.startswith(
                ("dbt_project/target/", "dbt_project/models/")
            ):
                reasons[m.name].append(f"{path} (dbt project files)")
    models = [name for name, why in reasons.items() if why]
    touched = _applications_touched(changed, models_dir, manifest)
    return Plan(
        changed,
        models,
        {n: reasons[n] for n in models} | touched,
        python_changed=any(p.endswith(".py") for p in changed),
        applications=list(touched),
        since=since,
    )


VERSIONED_SOURCES = ("dbt_project", "feature_repo", "assets/contracts/raw_events.yaml")


def feature_version_changes(
    since: str, services: dict[str, list[str]], root: Path = REPO_ROOT
) -> list[str]:
    """The feature versions a change creates: per feature service (→ the models declaring it),
    its version at the merge base of `since` and HEAD against the working tree's, with the
    parts that changed. Each model named must retrain on the new version and pass its gate
    before that version serves: serving reads each model version's own feature version, so a
    transformation reaches a served model no other way."""
    import io
    import tarfile

    from shipway.features.versions import Sources, feature_versions

    base = git("merge-base", since, "HEAD", cwd=root).strip()
    with tempfile.TemporaryDirectory(prefix="shipway-ci-base-") as tmp:
        archive = subprocess.run(
            ["git", "archive", base, *VERSIONED_SOURCES],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        before = feature_versions(services, Sources.checkout(Path(tmp)))
    now = feature_versions(services, Sources.checkout(root))
    lines = []
    for service, models in sorted(services.items()):
        old, new = before[service], now[service]
        if old.digest == new.digest:
            continue
        changed = "; ".join(c.describe() for c in new.changes(old))
        lines.append(
            f"feature version of {service}: {old.digest} -> {new.digest} ({changed}); "
            f"{', '.join(models)} must retrain on it and pass the release gate before it serves"
        )
    return lines


def _applications_touched(
    changed: list[str], models_dir: Path, manifest: dict[str, object]
) -> dict[str, list[str]]:
    """LLM applications a change touches: their folder (declaration, prompts), a dbt model
    feeding their corpus, the help centre's generator, or what every model shares."""
    from shipway.models.catalog import load_applications

    reasons: dict[str, list[str]] = {}
    for app in load_applications(models_dir):
        folder = f"{ASSETS_DIR.relative_to(REPO_ROOT)}/{app.folder.name}/"
        why: list[str] = []
        for path in changed:
            if path.startswith(folder):
                why.append(f"{path} (its declaration or prompt)")
            elif path.startswith("dbt_project/models/") and path.endswith(".sql"):
                if app.declaration.corpus.table in _dbt_downstream(manifest, Path(path).stem):
                    why.append(f"{path} (builds its corpus {app.declaration.corpus.table})")
            elif path.startswith(EVERY_MODEL):
                why.append(f"{path} (shared by every model)")
        if why:
            reasons[app.name] = why
    return reasons


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        tail = " | ".join(lines[-3:]) if lines else f"exit {result.returncode}"
        raise CIFailure(f"{what} failed: {tail}")
    return result.stdout


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def static_checks() -> str:
    _run([_bin("ruff"), "check", "."], "ruff check")
    _run([_bin("ruff"), "format", "--check", "."], "ruff format --check")
    _run([_bin("mypy")], "mypy")
    _run([_bin("bandit"), "-q", "-r", "platform", "-ll"], "bandit (medium and high)")
    layering()
    return "ruff, ruff format, mypy, bandit and the layering contracts clean"


def layering() -> str:
    """`lint-imports`: the contracts of pyproject.toml (every import points down the layers, no
    cycle), failing with each import that breaks one."""
    argv = [_bin("lint-imports"), "--no-cache", "--no-logo"]
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        broken = [line.strip() for line in result.stdout.splitlines() if line.startswith("- ")]
        found = "; ".join(broken) or result.stdout.strip()[-500:] or result.stderr.strip()[-500:]
        raise CIFailure(
            f"lint-imports: an import runs up a layer or closes a cycle (README, Architecture): "
            f"{found}"
        )
    return result.stdout.strip().splitlines()[-1]


def feature_tests() -> str:
    out = _run(
        [_bin("pytest"), "-q", "-p", "no:cacheprovider", "-m", "not integration", *FEATURE_TESTS],
        "feature logic unit tests",
    )
    summary = [line for line in out.splitlines() if " passed" in line]
    return summary[-1].strip("= ") if summary else "passed"


def _contract_on(frame: pd.DataFrame, where: str, contract_path: Path) -> str:
    """The raw-events contract's blocking gates on `frame`; freshness is measured at its last
    event (CI asks whether the rules hold, not whether the data is recent)."""
    import pandas as pd

    from shipway.data.contracts import load_contract
    from shipway.data.gates import Batch, evaluate

    as_of = pd.Timestamp(frame["event_timestamp"].max()).to_pydatetime() + timedelta(hours=1)
    results = evaluate(load_contract(contract_path), Batch.of(frame), as_of=as_of)
    blocking = [r for r in results if r.blocks]
    if blocking:
        raise CIFailure(f"{where}: " + "; ".join(r.message() for r in blocking))
    return f"{where}: {len(frame)} rows, {len(results)} gates passed"


def sample_contract(sample: Path, contract_path: Path = RAW_EVENTS_CONTRACT) -> str:
    """The raw-events contract on the committed sample."""
    import pandas as pd

    if not sample.is_file():
        raise CIFailure(f"the committed sample {sample} is missing")
    return _contract_on(pd.read_parquet(sample), f"sample {sample.name}", contract_path)


def snapshot_contract(home: ShipwayHome, contract_path: Path = RAW_EVENTS_CONTRACT) -> str:
    """The raw-events contract, as changed, on the latest batch the platform accepted (when
    `home` holds one): a tightened rule that today's data would fail shows here, not at the
    next landing."""
    from shipway.data.admission import Ledger
    from shipway.data.lake import read_table, table_exists

    accepted = Ledger(home).last_accepted("raw_events") if home.lake.is_dir() else None
    if accepted is None or not table_exists(home.table(accepted.table)):
        return f"no accepted raw_events in {home.root}: not reachable, not checked"
    frame = read_table(home.table(accepted.table), version=accepted.version)
    return _contract_on(frame, f"latest accepted snapshot {accepted.id}", contract_path)


def feast_plan(home: ShipwayHome, out: Path) -> str:
    """`feast plan` of the repository, as changed, against the registry of `home` (when it has
    one): what an apply would create, update or delete there. The whole plan goes to `out`."""
    from shipway.features.store import feast_cli

    if not (home.feast / "registry.db").is_file():
        return f"no Feast registry in {home.root}: not reachable, not planned"
    plan_text = feast_cli(home, "plan")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan_text)
    changes = [
        line.strip()
        for line in plan_text.splitlines()
        if line.strip().startswith(("Created", "Updated", "Deleted", "No changes"))
    ]
    return f"against {home.feast / 'registry.db'}: {'; '.join(changes) or 'see ' + out.name}"


def smoke_build(
    home: ShipwayHome, models: list[str], sample: Path, log: Path, models_dir: Path = ASSETS_DIR
) -> str:
    """In a scratch home: land the sample, build dbt's tables (their tests are blocking
    checks), apply Feast, and build each model's training set under its contract. Dagster's,
    dbt's and Feast's output goes to `log`.

    The code location is assembled here from `models_dir`, not imported from
    `assets.definitions`: its resources read the home from the environment at run time, so the
    scratch home set below is the one written to, whatever was imported before."""
    import pandas as pd
    from dagster import AssetKey, DagsterInstance

    from shipway.defs.code_location import code_location
    from shipway.features.version_store import build_versions
    from shipway.features.versions import applied_versions
    from shipway.models.catalog import load_models

    frame = pd.read_parquet(sample, columns=["event_timestamp"])
    as_of = pd.Timestamp(frame["event_timestamp"].max()) + pd.Timedelta(hours=1)
    log.parent.mkdir(parents=True, exist_ok=True)
    with environment(home.environment()), output_to(log):
        defs = code_location(load_models(models_dir, RAW_EVENTS_CONTRACT), RAW_EVENTS_CONTRACT)
        instance = DagsterInstance.ephemeral()
        config = {"from_file": str(sample), "as_of": as_of.isoformat()}
        landed = defs.resolve_job_def("land_raw_events").execute_in_process(
            instance=instance,
            run_config={"ops": {"raw_events_batch": {"config": config}}},
            raise_on_error=False,
        )
        _require_success(landed, "landing the sample", log)
        graph = defs.resolve_asset_graph()
        selected = [
            key
            for key in graph.get_all_asset_keys()
            if graph.get(key).is_materializable
            and graph.get(key).group_name in ("transform", "labels")
        ]
        selected.append(AssetKey("feature_views"))
        job = defs.resolve_implicit_global_asset_job_def()
        built = job.execute_in_process(
            instance=instance, asset_selection=selected, raise_on_error=False
        )
        _require_success(built, "the smoke build", log)
        # The versions the change computes, built as `feature_versions` builds them; nothing
        # serves in a scratch home, so no other version is pinned.
        versions = build_versions(home, applied_versions(home).values(), print)
        trained = job.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey(f"{m}_training_set") for m in models],
            raise_on_error=False,
        )
        _require_success(trained, "the smoke build", log)
    return (
        f"dbt, feast apply, feature version(s) {', '.join(versions)} and {len(models)} "
        "training set(s) built from the sample"
    )


def application_gates(
    home: ShipwayHome, name: str, report_dir: Path, since: str | None, models_dir: Path
) -> str:
    """In a scratch home: land the help centre, build the corpus with dbt (its tests blocking),
    answer every evaluation and red-team case with the changed prompt and judge it; where the
    prompt differs at `since`, that prompt is the champion the change rules compare with."""
    from dagster import DagsterInstance

    from shipway.data.help_centre import FULL
    from shipway.defs.applications import help_centre_run_config, help_centre_selection
    from shipway.defs.code_location import code_location
    from shipway.models.application import corpus_snapshot, settings_for
    from shipway.models.catalog import load_applications
    from shipway.release.application_gate import evaluate, evaluation_sets, judge
    from shipway.serving.assistant import Application

    (app,) = [a for a in load_applications(models_dir) if a.name == name]
    log = report_dir / f"{name}-evaluation.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with environment(home.environment()), output_to(log):
        defs = code_location([], RAW_EVENTS_CONTRACT, [app])
        built = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=DagsterInstance.ephemeral(),
            asset_selection=help_centre_selection(defs),
            run_config=help_centre_run_config(FULL),
            raise_on_error=False,
        )
        _require_success(built, f"{name}: the help centre and its corpus", log)
    corpus, version = corpus_snapshot(home.table(app.declaration.corpus.table))
    sets = evaluation_sets(home, app.declaration)
    candidate = settings_for(app, "change", 0, version)
    evaluated = evaluate(Application(candidate, corpus), sets.questions, sets.red_team)
    base = _prompt_at(app, since) if since else None
    champion = None
    if base is not None and base != (candidate.system_template, candidate.user_template):
        system, user = base
        was = replace(candidate, version=since or "", system_template=system, user_template=user)
        champion = evaluate(Application(was, corpus), sets.questions, sets.red_team)
    report = judge(app.declaration, evaluated, champion)
    (report_dir / f"{name}-report.json").write_text(json.dumps(report.to_json(), indent=2))
    if not report.passed:
        raise CIFailure(f"{name}: {report.summary()} ({app.folder / 'model.yaml'})")
    against = f"the prompt at {since}" if champion else "absolute limits (prompt unchanged)"
    shown = ("fact_coverage", "groundedness", "injection_success_rate", "cpu_p99_ms")
    values = ", ".join(f"{m} {report.metrics[m]:.3f}" for m in shown)
    return f"{len(evaluated.cases)} cases against {against}: {values}"


def _prompt_at(app: DeclaredApplication, since: str) -> tuple[str, str] | None:
    """The declared prompt's templates as they were at the merge base of `since` and HEAD."""
    try:
        base = git("merge-base", since, "HEAD", cwd=REPO_ROOT).strip()
        texts = [
            git("show", f"{base}:{(app.folder / path).relative_to(REPO_ROOT)}", cwd=REPO_ROOT)
            for path in (app.declaration.prompt.system, app.declaration.prompt.user)
        ]
    except (subprocess.CalledProcessError, ValueError):
        return None
    return texts[0], texts[1]


def _require_success(result: ExecuteInProcessResult, what: str, log: Path) -> None:
    """A failed blocking check names its rule; a failed step names its error; both say where
    the full log is."""
    failed = [
        f"{e.asset_check_key.name} on {e.asset_key.to_user_string()}: {e.description}"
        for e in (
            event.asset_check_evaluation_data
            for event in result.all_events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
        if not e.passed and e.severity.value == "ERROR"
    ]
    errors = run_failures(result)
    if not result.success or failed:
        raise CIFailure(
            f"{what} failed: {'; '.join(failed + errors) or 'no step said why'}; full log: {log}"
        )


@dataclass(frozen=True)
class SmokeSet:
    """A model's training set as the smoke build wrote it."""

    declared: DeclaredModel
    where: str
    frame: pd.DataFrame
    features: list[str]

    @classmethod
    def read(cls, home: ShipwayHome, model: str, models_dir: Path = ASSETS_DIR) -> SmokeSet:
        from shipway.data.admission import Ledger
        from shipway.data.lake import read_table, table_info
        from shipway.features.training_sets import recorded_features
        from shipway.models.catalog import declared_model, load_models

        declared = declared_model(load_models(models_dir, RAW_EVENTS_CONTRACT), model)
        table = declared.declaration.training_set
        accepted = Ledger(home).require_accepted(table)
        info = table_info(home.table(table), accepted.version)
        frame = read_table(home.table(table), version=info.version)
        return cls(declared, f"{table} v{info.version}", frame, recorded_features(info))

    def train(self) -> TrainedModel:
        from shipway.models.training import train

        return train(self.frame, self.declared.declaration, self.features)


def smoke_train(home: ShipwayHome, model: str, models_dir: Path = ASSETS_DIR) -> str:
    """Train on the model's smoke training set; its absolute gates on the validation rows."""
    smoke = SmokeSet.read(home, model, models_dir)
    trained = smoke.train()
    gates = smoke.declared.declaration.gates
    observed = {g.metric: trained.metrics[g.metric] for g in gates}
    failures = [reason for g in gates if (reason := g.check(observed[g.metric]))]
    if failures:
        path = smoke.declared.path
        policy = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        raise CIFailure(f"{model} smoke gates on {smoke.where} ({policy}): {'; '.join(failures)}")
    passed = ", ".join(f"{m} {v:.3f}" for m, v in observed.items())
    return f"{smoke.where}, {len(smoke.frame)} rows; gates pass: {passed}"


def reproducible(home: ShipwayHome, model: str, models_dir: Path = ASSETS_DIR) -> str:
    """Two trainings on the same training set give the same artifact (sha256)."""
    from shipway.release.reproduce import file_sha256

    smoke = SmokeSet.read(home, model, models_dir)
    hashes = []
    with tempfile.TemporaryDirectory(prefix="shipway-ci-") as tmp:
        for attempt in (1, 2):
            path = Path(tmp) / f"model-{attempt}.ubj"
            smoke.train().model.save_model(str(path))
            hashes.append(file_sha256(path))
    if hashes[0] != hashes[1]:
        raise CIFailure(
            f"{model} is not reproducible: two trainings on {smoke.where} gave sha256 "
            f"{hashes[0][:12]} and {hashes[1][:12]}"
        )
    return f"two trainings on {smoke.where}, one artifact (sha256 {hashes[0][:12]})"


def ci_package(
    home: ShipwayHome, model: str, dest: Path, sample: Path, models_dir: Path = ASSETS_DIR
) -> str:
    """The change's output: the smoke model's signed package, version `ci-<commit>`, verified
    after writing. Without a signing key in the environment it is not built (and says so)."""
    from shipway.models.tracking import git_commit, lock_hash
    from shipway.release.reproduce import file_sha256
    from shipway.serving.bundle import ESTIMATOR_FILE, write_bundle
    from shipway.serving.package import (
        SIGNING_KEY_ENV,
        SIGNING_KEY_FILE_ENV,
        build_package,
        signing_configured,
        signing_key,
        verify_package,
    )

    if not signing_configured():
        return f"not built: no signing key in ${SIGNING_KEY_ENV} or ${SIGNING_KEY_FILE_ENV}"
    smoke = SmokeSet.read(home, model, models_dir)
    trained = smoke.train()
    declaration = smoke.declared.declaration
    commit = git_commit()
    version = f"ci-{commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''}"
    key = signing_key()
    with tempfile.TemporaryDirectory(prefix="shipway-ci-bundle-") as tmp:
        model_file = Path(tmp) / "model.ubj"
        trained.model.save_model(str(model_file))
        estimator_file = trained.estimator.save(Path(tmp) / ESTIMATOR_FILE)
        bundle_dir = Path(tmp) / "bundle"
        write_bundle(
            bundle_dir,
            model,
            version,
            model_file,
            trained.reference,
            declaration.problem,
            declaration.drift.rules(declaration.serving.drift_window),
            feature_service=declaration.feature_service,
            replicas=declaration.serving.replicas,
            estimator_file=estimator_file,
        )
        lineage = {
            "model": model,
            "version": version,
            "built_by": "shipway ci (smoke training on the committed sample)",
            "code_commit": commit,
            "lock_sha256": lock_hash(),
            "artifact_sha256": file_sha256(model_file),
            "data_versions": {"sample_sha256": file_sha256(sample), "training_set": smoke.where},
            "feature_service": declaration.feature_service,
            "parameters": {"seed": declaration.training.seed, **declaration.training.params},
            "metrics": trained.metrics,
            "gates": [
                {"metric": g.metric, "observed": trained.metrics[g.metric], "passed": True}
                for g in declaration.gates
            ],
        }
        built = build_package(bundle_dir, lineage, trained.features, dest, key)
    checked = verify_package(built.path, key.public_key())
    return f"{checked.path} signed by key {checked.key_id}, {len(checked.manifest['files'])} files"


def locks_unchanged() -> str:
    uv = REPO_ROOT / ".tools" / "bin" / "uv"
    _run([str(uv), "lock", "--check", "--offline"], "uv lock --check (uv.lock)")
    _run(
        [str(uv), "lock", "--check", "--offline", "--project", "deploy/serving"],
        "uv lock --check (deploy/serving/uv.lock)",
    )
    return "uv.lock and deploy/serving/uv.lock match their pyproject.toml"


@dataclass
class Report:
    plan: Plan
    steps: list[StepResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    def junit(self) -> str:
        suite = ElementTree.Element(
            "testsuite",
            name="shipway ci",
            tests=str(len(self.steps)),
            failures=str(sum(not s.passed for s in self.steps)),
            time=f"{sum(s.seconds for s in self.steps):.2f}",
        )
        for step in self.steps:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname="shipway.ci",
                name=step.name,
                time=f"{step.seconds:.2f}",
            )
            if step.passed:
                ElementTree.SubElement(case, "system-out").text = step.detail
            else:
                ElementTree.SubElement(case, "failure", message=step.detail).text = step.detail
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)

    def markdown(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"## shipway ci: {verdict}", ""]
        if self.plan.models:
            lines.append("Models this change touches:")
            lines += [f"- **{m}**: {'; '.join(self.plan.reasons[m])}" for m in self.plan.models]
        else:
            lines.append("No declared model is touched by this change.")
        lines += ["", "| step | result | seconds | detail |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {s.name} | {'pass' if s.passed else 'FAIL'} | {s.seconds:.1f} | "
            f"{s.detail.replace('|', '/')} |"
            for s in self.steps
        ]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "junit.xml").write_text(self.junit())
        (folder / "summary.md").write_text(self.markdown())


@dataclass(frozen=True)
class Workspace:
    """Where a CI run reads and writes: the scratch home it builds in, the home whose latest
    accepted snapshot it checks, the sample, the model declarations and the report folder."""

    home: ShipwayHome
    report_dir: Path
    snapshot_home: ShipwayHome
    sample: Path = SAMPLE
    models_dir: Path = ASSETS_DIR

    def steps(self, the_plan: Plan) -> list[tuple[str, Callable[[], str]]]:
        """The plan's steps, in the order they run."""
        if the_plan.empty:
            return []
        home, models_dir = self.home, self.models_dir
        steps: list[tuple[str, Callable[[], str]]] = [
            ("static checks", static_checks),
            ("feature logic unit tests", feature_tests),
            ("raw-events contract on the sample", partial(sample_contract, self.sample)),
            (
                "raw-events contract on the latest accepted snapshot",
                partial(snapshot_contract, self.snapshot_home),
            ),
        ]
        steps += [
            (
                f"{a}: evaluation and red-team gates",
                partial(application_gates, home, a, self.report_dir, the_plan.since, models_dir),
            )
            for a in the_plan.applications
        ]
        if not the_plan.models:
            return steps
        steps.append(
            (
                "feast plan against the configured registry",
                partial(feast_plan, self.snapshot_home, self.report_dir / "feast-plan.txt"),
            )
        )
        log = self.report_dir / "smoke-build.log"
        build = partial(smoke_build, home, the_plan.models, self.sample, log, models_dir)
        steps.append(("smoke build", build))
        for m in the_plan.models:
            steps += [
                (f"{m}: smoke training and gates", partial(smoke_train, home, m, models_dir)),
                (f"{m}: reproducibility", partial(reproducible, home, m, models_dir)),
            ]
        steps.append(("lock files", locks_unchanged))
        packages = self.report_dir / "packages"
        steps += [
            (f"{m}: package", partial(ci_package, home, m, packages, self.sample, models_dir))
            for m in the_plan.models
        ]
        return steps


def run_steps(
    the_plan: Plan,
    workspace: Workspace,
    say: Callable[[str], None],
    skip: frozenset[str] = frozenset(),
) -> Report:
    """The plan's steps in order, stopping at the first failure; the report is written either
    way."""
    report = Report(the_plan)
    if the_plan.empty:
        say("nothing to check: no declared model or Python file is touched by this change")
    for name, step in workspace.steps(the_plan):
        if any(name.startswith(s) for s in skip):
            say(f"-   {name}: skipped (--skip)")
            continue
        say(f"▶   {name}")
        started = time.perf_counter()
        try:
            detail, passed = step(), True
        except ShipwayError as exc:
            detail, passed = str(exc), False
        result = StepResult(name, time.perf_counter() - started, passed, detail)
        report.steps.append(result)
        say(f"{'✓' if passed else '✗'}   {name} ({result.seconds:.1f}s): {detail}")
        if not passed:
            break
    report.write(workspace.report_dir)
    return report


def run_ci(
    the_plan: Plan,
    report_dir: Path,
    say: Callable[[str], None],
    skip: frozenset[str] = frozenset(),
) -> Report:
    """`shipway ci`: the plan's steps in a scratch home, removed afterwards; the snapshot
    checked is the configured home's ($SHIPWAY_HOME)."""
    with tempfile.TemporaryDirectory(prefix="shipway-ci-home-") as scratch:
        workspace = Workspace(ShipwayHome(Path(scratch)), report_dir, ShipwayHome.from_env())
        return run_steps(the_plan, workspace, say, skip)
