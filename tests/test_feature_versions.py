"""Feature versions: a digest of what computes a model's features, from the sources themselves.

What must move the digest (a window, an on-demand function's logic, a var) and what must not
(a comment, another model's SQL, a label model), each shown on the real dbt project and Feast
repository, parsed by dbt and Feast."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shipway.cli import main
from shipway.errors import ShipwayError
from shipway.features.versions import (
    FeatureVersion,
    Sources,
    copy_sources,
    current_version,
    dbt_manifest,
    dbt_parts,
    history,
    mark_applied,
    normalize_python,
    normalize_sql,
    repository_parts,
)
from shipway.paths import DBT_PROJECT_DIR, FEATURE_REPO_DIR, ShipwayHome
from tests.conftest import WINDOW_14, WINDOW_30, TwoVersions, spend_versions

FRAUD, SPEND = "fraud_model_v1", "customer_spend_v1"
CUSTOMER_SQL = "models/features/customer_features.sql"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return dbt_manifest(DBT_PROJECT_DIR)


@pytest.fixture(scope="module")
def feast() -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    return repository_parts(FEATURE_REPO_DIR, [FRAUD, SPEND])


def _digests(
    manifest: dict[str, Any], feast: dict[str, tuple[dict[str, str], tuple[str, ...]]]
) -> dict[str, FeatureVersion]:
    out = {}
    for service, (parts, tables) in feast.items():
        dbt = dbt_parts(manifest, DBT_PROJECT_DIR, tables)
        out[service] = FeatureVersion(service, {**dbt, **parts}, tables)
    return out


def _edited(manifest: dict[str, Any], path: str, old: str, new: str) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    (node,) = [n for n in changed["nodes"].values() if n.get("original_file_path") == path]
    assert old in node["raw_code"]
    node["raw_code"] = node["raw_code"].replace(old, new)
    return changed


def test_sql_is_compared_without_its_comments_and_layout_but_with_its_strings() -> None:
    sql = "select a, -- the count\n  b /* note */ from t {# jinja note #} where c = '-- kept'"
    assert normalize_sql(sql) == "select a, b from t where c = '-- kept'"
    assert normalize_sql("select  a\n\nfrom t") == normalize_sql("select a from t")
    assert normalize_sql("select 'a  b'") != normalize_sql("select 'a b'")


def test_python_is_compared_as_it_runs_without_comments_or_docstrings() -> None:
    one = 'def f(x):\n    """Doc."""\n    # why\n    return x + 1\n'
    two = "def f(x):\n    return x+1  # terse\n"
    assert normalize_python(one) == normalize_python(two)
    assert normalize_python(two) != normalize_python("def f(x):\n    return x + 2\n")


def test_a_comment_or_another_models_sql_leaves_a_version_as_it_is(
    manifest: dict[str, Any], feast: dict[str, tuple[dict[str, str], tuple[str, ...]]]
) -> None:
    before = _digests(manifest, feast)
    commented = _edited(manifest, CUSTOMER_SQL, "select", "-- a reviewer's note\nselect  ")
    assert {s: v.digest for s, v in _digests(commented, feast).items()} == {
        s: v.digest for s, v in before.items()
    }
    labels = _edited(
        manifest, "models/labels/customer_spend_labels.sql", "select", "select 1 as x,"
    )
    assert _digests(labels, feast)[SPEND].digest == before[SPEND].digest
    merchant = _edited(manifest, "models/features/merchant_features.sql", "6 days", "5 days")
    after = _digests(merchant, feast)
    assert after[SPEND].digest == before[SPEND].digest, "customer_spend reads no merchant view"
    assert [c.describe() for c in after[FRAUD].changes(before[FRAUD])] == [
        "changed dbt_project/models/features/merchant_features.sql"
    ]


def test_a_changed_window_is_a_new_version_of_every_model_reading_it_named_by_file(
    manifest: dict[str, Any], feast: dict[str, tuple[dict[str, str], tuple[str, ...]]]
) -> None:
    before = _digests(manifest, feast)
    after = _digests(_edited(manifest, CUSTOMER_SQL, WINDOW_30, WINDOW_14), feast)
    for service in (FRAUD, SPEND):
        assert after[service].digest != before[service].digest
        assert [c.describe() for c in after[service].changes(before[service])] == [
            "changed dbt_project/models/features/customer_features.sql"
        ]
    upstream = _digests(
        _edited(manifest, "models/staging/stg_transactions.sql", "< 6", "< 5"), feast
    )
    assert upstream[SPEND].digest != before[SPEND].digest, "an upstream model counts too"


def test_an_on_demand_functions_logic_is_a_new_version_of_its_model_only(tmp_path: Path) -> None:
    repo = copy_sources(Sources(), tmp_path).feature_repo
    source = repo / "fraud_model.py"
    text = source.read_text()
    before = repository_parts(repo, [FRAUD, SPEND])
    part = "feast on-demand view transaction_features"
    source.write_text(
        text.replace(
            "        hour = stamp.hour\n", "        # the UTC hour\n        hour = stamp.hour\n"
        )
    )
    assert repository_parts(repo, [FRAUD])[FRAUD] == before[FRAUD], "a comment is no change"
    source.write_text(text.replace("int(hour < 6)", "int(hour < 5)"))
    after = repository_parts(repo, [FRAUD, SPEND])
    assert after[SPEND] == before[SPEND]
    changed = {k for k, v in after[FRAUD][0].items() if before[FRAUD][0].get(k) != v}
    assert changed == {part}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> TwoVersions:
    tmp = tmp_path_factory.mktemp("versions")
    return spend_versions(ShipwayHome(tmp / "home"), tmp / "src")


def test_each_version_is_kept_with_its_own_sources_and_named_changes(
    two_versions: TwoVersions,
) -> None:
    first, second = two_versions.first, two_versions.second
    assert first.version.digest != second.version.digest
    assert WINDOW_30 in (first.sources.dbt_project / CUSTOMER_SQL).read_text()
    assert WINDOW_14 in (second.sources.dbt_project / CUSTOMER_SQL).read_text()
    found = history(two_versions.home)
    assert found.services[SPEND] == [first, second]
    assert found.previous(second) == first and found.previous(first) is None
    assert [c.describe() for c in second.version.changes(first.version)] == [
        "changed dbt_project/models/features/customer_features.sql"
    ]


def test_a_training_set_refuses_sources_changed_since_the_tables_were_built(
    two_versions: TwoVersions,
) -> None:
    home, first, second = two_versions.home, two_versions.first, two_versions.second
    mark_applied(home, {SPEND: first})
    with pytest.raises(ShipwayError) as refused:
        current_version(home, SPEND, two_versions.sources)
    message = str(refused.value)
    assert first.version.digest in message and second.version.digest in message
    assert "changed dbt_project/models/features/customer_features.sql" in message
    assert "refresh_features" in message
    mark_applied(home, {SPEND: second})
    assert current_version(home, SPEND, two_versions.sources) == second.version


def test_the_versions_command_lists_each_version_what_changed_and_where(
    two_versions: TwoVersions, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, first, second = two_versions.home, two_versions.first, two_versions.second
    mark_applied(home, {SPEND: second})
    monkeypatch.setenv("SHIPWAY_HOME", str(home.root))
    # No registry to read: the listing says so rather than waiting on it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert main(["features", "versions", "customer_spend"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "customer_spend: feature service customer_spend_v1, 2 feature version(s)" in out
    at = [i for i, line in enumerate(lines) if line.startswith(f"  {first.version.digest}")]
    assert at and lines[at[0] + 1].strip() == "first version recorded"
    (built,) = [line for line in lines if line.startswith(f"  {second.version.digest}")]
    assert "built for it" in built
    assert "changed dbt_project/models/features/customer_features.sql" in out
    assert "model versions not shown" in out
    assert main(["features", "versions", "no_such_model"]) != 0


def test_a_half_written_version_folder_is_reported_not_read(tmp_path: Path) -> None:
    home = ShipwayHome(tmp_path / "home")
    folder = home.root / "features" / "0123456789ab"
    folder.mkdir(parents=True)
    (folder / "version.json").write_text(json.dumps({"service": SPEND, "parts": {}}))
    found = history(home)
    assert found.services == {}
    assert found.unreadable and found.unreadable[0].startswith("0123456789ab")
    assert [p.name for p in folder.iterdir()] == ["version.json"], "nothing is deleted on read"


def test_ci_names_the_feature_versions_a_change_creates_and_the_models_to_retrain(
    tmp_path: Path,
) -> None:
    from shipway.ci import feature_version_changes
    from shipway.git import git

    # A checkout's layout, as `git archive` gives the merge base's.
    here, checkout = Sources(), Sources.checkout(tmp_path)
    ignore = shutil.ignore_patterns("target", "logs", "__pycache__", "data")
    shutil.copytree(here.dbt_project, checkout.dbt_project, ignore=ignore)
    shutil.copytree(here.feature_repo, checkout.feature_repo, ignore=ignore)
    checkout.contract.parent.mkdir(parents=True)
    shutil.copy2(here.contract, checkout.contract)
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base", cwd=tmp_path)
    services = {FRAUD: ["fraud_model"], SPEND: ["customer_spend"]}
    assert feature_version_changes("HEAD", services, tmp_path) == []
    source = tmp_path / "feature_repo" / "fraud_model.py"
    source.write_text(source.read_text().replace("int(hour < 6)", "int(hour < 5)"))
    (line,) = feature_version_changes("HEAD", services, tmp_path)
    assert line.startswith(f"feature version of {FRAUD}: ")
    assert "(changed feast on-demand view transaction_features)" in line
    assert line.endswith(
        "fraud_model must retrain on it and pass the release gate before it serves"
    )
