"""Drift statistics: the training reference and PSI of a live window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipway.monitoring.drift import DriftWindow, ReferenceProfile, build_reference, psi


def _frame(seed: int, scale: float = 1.0, rows: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"amount": rng.lognormal(3, 0.7, rows) * scale, "is_online": rng.integers(0, 2, rows)}
    )


def test_psi_is_zero_for_identical_proportions_and_grows_with_shift() -> None:
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(expected, np.array([25, 25, 25, 25])) == 0.0
    mild = psi(expected, np.array([30, 25, 25, 20]))
    strong = psi(expected, np.array([70, 10, 10, 10]))
    assert 0 < mild < 0.05 < strong


def test_a_binary_feature_gets_two_bins_not_ten() -> None:
    profile = build_reference(_frame(1), ["amount", "is_online"], bins=10)
    online = profile.features[1]
    assert len(online.expected) == 2
    assert abs(sum(online.expected) - 1.0) < 1e-9
    assert len(profile.features[0].expected) == 10


def test_the_window_sees_no_drift_on_fresh_data_from_the_same_distribution() -> None:
    profile = build_reference(_frame(1), ["amount", "is_online"], bins=10)
    window = DriftWindow(profile, size=2000)
    window.add(_frame(2, rows=2000)[["amount", "is_online"]].to_numpy(dtype=float))
    assert max(window.psi_by_feature().values()) < 0.05


def test_the_window_keeps_only_the_latest_rows() -> None:
    profile = build_reference(_frame(1), ["amount", "is_online"], bins=10)
    window = DriftWindow(profile, size=1000)
    window.add(_frame(2, scale=3.0, rows=1000)[["amount", "is_online"]].to_numpy(dtype=float))
    assert window.psi_by_feature()["amount"] > 1.0
    for seed in range(3, 8):
        window.add(_frame(seed, rows=250)[["amount", "is_online"]].to_numpy(dtype=float))
    assert window.samples == 1000
    assert window.psi_by_feature()["amount"] < 0.05


def test_a_profile_round_trips_through_json() -> None:
    profile = build_reference(_frame(1), ["amount", "is_online"], bins=5)
    assert ReferenceProfile.from_json(profile.to_json()) == profile
