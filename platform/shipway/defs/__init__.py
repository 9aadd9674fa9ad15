"""Every Dagster object of Shipway, one module per area (as dagster-open-platform has):
resources, the shared data (`data`, `contracts`, `dbt`) and feature (`features`) assets, and
each declared model's training (`models`), deployment, rollout, monitoring and retraining,
assembled per model by the `ShipwayModel` component (`component`) and into the code location
(`code_location`).

These modules only wire: the logic they call lives in the domain packages below (`data`,
`features`, `serving`, `models`, `monitoring`, `release`, `rollout`), which know nothing of
Dagster's objects and are tested without them. May import every layer below; nothing but the
entry points (`cli`, `demo`, `ci`, `assets/definitions.py`) imports it.
"""
