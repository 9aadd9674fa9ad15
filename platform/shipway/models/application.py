"""LLM applications (`problem: llm_application`): the declaration and how a version is built.

A team declares a help assistant like a model, in `assets/<folder>/model.yaml`: its prompt
templates (files beside the declaration), its corpus (a Delta table dbt builds, with an ACL
column), retrieval and generator settings, the answers it gives when it cannot answer, its
evaluation and red-team sets (Delta tables), and gates over `shipway.stats.answers` metrics.

Building a version registers the prompt in MLflow's Prompt Registry (a new prompt version only
when the text changed), snapshots the corpus at its current Delta version, and records one
MLflow run and one registered model version of the application's name, with lineage: code
commit, lock file, prompt name and version, corpus table and Delta version, retrieval and
generator settings. A build whose identity (all of those) equals the newest version's returns
that version: only a change makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipway.data.lake import read_table, table_info
from shipway.errors import PolicyError
from shipway.models.declaration import (
    LifecycleNames,
    MetricGate,
    RolloutChecks,
    RolloutPolicy,
)
from shipway.models.tracking import git_commit, lock_hash, model_version_url, run_url
from shipway.reviewed import load_reviewed_file
from shipway.serving.assistant import (
    ApplicationSettings,
    GeneratorSpec,
    write_version,
)
from shipway.serving.bundle import MAX_REPLICAS
from shipway.serving.generation import SMOLLM2
from shipway.stats.answers import METRICS, NOT_MEANS, WALL_CLOCK

log = logging.getLogger(__name__)

LLM_APPLICATION = "llm_application"
APPLICATION_ARTIFACT = "application"
IDENTITY_TAG = "shipway.application_sha256"
CORPUS_COLUMNS = ["doc_id", "title", "topic", "acl", "text"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptDeclaration(_Strict):
    """The prompt's name in MLflow's Prompt Registry and its two templates, as files beside the
    declaration. The user template places `{{documents}}` and `{{question}}`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    system: str
    user: str


class CorpusDeclaration(_Strict):
    table: str
    """A Delta table dbt builds: doc_id, title, topic, acl and text."""


class RetrievalDeclaration(_Strict):
    k: int = Field(ge=1, le=20)
    min_score: float = Field(ge=0.0)
    """A question whose best document scores under this (BM25) is out of the corpus: refused."""


class GeneratorDeclaration(_Strict):
    kind: Literal["local", "openai_compatible"] = "local"
    model: str = SMOLLM2
    base_url: str | None = None
    api_key_env: str | None = None
    max_tokens: int = Field(ge=1, le=1024)
    timeout_seconds: float = Field(gt=0.0)
    threads: int = Field(default=1, ge=1, le=8)
    price_per_1k_tokens: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _remote_needs_an_address(self) -> GeneratorDeclaration:
        if self.kind == "openai_compatible" and not (self.base_url and self.api_key_env):
            raise ValueError("an openai_compatible generator names base_url and api_key_env")
        if self.kind == "local" and self.model != SMOLLM2:
            raise ValueError(f"the local generator runs {SMOLLM2}; got {self.model!r}")
        return self

    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(self.kind, self.model, self.base_url, self.api_key_env, self.threads)


class AnswersDeclaration(_Strict):
    fallback: str = Field(min_length=1)
    """What a caller gets when generation times out or the out-guard withholds an answer."""
    refusal: str = Field(min_length=1)
    """What a caller gets for a question outside the corpus or an injection."""


class EvaluationDeclaration(_Strict):
    questions: str
    """Delta table: case_id, question, acl, expected_facts, relevant_docs, must_refuse."""
    red_team: str
    """Delta table: case_id, attack, question, acl, forbidden."""


class ApplicationServing(_Strict):
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """MLServer processes per version; each generates one answer at a time."""


# An application's answers carry no score and its labels (feedback) come late: its canary
# judges errors and latency against the champion.
APPLICATION_ROLLOUT = RolloutPolicy(
    checks=RolloutChecks(max_score_divergence=None, live_quality=False)
)


class ApplicationMonitoring(_Strict):
    """Live monitoring from the prediction log and callers' feedback
    (`shipway.monitoring.applications`)."""

    window_days: int = Field(default=7, ge=1, le=90)
    min_ratings: int = Field(default=20, ge=1)
    """A version's thumbs-up rate is judged on at least this many rated answers."""
    min_thumbs_up_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    min_questions: int = Field(default=50, ge=1)
    """Question drift is judged on at least this many questions of a version."""
    max_topic_psi: float = Field(default=0.25, gt=0.0)
    topic_p_value: float = Field(default=0.01, gt=0.0, lt=1.0)
    max_out_of_corpus_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    prediction_log_retention_days: int = Field(default=30, ge=1)


class ApplicationRelease(_Strict):
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=1000, ge=100)
    seed: int = 7


class ApplicationDeclaration(LifecycleNames, _Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    owner: str
    description: str = ""
    problem: Literal["llm_application"]
    prompt: PromptDeclaration
    corpus: CorpusDeclaration
    retrieval: RetrievalDeclaration
    generator: GeneratorDeclaration
    answers: AnswersDeclaration
    evaluation: EvaluationDeclaration
    gates: list[MetricGate] = Field(min_length=1)
    release: ApplicationRelease = ApplicationRelease()
    serving: ApplicationServing = ApplicationServing()
    rollout: RolloutPolicy = APPLICATION_ROLLOUT
    monitoring: ApplicationMonitoring = ApplicationMonitoring()

    @field_validator("rollout")
    @classmethod
    def _no_score_checks(cls, rollout: RolloutPolicy) -> RolloutPolicy:
        checks = rollout.checks
        if checks.max_score_divergence is not None or checks.live_quality:
            raise ValueError(
                "an application's answers have no score: set checks.max_score_divergence: null "
                "and checks.live_quality: false"
            )
        return rollout

    @model_validator(mode="after")
    def _prompt_has_its_own_name(self) -> ApplicationDeclaration:
        if self.prompt.name == self.name:
            raise ValueError(
                f"prompt.name: {self.prompt.name!r} is the application's own name; MLflow keeps "
                "prompts and models in one registry, so name the prompt apart (e.g. "
                f"{self.name}_prompt)"
            )
        return self

    @field_validator("gates")
    @classmethod
    def _known_metrics(cls, gates: list[MetricGate]) -> list[MetricGate]:
        for gate in gates:
            if gate.metric not in METRICS:
                raise ValueError(
                    f"metric {gate.metric!r} is not an application metric; one of {list(METRICS)}"
                )
            if gate.metric in WALL_CLOCK:
                raise ValueError(
                    f"{gate.metric} is wall-clock time, which a busy machine stretches: gate "
                    f"{gate.metric.replace('latency', 'cpu')} (CPU time per answer) instead"
                )
            if gate.versus_champion is not None and gate.metric in NOT_MEANS:
                raise ValueError(
                    f"{gate.metric} is a percentile, not a mean of per-case values: it has an "
                    "absolute limit only (no versus_champion)"
                )
        return gates


@dataclass(frozen=True)
class DeclaredApplication:
    declaration: ApplicationDeclaration
    folder: Path
    prompt_dir: Path | None = None
    """A folder with `system.txt` and `user.txt` in place of the declared files: a change tried
    before it is committed."""

    @property
    def name(self) -> str:
        return self.declaration.name

    def with_prompt_dir(self, folder: Path) -> DeclaredApplication:
        changed = DeclaredApplication(self.declaration, self.folder, folder)
        check_templates(changed)
        return changed

    def template(self, which: Literal["system", "user"]) -> str:
        if self.prompt_dir is not None:
            path = self.prompt_dir / f"{which}.txt"
        else:
            path = self.folder / getattr(self.declaration.prompt, which)
        try:
            return path.read_text()
        except FileNotFoundError:
            raise PolicyError(
                f"application {self.name}: prompt.{which}: {path} not found; write the template "
                "there or fix the path"
            ) from None


def load_application(path: Path) -> ApplicationDeclaration:
    return load_reviewed_file(path, ApplicationDeclaration, "application declaration")


def check_templates(app: DeclaredApplication) -> None:
    """Both templates exist; the user template places the documents and the question."""
    user = app.template("user")
    app.template("system")
    for name in ("documents", "question"):
        if "{{" + name + "}}" not in user:
            raise PolicyError(
                f"application {app.name}: prompt.user ({app.declaration.prompt.user}) has no "
                f"{{{{{name}}}}} placeholder; the retrieved documents and the question go there"
            )


@dataclass(frozen=True)
class ApplicationVersion:
    name: str
    version: str
    run_id: str
    run_url: str
    version_url: str
    prompt_version: int
    corpus_version: int
    created: bool


def corpus_snapshot(table: Path, version: int | None = None) -> tuple[pd.DataFrame, int]:
    """The corpus at a Delta version (the newest by default), and that version."""
    info = table_info(table, version)
    frame = read_table(table, info.version)
    missing = [c for c in CORPUS_COLUMNS if c not in frame.columns]
    if missing:
        raise PolicyError(f"corpus {table}: no column(s) {missing}; expected {CORPUS_COLUMNS}")
    return frame[CORPUS_COLUMNS].sort_values("doc_id").reset_index(drop=True), info.version


def register_prompt(tracking_uri: str, name: str, system: str, user: str) -> int:
    """The registry version holding these templates: the newest if it already does, else a new
    one."""
    client = MlflowClient(tracking_uri)
    template = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        versions = client.search_prompt_versions(name)
    except MlflowException:
        versions = []
    newest = max(versions, key=lambda v: v.version, default=None)
    if newest is not None and newest.template == template:
        return int(newest.version)
    registered = client.register_prompt(
        name, template, commit_message="registered by shipway at build"
    )
    return int(registered.version)


def settings_for(
    app: DeclaredApplication, version: str, prompt_version: int, corpus_version: int
) -> ApplicationSettings:
    d = app.declaration
    return ApplicationSettings(
        name=d.name, version=version, prompt_name=d.prompt.name, prompt_version=prompt_version,
        system_template=app.template("system"), user_template=app.template("user"),
        k=d.retrieval.k, min_score=d.retrieval.min_score, max_tokens=d.generator.max_tokens,
        timeout_seconds=d.generator.timeout_seconds, fallback_answer=d.answers.fallback,
        refusal_answer=d.answers.refusal, generator=d.generator.spec(),
        corpus_table=d.corpus.table, corpus_version=corpus_version,
        price_per_1k_tokens=d.generator.price_per_1k_tokens,
    )  # fmt: skip


def identity(settings: ApplicationSettings) -> str:
    """What makes a version: everything in its settings but its own version number."""
    data = {k: v for k, v in settings.to_json().items() if k != "version"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _newest_version(client: MlflowClient, name: str) -> tuple[str, str] | None:
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    newest = max(versions, key=lambda v: int(v.version), default=None)
    if newest is None:
        return None
    return str(newest.version), str(newest.tags.get(IDENTITY_TAG, ""))


def build_version(
    app: DeclaredApplication, corpus_table: Path, tracking_uri: str
) -> ApplicationVersion:
    """Register the prompt, snapshot the corpus, and record the version (or find it)."""
    mlflow.set_tracking_uri(tracking_uri)
    d = app.declaration
    # Before the prompt: registering one uses the active experiment, which is otherwise the one
    # $MLFLOW_EXPERIMENT_ID names (an earlier set_experiment in this process or a parent's),
    # and that id need not exist on this server.
    experiment = mlflow.set_experiment(d.name)
    corpus, corpus_version = corpus_snapshot(corpus_table)
    prompt_version = register_prompt(
        tracking_uri, d.prompt.name, app.template("system"), app.template("user")
    )
    client = MlflowClient(tracking_uri)
    draft = settings_for(app, "", prompt_version, corpus_version)
    sha = identity(draft)
    newest = _newest_version(client, d.name)
    if newest is not None and newest[1] == sha:
        version = newest[0]
        run_id = client.get_model_version(d.name, version).run_id or ""
        log.info("%s: prompt, corpus and settings unchanged: version %s", d.name, version)
        return ApplicationVersion(
            d.name, version, run_id, run_url(tracking_uri, experiment.experiment_id, run_id),
            model_version_url(tracking_uri, d.name, version), prompt_version, corpus_version,
            created=False,
        )  # fmt: skip
    version = str(int(newest[0]) + 1 if newest else 1)
    settings = settings_for(app, version, prompt_version, corpus_version)
    tags = {
        "shipway.git_commit": git_commit(),
        "shipway.lock_sha256": lock_hash(),
        "shipway.prompt": f"{d.prompt.name}/{prompt_version}",
        "shipway.corpus": f"{d.corpus.table}@{corpus_version}",
        "shipway.generator": f"{d.generator.kind}:{d.generator.model}",
        IDENTITY_TAG: sha,
    }
    with mlflow.start_run(tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                "problem": LLM_APPLICATION,
                "prompt_name": d.prompt.name,
                "prompt_version": prompt_version,
                "corpus_table": d.corpus.table,
                "corpus_version": corpus_version,
                "corpus_documents": len(corpus),
                "retrieval_k": d.retrieval.k,
                "retrieval_min_score": d.retrieval.min_score,
                "generator": f"{d.generator.kind}:{d.generator.model}",
                "max_tokens": d.generator.max_tokens,
                "timeout_seconds": d.generator.timeout_seconds,
            }
        )
        folder = write_version(Path(tmp) / APPLICATION_ARTIFACT, settings, corpus)
        mlflow.log_artifacts(str(folder), artifact_path=APPLICATION_ARTIFACT)
        client.link_prompt_version_to_run(
            run.info.run_id, client.get_prompt_version(d.prompt.name, prompt_version)
        )
    try:
        client.create_registered_model(d.name, description=d.description)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        d.name, f"{run.info.artifact_uri}/{APPLICATION_ARTIFACT}", run.info.run_id, tags=tags
    )
    if str(mv.version) != version:
        # Two builds at once: the loser's folder names a number the winner took. Nothing is
        # kept that says otherwise than the registry.
        client.delete_model_version(d.name, str(mv.version))
        raise PolicyError(
            f"{d.name}: another build registered version {version} meanwhile; run the build again"
        )
    log.info("registered %s version %s from run %s", d.name, version, run.info.run_id)
    return ApplicationVersion(
        d.name, version, run.info.run_id,
        run_url(tracking_uri, experiment.experiment_id, run.info.run_id),
        model_version_url(tracking_uri, d.name, version), prompt_version, corpus_version,
        created=True,
    )  # fmt: skip


def download_version(tracking_uri: str, name: str, version: str, dest: Path) -> Path:
    """A registered version's folder (settings and corpus), for evaluation or serving."""
    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version(name, version).run_id
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=APPLICATION_ARTIFACT,
            dst_path=str(dest),
            tracking_uri=tracking_uri,
        )
    )
