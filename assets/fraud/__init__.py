"""The card-fraud model: its asset graph, checks, sensor, jobs and policy."""

from pathlib import Path

from shipway.policy import ModelPolicy, load_policy

POLICY_PATH = Path(__file__).with_name("policy.yaml")


def policy() -> ModelPolicy:
    return load_policy(POLICY_PATH)
