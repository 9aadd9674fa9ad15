"""The signed model package, without servers: what it holds, that a signature and every digest
are checked, that each way of tampering is refused with its reason, and that no key's value
reaches a file or the output. The package served by a real control plane is in
tests/test_serving.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from shipway.cli import main
from shipway.errors import BadRequest, ShipwayError
from shipway.paths import REPO_ROOT, ServingHome
from shipway.serving import runtime
from shipway.serving.bundle import MODEL_FILE, Bundle, read_bundle, write_bundle
from shipway.serving.control_plane import Conflict, ControlPlane, ServedModel, ServedVersion
from shipway.serving.dataplane import DataPlane
from shipway.serving.package import (
    REQUIRE_SIGNED_ENV,
    SIGNING_KEY_ENV,
    SIGNING_KEY_FILE_ENV,
    VERIFY_KEY_ENV,
    Package,
    PackageError,
    build_package,
    key_id,
    public_key_text,
    require_signed,
    signing_key,
    verify_package,
)
from tests.conftest import TOY_FEATURES

LINEAGE = {"code_commit": "abc123", "parameters": {"max_depth": "3"}, "metrics": {"auc": 0.9}}


def _private_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def package(bundles: dict[str, Bundle], tmp_path: Path, key: Ed25519PrivateKey) -> Package:
    return build_package(bundles["1"].path, LINEAGE, TOY_FEATURES, tmp_path / "dist", key)


def test_a_package_holds_bundle_runtime_lock_sbom_lineage_and_dockerfile_and_verifies(
    package: Package, key: Ed25519PrivateKey
) -> None:
    files = set(package.manifest["files"])
    assert {
        "bundle/model.ubj",
        "bundle/model-settings.json",
        "bundle/reference.json",
        "runtime/shipway/serving/mlserver_runtime.py",
        "environment/uv.lock",
        "environment/pyproject.toml",
        "sbom.cdx.json",
        "lineage.json",
        "feature_service.json",
        "Dockerfile",
    } <= files
    sbom = json.loads((package.path / "sbom.cdx.json").read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    mlserver = [c for c in sbom["components"] if c["name"] == "mlserver"]
    assert mlserver and mlserver[0]["purl"] == f"pkg:pypi/mlserver@{mlserver[0]['version']}"
    assert all(len(h["content"]) == 64 for c in sbom["components"] for h in c["hashes"])
    assert json.loads((package.path / "lineage.json").read_text()) == LINEAGE
    service = json.loads((package.path / "feature_service.json").read_text())
    assert service["features"] == TOY_FEATURES
    dockerfile = (package.path / "Dockerfile").read_text()
    assert 'CMD ["mlserver", "start", "/opt/models/toy_model/1"]' in dockerfile
    checked = verify_package(package.path, key.public_key())
    assert (checked.model, checked.version, checked.key_id) == ("toy_model", "1", package.key_id)


def test_the_runtime_in_a_package_imports_in_the_serving_environment_from_the_package_alone(
    package: Package,
) -> None:
    # The package serves without the platform: its runtime/ must hold every Shipway module the
    # runtime imports. Only the serving environment's Python and the package are on the path.
    python = Path(runtime.mlserver_binary()).with_name("python")
    found = subprocess.run(
        [str(python), "-c", "import shipway.serving.mlserver_runtime as r; print(r.__file__)"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(package.path / "runtime")},
        cwd=package.path,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip().startswith(str(package.path / "runtime"))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda p: (p / "bundle/model.ubj").write_bytes(b"not a model"),
            "bundle/model.ubj differs",
        ),
        (lambda p: (p / "bundle/reference.json").unlink(), "bundle/reference.json is missing"),
        (lambda p: (p / "bundle/extra.py").write_text("import os"), "extra.py is not in the man"),
        (
            lambda p: (p / "manifest.json").write_text(
                (p / "manifest.json").read_text().replace('"version": "1"', '"version": "9"')
            ),
            "the signature does not match manifest.json (tampered)",
        ),
        (lambda p: (p / "signature.json").unlink(), "is unsigned: it has no signature.json"),
    ],
)
def test_each_way_of_tampering_is_refused_with_its_reason(
    package: Package, key: Ed25519PrivateKey, tamper: object, reason: str
) -> None:
    assert callable(tamper)
    tamper(package.path)
    with pytest.raises(PackageError, match="refused") as refused:
        verify_package(package.path, key.public_key())
    assert reason in str(refused.value)


def test_a_package_signed_by_another_key_is_refused(package: Package) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(PackageError, match=f"not by the verifying key {key_id(other)}"):
        verify_package(package.path, other)


def test_keys_come_from_the_environment_or_a_file_and_are_never_written_or_printed(
    bundles: dict[str, Bundle],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(SIGNING_KEY_FILE_ENV, raising=False)
    with pytest.raises(ShipwayError, match="no signing key"):
        signing_key()
    monkeypatch.setenv(SIGNING_KEY_ENV, "not-base64!")
    with pytest.raises(ShipwayError, match=r"\$SHIPWAY_SIGNING_KEY: not base64") as bad:
        signing_key()
    assert "not-base64!" not in str(bad.value)

    key_file = tmp_path / "secrets" / "signing.key"
    assert main(["keys", "generate", "--out", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = key_file.read_text().strip()
    assert private not in out
    assert main(["keys", "generate", "--out", str(key_file)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "generate", "--out", "tests/leaked.key"]) == 2
    assert "inside the repository" in capsys.readouterr().err
    assert not Path("tests/leaked.key").exists()

    monkeypatch.delenv(SIGNING_KEY_ENV)
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(key_file))
    built = build_package(
        bundles["1"].path, LINEAGE, TOY_FEATURES, tmp_path / "dist", signing_key()
    )
    for path in built.path.rglob("*"):
        if path.is_file():
            assert private.encode() not in path.read_bytes(), path
    public = signing_key().public_key()
    assert f"{VERIFY_KEY_ENV}={public_key_text(public)}" in out

    monkeypatch.setenv(VERIFY_KEY_ENV, public_key_text(public))
    assert main(["models", "verify", str(built.path)]) == 0
    verified = capsys.readouterr().out
    assert "verified: toy_model v1" in verified and private not in verified
    (built.path / "bundle" / "model.ubj").write_bytes(b"swapped")
    assert main(["models", "verify", str(built.path)]) == 1
    assert "REFUSED: package" in capsys.readouterr().err


def _plane(root: Path) -> ControlPlane:
    """A control plane on `root`, for its checks; nothing is started."""
    return ControlPlane(root, DataPlane(root / "dp"), root / "logs", None)


def _under(root: Path, source: Path) -> Path:
    """A copy of a bundle or package under the serving home (where bundles are served from)."""
    dest = root / source.parent.name / source.name
    shutil.copytree(source, dest)
    return dest


def test_production_serving_refuses_an_unsigned_bundle_and_serves_a_package_from_its_copy(
    bundles: dict[str, Bundle],
    package: Package,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "serving"
    plane = _plane(root)
    unsigned = _under(root, bundles["1"].path)
    packaged = _under(root, package.path) / "bundle"
    monkeypatch.delenv(REQUIRE_SIGNED_ENV, raising=False)
    monkeypatch.delenv(VERIFY_KEY_ENV, raising=False)
    assert plane._admit(unsigned).path == unsigned.resolve()  # development: served as it is
    with pytest.raises(PackageError, match="has no \\$SHIPWAY_VERIFY_KEY"):
        plane._admit(packaged)
    monkeypatch.setenv(VERIFY_KEY_ENV, public_key_text(key.public_key()))
    served = plane._admit(packaged)
    # Served from the control plane's private, read-only copy, not where it was handed over.
    assert served.path.parent.parent == ServingHome(root.resolve()).verified
    assert stat.S_IMODE((served.path / "model.ubj").stat().st_mode) == 0o444
    for production in ("1", "true", "TRUE", "yes", "on"):
        monkeypatch.setenv(REQUIRE_SIGNED_ENV, production)
        with pytest.raises(PackageError, match="is not a signed package"):
            plane._admit(unsigned)
        assert plane._admit(packaged) == served


def test_production_mode_is_a_yes_or_a_no_and_anything_else_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value, wanted in (("true", True), ("Yes", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv(REQUIRE_SIGNED_ENV, value)
        assert require_signed() is wanted
    monkeypatch.setenv(REQUIRE_SIGNED_ENV, "enabled")
    with pytest.raises(ShipwayError, match="SHIPWAY_REQUIRE_SIGNED='enabled' is neither true"):
        require_signed()


def test_a_link_or_a_special_file_anywhere_in_a_package_is_refused_naming_it(
    package: Package, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # A linked folder is not in the manifest and MLServer would follow it: code no signature
    # covers. A signed file swapped for a link to the same bytes elsewhere verifies by digest,
    # but whatever the link's target holds later is what loads.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model-settings.json").write_text("{}")
    (package.path / "bundle" / "plugins").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PackageError, match="bundle/plugins is a symbolic link"):
        verify_package(package.path, key.public_key())
    (package.path / "bundle" / "plugins").unlink()

    model = package.path / "bundle" / "model.ubj"
    moved = outside / "model.ubj"
    shutil.move(model, moved)
    model.symlink_to(moved)
    with pytest.raises(PackageError, match=r"bundle/model\.ubj is a symbolic link"):
        verify_package(package.path, key.public_key())
    model.unlink()
    shutil.move(moved, model)

    os.mkfifo(package.path / "runtime" / "pipe")
    with pytest.raises(PackageError, match="runtime/pipe is a special file"):
        verify_package(package.path, key.public_key())


def test_a_verified_copy_is_verified_again_before_a_model_server_starts_from_it(
    package: Package, key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "serving"
    plane = _plane(root)
    monkeypatch.setenv(VERIFY_KEY_ENV, public_key_text(key.public_key()))
    handed = _under(root, package.path)
    served = plane._admit(handed / "bundle")
    # What was handed over may change now: serving loads its own copy.
    (handed / "bundle" / "model.ubj").write_bytes(b"swapped after the check")
    plane._verify_installed(served)
    copy = served.path / "model.ubj"
    copy.chmod(0o644)
    copy.write_bytes(b"swapped in the copy")
    with pytest.raises(PackageError, match=r"bundle/model\.ubj differs from its digest"):
        plane._verify_installed(served)


def test_a_saved_state_cannot_serve_what_a_deployment_could_not(
    bundles: dict[str, Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked before any model server starts: these raise instead of starting one.
    plane = _plane(tmp_path / "serving")
    outside = bundles["1"].path
    with pytest.raises(BadRequest, match="is outside the serving home"):
        plane._revive("toy_model", "1", {"bundle": str(outside), "replicas": []})
    inside = _under(tmp_path / "serving", outside)
    monkeypatch.setenv(REQUIRE_SIGNED_ENV, "1")
    with pytest.raises(PackageError, match="is not a signed package"):
        plane._revive("toy_model", "1", {"bundle": str(inside), "replicas": []})


def test_a_served_version_is_never_redeployed_with_other_contents(
    bundles: dict[str, Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "serving"
    plane = _plane(root)
    monkeypatch.delenv(REQUIRE_SIGNED_ENV, raising=False)
    served = _under(root, bundles["1"].path)
    other = bundles["2"]
    changed = write_bundle(
        root / "elsewhere" / "1",
        "toy_model",
        "1",
        other.path / MODEL_FILE,
        other.reference,
        other.problem,
        other.drift,
    )
    running = ServedVersion(read_bundle(served), [])
    plane.models["toy_model"] = ServedModel("toy_model", {"1": running}, {"1": 100})
    assert asyncio.run(plane.deploy("toy_model", "1", served))  # the same contents: applied
    with pytest.raises(Conflict, match=r"toy_model v1 is already served from .* other contents"):
        asyncio.run(plane.deploy("toy_model", "1", changed.path))
    assert plane.models["toy_model"].versions["1"] is running


def test_a_signing_key_file_others_can_read_or_inside_the_repository_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "signing.key"
    assert main(["keys", "generate", "--out", str(key_file)]) == 0
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(key_file))
    signing_key()
    key_file.chmod(0o644)
    with pytest.raises(ShipwayError, match="mode 0644: a signing key must be readable by its"):
        signing_key()
    inside = REPO_ROOT / "tests" / f".leaked-{os.getpid()}.key"
    try:
        shutil.copy(key_file, inside)
        inside.chmod(0o600)
        monkeypatch.setenv(SIGNING_KEY_FILE_ENV, str(inside))
        with pytest.raises(ShipwayError, match="inside the repository"):
            signing_key()
    finally:
        inside.unlink(missing_ok=True)
