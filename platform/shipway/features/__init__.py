"""Features: the Feast repository as the one definition of every model's feature vector.

The feature store and its CLI, which online store holds what (`online_state`), the feature
vector of a feature service (names, order, defaults for missing entities), point-in-time
training sets built from a model's label rules, hot-path online lookups, and the feature
service over HTTP (`server`), which is handed its one-call scorer by whoever starts it.
Layer 4: may import `shipway.data` and below; nothing of serving, models or later stages.
"""
