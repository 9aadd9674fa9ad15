"""Names one concept has everywhere: in tables, requests, metrics, files and code."""

SCORE = "score"
"""A model's prediction: the Open Inference Protocol output, the prediction log's column, the
drift reference's entry for prediction drift, the `feature` label of prediction drift rules."""

EVENT_TIMESTAMP = "event_timestamp"
"""When a row happened: raw events, feature tables, label tables and training sets."""
