"""A versioned model package: what CI hands to serving, signed.

Layout (`<model>-<version>/`):

- `bundle/`: what MLServer loads (`model.ubj`, `model-settings.json`, `reference.json`, the drift
  reference), as `shipway.serving.bundle` writes it;
- `feature_service.json`: the Feast feature service and the feature vector, in order;
- `environment/`: the serving environment's `pyproject.toml` and `uv.lock`;
- `runtime/`: the source of Shipway's MLServer runtime (the bundle's `implementation`) and the
  numpy-only modules it imports, so the package serves without the platform installed;
- `sbom.cdx.json`: that environment as a CycloneDX 1.5 SBOM (each package, its purl and hashes);
- `lineage.json`: commit, data versions, parameters, metrics and gate verdict of the version;
- `Dockerfile`: an image of the package on MLServer, for users who build images;
- `manifest.json`: the sha256 of every file above; `signature.json`: an Ed25519 signature of the
  manifest's bytes and the id of the key that made it.

The signing key comes from $SHIPWAY_SIGNING_KEY (base64 of the 32-byte private key) or the file
$SHIPWAY_SIGNING_KEY_FILE names (outside the repository, readable by its owner only); verifying
needs only the public key, $SHIPWAY_VERIFY_KEY or $SHIPWAY_VERIFY_KEY_FILE. No key's value is
ever printed or written into a package.

A package holds regular files and folders only: a symbolic link or a special file (a pipe, a
device) is refused when building and when verifying, wherever it points, since MLServer follows
links and would load what no signature covers. Serving never loads a package where it was
handed over: `install_package` verifies it, copies its files to a private, read-only folder
named by the manifest's digest, and verifies the copy, which is verified again every time a
model server starts from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import stat
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from shipway.errors import BadRequest, ShipwayError
from shipway.paths import DEPLOY_DIR, PLATFORM_DIR, REPO_ROOT
from shipway.processes import flag
from shipway.serving.bundle import (
    ESTIMATOR_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SETTINGS_FILE,
    read_bundle,
)

SIGNING_KEY_ENV = "SHIPWAY_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "SHIPWAY_SIGNING_KEY_FILE"
VERIFY_KEY_ENV = "SHIPWAY_VERIFY_KEY"
VERIFY_KEY_FILE_ENV = "SHIPWAY_VERIFY_KEY_FILE"
# Production mode on the control plane: serve signed packages only.
REQUIRE_SIGNED_ENV = "SHIPWAY_REQUIRE_SIGNED"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
SERVING_ENVIRONMENT = DEPLOY_DIR / "serving"
FORMAT = "shipway-model-package/1"
# What `shipway.serving.mlserver_runtime` imports, and the packages' __init__ files: the
# runtime's import closure within Shipway (a test holds this list to it).
RUNTIME_SOURCES = (
    "shipway/__init__.py",
    "shipway/errors.py",
    "shipway/files.py",
    "shipway/limits.py",
    "shipway/names.py",
    "shipway/stats/__init__.py",
    "shipway/stats/attribution.py",
    "shipway/stats/divergence.py",
    "shipway/stats/drift.py",
    "shipway/stats/window.py",
    "shipway/serving/__init__.py",
    "shipway/serving/bundle.py",
    "shipway/serving/explanations.py",
    "shipway/serving/mlserver_runtime.py",
    "shipway/serving/prediction_spool.py",
    "shipway/serving/protocol.py",
    "shipway/serving/server_errors.py",
    "shipway/serving/trees.py",
)


class PackageError(BadRequest):
    """A package that must not be served: unsigned, tampered, or signed by another key."""


def _key_bytes(value: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ShipwayError(f"{where}: not base64 (expected 32 bytes, base64-encoded)") from None
    if len(raw) != 32:
        raise ShipwayError(f"{where}: {len(raw)} bytes after base64, expected 32")
    return raw


def require_signed() -> bool:
    """Production mode: $SHIPWAY_REQUIRE_SIGNED as a yes or a no (off when unset); anything
    else is refused, so a misspelt value never turns the check off."""
    return flag(REQUIRE_SIGNED_ENV, default=False)


def _private_key_file(path: Path, file_env: str) -> None:
    """A private key is read only from a file its owner alone can read, outside the repository."""
    if path.resolve().is_relative_to(REPO_ROOT.resolve()):
        raise ShipwayError(
            f"${file_env} names {path}, inside the repository: keep signing keys out of it"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ShipwayError(
            f"${file_env} names {path} with mode {mode:04o}: a signing key must be readable by "
            f"its owner only (chmod 600 {path})"
        )


def _from_environment(
    value_env: str, file_env: str, private: bool = False
) -> tuple[bytes, str] | None:
    if os.environ.get(value_env):
        return _key_bytes(os.environ[value_env], f"${value_env}"), f"${value_env}"
    if os.environ.get(file_env):
        path = Path(os.environ[file_env])
        if not path.is_file():
            raise ShipwayError(f"${file_env} names {path}, which is not a file")
        if private:
            _private_key_file(path, file_env)
        return _key_bytes(path.read_text(), f"{path} (${file_env})"), str(path)
    return None


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a key, safe to print: the sha256 of its public half."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def signing_configured() -> bool:
    """Whether a signing key is in the environment (packages are built only then)."""
    return bool(os.environ.get(SIGNING_KEY_ENV) or os.environ.get(SIGNING_KEY_FILE_ENV))


def signing_key() -> Ed25519PrivateKey:
    found = _from_environment(SIGNING_KEY_ENV, SIGNING_KEY_FILE_ENV, private=True)
    if found is None:
        raise ShipwayError(
            f"no signing key: set ${SIGNING_KEY_FILE_ENV} to a key file outside the repository "
            f"(`shipway keys generate --out FILE`) or ${SIGNING_KEY_ENV} from your CI's secrets"
        )
    return Ed25519PrivateKey.from_private_bytes(found[0])


def verify_key() -> Ed25519PublicKey | None:
    """The public key serving verifies packages with, if one is configured."""
    found = _from_environment(VERIFY_KEY_ENV, VERIFY_KEY_FILE_ENV)
    return Ed25519PublicKey.from_public_bytes(found[0]) if found else None


def generate_key(path: Path) -> Ed25519PublicKey:
    """A new private key in `path` (mode 0600, refused inside the repository or over a file);
    returns its public half."""
    if path.resolve().is_relative_to(REPO_ROOT.resolve()):
        raise ShipwayError(f"{path} is inside the repository: keep signing keys out of it")
    if path.exists():
        raise ShipwayError(f"{path} exists: a key is never overwritten")
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(raw).decode() + "\n")
    return key.public_key()


def _entries(root: Path, where: str) -> list[Path]:
    """Every regular file under `root`; a symbolic link or a special file anywhere is refused,
    naming it (links are not followed: a link to a folder is one entry, and refused)."""
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted([*dirs, *names]):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise PackageError(
                    f"{where}: {path.relative_to(root)} is a symbolic link (to "
                    f"{path.readlink()}); a package holds regular files only; refused"
                )
            if stat.S_ISREG(mode):
                files.append(path)
            elif not stat.S_ISDIR(mode):
                raise PackageError(
                    f"{where}: {path.relative_to(root)} is a special file; a package holds "
                    "regular files only; refused"
                )
    return sorted(files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sbom(lock: Path, component: dict[str, str]) -> dict[str, Any]:
    """The locked environment as CycloneDX 1.5: one library per locked package."""
    locked = tomllib.loads(lock.read_text())
    components = []
    for package in sorted(locked.get("package", []), key=lambda p: p["name"]):
        if "version" not in package or package.get("source", {}).get("virtual"):
            continue
        hashes = sorted(
            {
                w["hash"].removeprefix("sha256:")
                for w in [*package.get("wheels", []), package.get("sdist") or {}]
                if str(w.get("hash", "")).startswith("sha256:")
            }
        )
        components.append(
            {
                "type": "library",
                "bom-ref": f"pkg:pypi/{package['name']}@{package['version']}",
                "name": package["name"],
                "version": package["version"],
                "purl": f"pkg:pypi/{package['name']}@{package['version']}",
                "hashes": [{"alg": "SHA-256", "content": h} for h in hashes],
            }
        )
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{component['name']}@{component['version']}")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {"type": "machine-learning-model", **component},
        },
        "components": components,
    }


def _dockerfile(model: str, version: str, mlserver: str) -> str:
    return f"""\
# {model} v{version} on MLServer {mlserver}, with the environment locked in environment/uv.lock.
# Rendered by `shipway models package`; build it where a container engine runs:
#   docker build -t {model}:{version} .
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /opt/serving
COPY environment/ ./
RUN uv sync --frozen --no-dev && rm -rf /root/.cache
# The bundle's `implementation` is Shipway's runtime, shipped in runtime/.
COPY runtime/ /opt/serving/runtime/
COPY bundle/ /opt/models/{model}/{version}/
ENV MLSERVER_DEBUG=false MLSERVER_GZIP_ENABLED=false PYTHONPATH=/opt/serving/runtime \\
    PATH=/opt/serving/.venv/bin:$PATH
EXPOSE 8080 8081 8082
CMD ["mlserver", "start", "/opt/models/{model}/{version}"]
"""


@dataclass(frozen=True)
class Package:
    path: Path
    model: str
    version: str
    manifest: dict[str, Any]
    key_id: str

    @property
    def bundle(self) -> Path:
        return self.path / "bundle"


def build_package(
    bundle_dir: Path,
    lineage: dict[str, Any],
    features: list[str],
    dest: Path,
    key: Ed25519PrivateKey,
    documents: Mapping[str, str] | None = None,
) -> Package:
    """Write the package of the bundle in `bundle_dir` to `dest/<model>-<version>/`, signed;
    `documents` (name -> text, e.g. the model card) are written beside the lineage."""
    bundle = read_bundle(bundle_dir)
    _entries(bundle_dir, f"bundle {bundle_dir}")
    root = dest / f"{bundle.model}-{bundle.version}"
    if root.exists():
        shutil.rmtree(root)
    (root / "bundle").mkdir(parents=True)
    carried = [MODEL_FILE, SETTINGS_FILE, REFERENCE_FILE]
    if (bundle_dir / ESTIMATOR_FILE).is_file():
        carried.append(ESTIMATOR_FILE)
    for name in carried:
        shutil.copyfile(bundle_dir / name, root / "bundle" / name)
    (root / "environment").mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copyfile(SERVING_ENVIRONMENT / name, root / "environment" / name)
    for name in RUNTIME_SOURCES:
        (root / "runtime" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PLATFORM_DIR / name, root / "runtime" / name)
    service = {
        "feature_service": bundle.feature_service,
        "feature_version": bundle.feature_version,
        "features": features,
    }
    (root / "feature_service.json").write_text(json.dumps(service, indent=1) + "\n")
    (root / "lineage.json").write_text(json.dumps(lineage, indent=1, sort_keys=True) + "\n")
    for name, text in (documents or {}).items():
        if Path(name).name != name or name in {MANIFEST, SIGNATURE}:
            raise ValueError(f"package document {name!r} must be a plain file name")
        (root / name).write_text(text)
    component = {"name": bundle.model, "version": bundle.version}
    document = sbom(root / "environment" / "uv.lock", component)
    (root / "sbom.cdx.json").write_text(json.dumps(document, indent=1) + "\n")
    (mlserver,) = [c["version"] for c in document["components"] if c["name"] == "mlserver"]
    (root / "Dockerfile").write_text(_dockerfile(bundle.model, bundle.version, mlserver))
    files = {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "model": bundle.model,
        "version": bundle.version,
        "feature_service": bundle.feature_service,
        "feature_version": bundle.feature_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (root / MANIFEST).write_bytes(body)
    signature = {
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(body)).decode(),
    }
    (root / SIGNATURE).write_text(json.dumps(signature, indent=1) + "\n")
    return Package(root, bundle.model, bundle.version, manifest, signature["key_id"])


def verify_package(root: Path, public: Ed25519PublicKey) -> Package:
    """The package in `root` as signed, or a PackageError naming what is wrong."""
    where = f"package {root}"
    for name in (MANIFEST, SIGNATURE):
        if not (root / name).is_file():
            raise PackageError(f"{where} is unsigned: it has no {name}; refused")
    body = (root / MANIFEST).read_bytes()
    try:
        signature = json.loads((root / SIGNATURE).read_text())
        manifest = json.loads(body)
        raw = base64.b64decode(signature["signature"], validate=True)
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PackageError(f"{where}: {MANIFEST} or {SIGNATURE} is malformed ({exc!r})") from None
    if signature.get("key_id") != key_id(public):
        raise PackageError(
            f"{where} is signed by key {signature.get('key_id')}, not by the verifying key "
            f"{key_id(public)}; refused"
        )
    try:
        public.verify(raw, body)
    except InvalidSignature:
        raise PackageError(
            f"{where}: the signature does not match {MANIFEST} (tampered); refused"
        ) from None
    present = {
        str(p.relative_to(root))
        for p in _entries(root, where)
        if str(p.relative_to(root)) not in (MANIFEST, SIGNATURE)
    }
    missing = sorted(set(files) - present)
    extra = sorted(present - set(files))
    changed = sorted(f for f in set(files) & present if _sha256(root / f) != files[f])
    problems = [
        *(f"{f} differs from its digest in the manifest" for f in changed),
        *(f"{f} is missing" for f in missing),
        *(f"{f} is not in the manifest" for f in extra),
    ]
    if problems:
        raise PackageError(f"{where} was tampered with: {'; '.join(problems)}; refused")
    bundle = read_bundle(root / "bundle")
    if (bundle.model, bundle.version) != (manifest.get("model"), manifest.get("version")):
        raise PackageError(
            f"{where}: the bundle holds {bundle.model} v{bundle.version}, the manifest says "
            f"{manifest.get('model')} v{manifest.get('version')}; refused"
        )
    return Package(root, bundle.model, bundle.version, manifest, str(signature["key_id"]))


def manifest_digest(root: Path) -> str:
    """The sha256 of a package's manifest: it names every file's digest, so it names the whole."""
    return _sha256(root / MANIFEST)


def install_package(package: Path, installed: Path, public: Ed25519PublicKey) -> Package:
    """The package verified, copied to `installed/<manifest digest>/` (read-only, its folder
    private to this user) and the copy verified: what serving loads from then on, whatever
    happens to the package it was handed. Installing an installed copy verifies it again."""
    checked = verify_package(package, public)
    target = installed / manifest_digest(package)[:32]
    if package.resolve() == target.resolve():
        return checked
    if target.exists():
        try:
            return verify_package(target, public)
        except PackageError:
            _make_writable(target)
            shutil.rmtree(target)
    installed.mkdir(parents=True, exist_ok=True)
    installed.chmod(0o700)
    staging = installed / f".{target.name}.{uuid.uuid4().hex}"
    for path in _entries(package, str(package)):
        dest = staging / path.relative_to(package)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    _make_read_only(staging)
    try:
        staging.rename(target)
    except OSError:
        # Another deployment installed the same package first: keep theirs.
        _make_writable(staging)
        shutil.rmtree(staging)
    return verify_package(target, public)


def _make_read_only(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            (Path(folder) / name).chmod(0o444)
        Path(folder).chmod(0o555)


def _make_writable(root: Path) -> None:
    for folder, _, files in os.walk(root):
        Path(folder).chmod(0o755)
        for name in files:
            (Path(folder) / name).chmod(0o644)
