"""The calibration fit: recovers known efficiencies, fixed and context costs from synthetic runs."""

from __future__ import annotations

import pytest

from advisor import calibration as C
from advisor.costmodel import speed as S


def synthetic(
    eff: float,
    fixed: float,
    points: list[tuple[str, float, int, float]],
    *,
    context: float = 0.0,
    precision: str = "bf16",
    kind: str = "float",
    bw: float = 20.0,
) -> list[C.Run]:
    """Runs of (model, bytes per token, layers, cached K/V elements) timed by the model itself."""
    runs = []
    for model, bytes_per_token, layers, kv in points:
        t = bytes_per_token / (bw * 1e9 * eff) + layers * fixed + kv * context
        runs.append(
            C.Run(
                fingerprint="fp",
                model=model,
                precision=precision,
                runtime="transformers",
                kind=kind,
                device_kind="cpu",
                placement="cpu",
                layers=layers,
                bytes_per_token=bytes_per_token,
                bandwidth_gbps=bw,
                measured_tok_s=1 / t,
                measured={"kv_elements": kv},
            )
        )
    return runs


def test_two_models_recover_efficiency_and_fixed_cost():
    runs = synthetic(0.6, 0.4e-3, [("a", 2.7e8, 30, 0), ("a", 2.7e8, 30, 0), ("b", 7.2e8, 32, 0), ("c", 1.4e9, 24, 0)])
    cal = C.fit(runs)
    assert cal.efficiency[("transformers", "bf16", "cpu")] == pytest.approx(0.6, rel=1e-6)
    assert cal.fixed_per_layer[("transformers", "cpu")] == pytest.approx(0.4e-3, rel=1e-6)


def test_depths_give_the_context_cost():
    pts = [("a", 2.7e8 + 2 * kv, 30, kv) for kv in (0.7e6, 5.9e6, 11.8e6)]
    cal = C.fit(synthetic(0.6, S.FIXED_PER_LAYER[("transformers", "cpu")], pts, context=1.4e-9))
    assert cal.context_cost[("transformers", "bf16", "cpu")] == pytest.approx(1.4e-9, rel=0.05)
    # One model alone: the fixed cost stays the default and the efficiency absorbs the rest.
    assert ("transformers", "cpu") not in cal.fixed_per_layer
    assert cal.efficiency[("transformers", "bf16", "cpu")] == pytest.approx(0.6, rel=0.05)


def test_kind_fallback_for_unmeasured_precision():
    cal = C.fit(
        synthetic(0.3, S.FIXED_PER_LAYER[("transformers", "cpu")], [("a", 1.2e8, 30, 0)], precision="int4", kind="bnb4")
    )
    eff, calibrated = cal.eff("transformers", "bnb4", "cpu", "int4-dq")
    assert calibrated and eff == pytest.approx(0.3, rel=1e-6)
    _, default_flag = C.Calibration().eff("transformers", "bnb4", "cpu", "int4-dq")
    assert not default_flag
    assert S.RANGE_CALIBRATED[1] - S.RANGE_CALIBRATED[0] < S.RANGE_UNCALIBRATED[1] - S.RANGE_UNCALIBRATED[0]


def test_store_round_trip_and_corrupt_set_aside(tmp_path):
    db = tmp_path / "cal.sqlite"
    for run in synthetic(0.6, 0.4e-3, [("a", 3e8, 30, 0)]):
        C.record(run, path=db)
    assert len(C.runs(path=db)) == 1
    db.write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    assert C.runs(path=db, warnings=warnings) == []
    assert warnings and "moved to" in warnings[0]
    assert list(tmp_path.glob("cal.sqlite.corrupt-*"))


def test_a_newer_session_replaces_an_older_one_of_the_same_configuration():
    import dataclasses

    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    old = synthetic(0.3, fixed, [("a", 2.7e8, 30, 0)] * 3)  # a session on a busy machine
    new = synthetic(0.6, fixed, [("a", 2.7e8, 30, 0)] * 2)
    other = synthetic(0.5, fixed, [("b", 7.2e8, 32, 0)], precision="fp32")
    stamped = [dataclasses.replace(r, created_at="2026-11-28T10:00:00+00:00") for r in old + other] + [
        dataclasses.replace(r, created_at=f"2026-11-28T12:00:0{i}+00:00") for i, r in enumerate(new)
    ]
    kept = C.latest_sessions(stamped)
    assert len(kept) == 3 and {r.model for r in kept} == {"a", "b"}  # b's only session stays
    assert all(r.created_at.startswith("2026-11-28T12") for r in kept if r.model == "a")
    cal = C.fit(stamped)
    assert cal.efficiency[("transformers", "bf16", "cpu")] == pytest.approx(0.6, rel=1e-6)
    # Runs of one session (within the hour) are pooled; runs with no time are kept.
    same = [dataclasses.replace(r, created_at="2026-11-28T12:30:00+00:00") for r in old] + stamped
    assert len(C.latest_sessions(same)) == 6
    assert len(C.latest_sessions([dataclasses.replace(r, created_at=None) for r in old])) == 3


def test_fp32_does_not_borrow_the_16_bit_efficiency():
    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    cal = C.fit(synthetic(1.5, fixed, [("a", 2.7e8, 30, 0)] * 2, precision="bf16"))
    assert cal.eff("transformers", "float", "cpu", "fp16") == (pytest.approx(1.5, rel=1e-6), True)
    eff, calibrated = cal.eff("transformers", "float", "cpu", "fp32")
    assert not calibrated and eff == S.EFFICIENCY[("transformers", "float", "cpu")]
    cal = C.fit(synthetic(0.9, fixed, [("a", 5.4e8, 30, 0)] * 2, precision="fp32"))
    assert cal.eff("transformers", "float", "cpu", "fp32") == (pytest.approx(0.9, rel=1e-6), True)
    assert not cal.eff("transformers", "float", "cpu", "bf16")[1]


def test_one_models_runs_make_its_estimates_calibrated():
    from advisor.sources import catalog
    from advisor.spec import Device, Hardware

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    cpu = Device(kind="cpu", name="cpu", memory_bytes=int(24e9), bandwidth_gbps=20.0, bandwidth_source="measured")
    hw = Hardware(devices=(cpu,), source="probe")
    place = S.plan(spec, "bf16", hw, context=1024)
    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    cal = C.fit(synthetic(0.8, fixed, [(spec.id, 2.7e8, 30, 0)] * 2))
    assert ("transformers", "cpu") not in cal.fixed_per_layer  # one shape: the fixed cost stays the default
    _, basis = S.decode_seconds(spec, "bf16", hw, place, depth=64, calibration=cal)
    assert basis["calibrated"] is True
    _, basis = S.decode_seconds(spec, "fp32", hw, place, depth=64, calibration=cal)
    assert basis["calibrated"] is False  # fp32 was not measured and does not borrow bf16's efficiency


def test_chat_answers_do_not_replace_a_bench_session():
    import dataclasses

    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    bench = [
        dataclasses.replace(r, created_at="2026-11-28T10:00:00+00:00")
        for r in synthetic(0.6, fixed, [("a", 2.7e8, 30, 0)] * 3)
    ]
    chat = [
        dataclasses.replace(r, created_at="2026-11-29T10:00:00+00:00", measured={"source": "chat", "kv_elements": 0})
        for r in synthetic(0.5, fixed, [("a", 2.7e8, 30, 0)])
    ]
    assert len(C.latest_sessions(bench + chat)) == 4


def test_runs_of_a_precision_this_version_does_not_know_still_fit():
    import dataclasses

    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    runs = [dataclasses.replace(r, precision="fp6") for r in synthetic(0.4, fixed, [("a", 2.7e8, 30, 0)] * 2)]
    cal = C.fit(runs)
    assert cal.efficiency[("transformers", "fp6", "cpu")] == pytest.approx(0.4, rel=1e-6)
