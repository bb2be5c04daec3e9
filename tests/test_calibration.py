"""The calibration fit: the ratio of measured to estimated time per step, per configuration, and what it scales."""

from __future__ import annotations

import dataclasses

import pytest

from advisor import calibration as C
from advisor.costmodel import speed as S
from advisor.costmodel.speed import COST_MODEL_VERSION


def runs(ratio: float, points: list[tuple[str, float]], *, precision: str = "bf16", kind: str = "float",
         runtime: str = "transformers", stamp: str | None = None) -> list[C.Run]:  # fmt: skip
    """Runs of (model, estimated seconds per step before calibration) that measured `ratio` times the estimate."""
    out = []
    for model, estimate_s in points:
        run = C.Run(
            fingerprint="fp", model=model, precision=precision, runtime=runtime, kind=kind, device_kind="cpu",
            placement="cpu", layers=30, bytes_per_token=2.7e8, bandwidth_gbps=20.0,
            measured_tok_s=1 / (estimate_s * ratio), estimated_tok_s=1 / estimate_s,
            measured={"kv_elements": 0}, created_at=stamp,
            estimated={"basis": {"uncalibrated_s": estimate_s, "cost_model": COST_MODEL_VERSION}},
        )  # fmt: skip
        out.append(run)
    return out


def test_the_ratio_of_measured_to_estimated_time_is_fitted_per_precision():
    cal = C.fit(runs(1.3, [("a", 0.02), ("a", 0.03), ("b", 0.05)]) + runs(0.8, [("a", 0.01)], precision="fp32"))
    assert cal.step_scale("transformers", "bf16", "float", "cpu") == (pytest.approx(1.3), True)
    assert cal.step_scale("transformers", "fp32", "float", "cpu") == (pytest.approx(0.8), True)


def test_an_unmeasured_precision_borrows_its_groups_ratio_but_fp32_does_not_borrow_16_bit():
    cal = C.fit(runs(0.5, [("a", 0.02)] * 2, precision="int4", kind="bnb4"))
    assert cal.step_scale("transformers", "int4-dq", "bnb4", "cpu") == (pytest.approx(0.5), True)
    cal = C.fit(runs(1.4, [("a", 0.02)] * 2, precision="bf16"))
    assert cal.step_scale("transformers", "fp16", "float", "cpu") == (pytest.approx(1.4), True)
    assert cal.step_scale("transformers", "fp32", "float", "cpu") == (1.0, False)
    cal = C.fit(runs(0.7, [("a", 0.01)] * 2, precision="q4_0", kind="gguf", runtime="llama.cpp"))
    assert cal.step_scale("llama.cpp", "q8_0", "gguf", "cpu") == (pytest.approx(0.7), True)
    assert cal.step_scale("transformers", "q8_0", "gguf", "cpu") == (1.0, False)  # another runtime


def test_runs_without_an_uncalibrated_estimate_are_not_fitted_and_outliers_are_bounded():
    old = [dataclasses.replace(r, estimated={}) for r in runs(3.0, [("a", 0.02)])]  # stored by an older advisor
    assert C.fit(old).scale == {}
    _lo, hi = C.SCALE_BOUNDS
    assert C.fit(runs(40.0, [("a", 0.02)])).scale[("transformers", "bf16", "cpu")] == hi


def test_a_newer_session_replaces_an_older_one_of_the_same_configuration():
    old = runs(2.0, [("a", 0.02)] * 3, stamp="2026-11-28T10:00:00+00:00")  # a session on a busy machine
    new = [dataclasses.replace(r, created_at=f"2026-11-28T12:00:0{i}+00:00")
           for i, r in enumerate(runs(1.1, [("a", 0.02)] * 2))]  # fmt: skip
    other = runs(0.9, [("b", 0.05)], precision="fp32", stamp="2026-11-28T10:00:00+00:00")
    stamped = old + other + new
    kept = C.latest_sessions(stamped)
    assert len(kept) == 3 and {r.model for r in kept} == {"a", "b"}  # b's only session stays
    assert all(r.created_at.startswith("2026-11-28T12") for r in kept if r.model == "a")
    assert C.fit(stamped).step_scale("transformers", "bf16", "float", "cpu")[0] == pytest.approx(1.1)
    # Runs of one session (within the hour) are pooled; runs with no time are kept.
    same = [dataclasses.replace(r, created_at="2026-11-28T12:30:00+00:00") for r in old] + stamped
    assert len(C.latest_sessions(same)) == 6
    assert len(C.latest_sessions([dataclasses.replace(r, created_at=None) for r in old])) == 3


def test_chat_answers_do_not_replace_a_bench_session():
    bench = runs(1.0, [("a", 0.02)] * 3, stamp="2026-11-28T10:00:00+00:00")
    chat = [dataclasses.replace(r, measured={"source": "chat", "kv_elements": 0})
            for r in runs(2.0, [("a", 0.02)], stamp="2026-11-29T10:00:00+00:00")]  # fmt: skip
    assert len(C.latest_sessions(bench + chat)) == 4


def test_the_scale_multiplies_the_estimate_and_marks_it_calibrated():
    from advisor.sources import catalog
    from advisor.spec import Device, Hardware

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    cpu = Device(kind="cpu", name="cpu", memory_bytes=int(24e9), bandwidth_gbps=20.0, bandwidth_source="measured")
    hw = Hardware(devices=(cpu,), source="probe")
    place = S.plan(spec, "bf16", hw, context=1024)
    plain, basis = S.decode_seconds(spec, "bf16", hw, place, depth=64)
    assert basis["calibrated"] is False and basis["uncalibrated_s"] == pytest.approx(plain)
    cal = C.fit(runs(1.25, [(spec.id, plain)] * 2))
    scaled, basis = S.decode_seconds(spec, "bf16", hw, place, depth=64, calibration=cal)
    assert scaled == pytest.approx(1.25 * plain) and basis["calibrated"] is True
    assert basis["uncalibrated_s"] == pytest.approx(plain)  # what the next fit divides by
    _, basis = S.decode_seconds(spec, "fp32", hw, place, depth=64, calibration=cal)
    assert basis["calibrated"] is False


def test_runs_of_a_precision_this_version_does_not_know_still_fit():
    cal = C.fit([dataclasses.replace(r, precision="fp6") for r in runs(0.4, [("a", 0.02)] * 2)])
    assert cal.scale[("transformers", "fp6", "cpu")] == pytest.approx(0.4)


def test_runs_priced_by_another_version_of_the_speed_model_are_set_aside():
    stale = [dataclasses.replace(r, estimated={"basis": {"uncalibrated_s": 0.02, "cost_model": COST_MODEL_VERSION - 1}})
             for r in runs(2.0, [("a", 0.02)])]  # fmt: skip
    assert C.fit(stale).scale == {}
    assert C.fit(stale + runs(1.2, [("a", 0.02)])).step_scale("transformers", "bf16", "float", "cpu")[0] == (
        pytest.approx(1.2)
    )


def test_store_round_trip_and_corrupt_set_aside(tmp_path):
    db = tmp_path / "cal.sqlite"
    for run in runs(1.0, [("a", 0.02)]):
        C.record(run, path=db)
    stored = C.runs(path=db)
    assert len(stored) == 1 and stored[0].estimated["basis"]["uncalibrated_s"] == 0.02
    db.write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    assert C.runs(path=db, warnings=warnings) == []
    assert warnings and "moved to" in warnings[0]
    assert list(tmp_path.glob("cal.sqlite.corrupt-*"))
