"""Every `curl` recipe in the README, run as a user copies it against a live platform: those of
the feature service and fraud_model here, the help assistant's in its lifecycle test (which
serves it). A README recipe is true only while a test runs it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Platform, definitions_of
from tests.readme import recipes, run

pytestmark = pytest.mark.integration

APPLICATION = "help_assistant"


@pytest.fixture(scope="module")
def served(platform: Platform) -> Platform:
    """The platform with fraud_model serving (trained, gated and deployed if it is not yet)."""
    if not platform.stack.serving().status().get("fraud_model", {}).get("weights"):
        deployed = platform.materialize(definitions_of(), "fraud_model_lifecycle")
        assert deployed.success
    return platform


def test_the_readme_s_recipes_are_found_whole() -> None:
    found = recipes()
    assert len(found) >= 7, found
    assert recipes(APPLICATION), "the help assistant's recipes are run by its lifecycle test"
    for recipe in found:
        assert "..." not in recipe and "<" not in recipe, f"a placeholder is no recipe: {recipe}"


@pytest.mark.parametrize(
    "recipe",
    [r for r in recipes() if r not in recipes(APPLICATION)],
    ids=lambda r: r.split("localhost:", 1)[1].split()[0],
)
def test_a_readme_recipe_answers_as_it_says(served: Platform, recipe: str) -> None:
    stack = served.stack
    answer = run(recipe, stack.serving_url, stack.features_url, stack.api_key)
    assert answer.status == 200, (recipe, answer.status, answer.body[:500])
    if answer.body:  # readiness is a bare 200
        assert "error" not in json.loads(answer.body), answer.body
