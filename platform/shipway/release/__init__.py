"""Release gates: a challenger against the champion on the same rows, slices, operational
limits, reproducibility, tiered approval and the audit trail."""
