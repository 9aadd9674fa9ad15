"""Release gates: a challenger against the champion on the same rows (`evaluation`), judged by
every rule of its declaration (`judge`, into a `report`), slices, operational limits,
reproducibility, tiered approval, the audit trail (`audit`) and what `shipway models` does.
Layer 8: may import `shipway.monitoring` (the latest skew verdict) and every layer below it.
"""
