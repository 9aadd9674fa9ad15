"""Features: the Feast repository as the one definition of every model's feature vector.

The feature store and its CLI, the feature vector of a feature service (names, order, defaults
for missing entities), and point-in-time training sets built from a model's declaration.
May import `shipway.data`; nothing from models, serving or monitoring.
"""
