"""Dagster code location of this repository's ML products. It only assembles: every model
declared in `assets/<folder>/model.yaml`, on the shared raw events (contract in
`assets/contracts/`), dbt tables and Feast repository, and every LLM application declared the
same way (`problem: llm_application`), on the help centre."""

import os

from shipway.defs.code_location import code_location
from shipway.models.catalog import load_applications, load_models
from shipway.paths import ASSETS_DIR, RAW_EVENTS_CONTRACT, ShipwayHome

# Resources, dbt's profile and Feast's feature_store.yaml read their paths from these
# variables; `shipway up` and the demo set them, plain `dagster dev` gets the defaults.
for key, value in ShipwayHome.from_env().environment().items():
    os.environ.setdefault(key, value)

models = load_models(ASSETS_DIR, RAW_EVENTS_CONTRACT)
applications = load_applications(ASSETS_DIR, taken=[m.name for m in models])
defs = code_location(models, RAW_EVENTS_CONTRACT, applications)
