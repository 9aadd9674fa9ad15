"""The card-fraud model: its asset graph, checks, sensor, jobs, policy and data contracts."""

from pathlib import Path

from shipway.data.contracts import Contract, load_contract
from shipway.models.declaration import ModelPolicy, load_policy

POLICY_PATH = Path(__file__).with_name("policy.yaml")
CONTRACTS_DIR = Path(__file__).with_name("contracts")


def policy() -> ModelPolicy:
    return load_policy(POLICY_PATH)


def contract(dataset: str) -> Contract:
    return load_contract(CONTRACTS_DIR / f"{dataset}.yaml")
