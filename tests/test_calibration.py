"""The calibration fit: recovers known efficiencies and fixed costs from synthetic runs."""

from __future__ import annotations

import pytest

from advisor import calibration as C
from advisor.costmodel import speed as S


def synthetic(eff: float, fixed: float, points: list[tuple[float, int]], bw: float = 20.0) -> list[C.Run]:
    runs = []
    for bytes_per_token, layers in points:
        t = bytes_per_token / (bw * 1e9 * eff) + layers * fixed
        runs.append(
            C.Run(
                fingerprint="fp",
                model="m",
                precision="bf16",
                runtime="transformers",
                kind="float",
                device_kind="cpu",
                placement="cpu",
                layers=layers,
                bytes_per_token=bytes_per_token,
                bandwidth_gbps=bw,
                measured_tok_s=1 / t,
            )
        )
    return runs


def test_fit_recovers_efficiency_and_fixed_cost():
    runs = synthetic(0.6, 0.4e-3, [(2.7e8, 30), (5.4e8, 30), (7.2e8, 32), (1.4e9, 24)])
    cal = C.fit(runs)
    assert cal.efficiency[("transformers", "float", "cpu")] == pytest.approx(0.6, rel=1e-6)
    assert cal.fixed_per_layer[("transformers", "cpu")] == pytest.approx(0.4e-3, rel=1e-6)


def test_one_run_keeps_default_fixed_cost():
    default = S.FIXED_PER_LAYER[("transformers", "cpu")]
    runs = synthetic(0.5, default, [(3e8, 30)])
    cal = C.fit(runs)
    assert cal.efficiency[("transformers", "float", "cpu")] == pytest.approx(0.5, rel=1e-6)


def test_calibration_marks_estimates_and_narrows_range():
    runs = synthetic(0.6, 0.4e-3, [(2.7e8, 30), (5.4e8, 30)])
    cal = C.fit(runs)
    eff, calibrated = cal.eff("transformers", "float", "cpu")
    assert calibrated and eff == pytest.approx(0.6)
    _, default_flag = C.Calibration().eff("transformers", "float", "cpu")
    assert not default_flag
    assert S.RANGE_CALIBRATED[1] - S.RANGE_CALIBRATED[0] < S.RANGE_UNCALIBRATED[1] - S.RANGE_UNCALIBRATED[0]


def test_store_round_trip_and_corrupt_set_aside(tmp_path):
    db = tmp_path / "cal.sqlite"
    for run in synthetic(0.6, 0.4e-3, [(3e8, 30)]):
        C.record(run, path=db)
    assert len(C.runs(path=db)) == 1
    db.write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    assert C.runs(path=db, warnings=warnings) == []
    assert warnings and "moved to" in warnings[0]
    assert list(tmp_path.glob("cal.sqlite.corrupt-*"))
