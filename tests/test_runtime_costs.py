"""The probe's step costs: the fit from three small models, and the speed model that uses them."""

from __future__ import annotations

import pytest

from advisor import runtime_costs as R
from advisor.costmodel import speed as S
from advisor.spec import Device, Hardware, StepCosts

TRUE = StepCosts(per_token_s=4e-4, per_layer_s=2e-4, elements_per_s=6e9, context_s_per_element=1.5e-9,
                 prefill_pass_s=1e-2, prefill_elements_per_s=1e11, context_s_per_token=3e-6)  # fmt: skip


def timings(costs: StepCosts) -> dict[str, dict[str, float]]:
    """What the probe would time for each shape if the machine behaved exactly as `costs` says."""
    out = {}
    for name, (layers, hidden, inter) in R.SHAPES.items():
        elements = R.matmul_elements(layers, hidden, inter)
        step = costs.per_token_s + layers * costs.per_layer_s + elements / costs.elements_per_s
        long = step + costs.context_s_per_element * (R.kv_elements(layers, hidden, R.DEPTH_LONG)
                                                     - R.kv_elements(layers, hidden, R.DEPTH_SHORT))  # fmt: skip
        long += costs.context_s_per_token * (R.DEPTH_LONG - R.DEPTH_SHORT)
        prefill = {n: costs.prefill_pass_s + n * elements / costs.prefill_elements_per_s
                   for n in (R.PREFILL_SHORT, R.PREFILL_LONG)}  # fmt: skip
        out[name] = {"decode_s": step, "decode_long_s": long, "prefill_short_s": prefill[R.PREFILL_SHORT],
                     "prefill_long_s": prefill[R.PREFILL_LONG]}  # fmt: skip
    return out


def test_the_fit_recovers_the_costs_of_a_machine():
    fitted = R.fit(timings(TRUE))
    # The tiny models' weights count as nothing: the per-layer and per-token constants absorb them (under 1%).
    assert fitted.per_layer_s == pytest.approx(TRUE.per_layer_s, rel=0.05)
    assert fitted.per_token_s == pytest.approx(TRUE.per_token_s, rel=0.05)
    assert fitted.elements_per_s == pytest.approx(TRUE.elements_per_s, rel=0.02)
    assert fitted.context_s_per_element == pytest.approx(TRUE.context_s_per_element, rel=1e-6)
    assert fitted.context_s_per_token == pytest.approx(TRUE.context_s_per_token, rel=1e-6)
    assert fitted.prefill_pass_s == pytest.approx(TRUE.prefill_pass_s, rel=1e-6)
    assert fitted.prefill_elements_per_s == pytest.approx(TRUE.prefill_elements_per_s, rel=1e-6)
    assert R.plausible(fitted)


def test_a_disturbed_measurement_is_not_kept():
    broken = R.fit({**timings(TRUE), "wide8": {**timings(TRUE)["wide8"], "decode_s": 1e-6}})
    assert not R.plausible(broken) or broken.elements_per_s < 1e14


def test_decode_uses_the_measured_costs_where_the_probe_took_them():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    details = {"runtime_costs": {"transformers": {"bf16": TRUE.to_json()}}, "llc_bytes": 10**12}
    cpu = Device("cpu", "cpu", 24 * 2**30, 20.0, "measured", details=details)
    hw = Hardware(devices=(cpu,), source="probe")
    place = S.plan(spec, "bf16", hw, context=1024)
    layers_elements, head = S.matmul_elements(spec)
    kv = spec.kv.full_elements * 64
    expected = TRUE.per_token_s + spec.num_layers * TRUE.per_layer_s + (layers_elements + head) / TRUE.elements_per_s
    expected += kv * TRUE.context_s_per_element + 64 * TRUE.context_s_per_token
    seconds, basis = S.decode_seconds(spec, "bf16", hw, place, depth=64)
    assert seconds == pytest.approx(expected, rel=1e-6) and basis["devices"]["cpu"]["measured_costs"]
    # fp32 was not timed: the tables' defaults price it.
    _, basis = S.decode_seconds(spec, "fp32", hw, place, depth=64)
    assert "measured_costs" not in basis["devices"]["cpu"] and "efficiency" in basis["devices"]["cpu"]


def test_weights_larger_than_the_cache_are_never_read_faster_than_the_bandwidth():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("meta-llama/Meta-Llama-3-8B-Instruct")
    fast = StepCosts(0.0, 0.0, 1e13, 0.0, 0.0, 1e13)  # kernels far faster than memory
    details = {"runtime_costs": {"transformers": {"bf16": fast.to_json()}}, "llc_bytes": 32 * 2**20}
    cpu = Device("cpu", "cpu", 64 * 2**30, 20.0, "measured", details=details)
    hw = Hardware(devices=(cpu,), source="probe")
    place = S.plan(spec, "bf16", hw, context=1024)
    seconds, basis = S.decode_seconds(spec, "bf16", hw, place, depth=0)
    assert seconds == pytest.approx(basis["devices"]["cpu"]["bytes"] / 20e9, rel=1e-6)


def test_llama_cpp_types_without_a_timing_borrow_their_kernels():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    q6 = StepCosts(5e-5, 2e-5, 2e10, 0.0, 1e-3, 6e10)
    cpu = Device("cpu", "cpu", 24 * 2**30, 20.0, "measured",
                 details={"runtime_costs": {"llama.cpp": {"Q6_K": q6.to_json()}}, "llc_bytes": 10**12})  # fmt: skip
    hw = Hardware(devices=(cpu,), source="probe")
    place = S.plan(spec, "q6_k", hw, context=1024)
    # SmolLM2's 576-wide rows are no multiple of Q6_K's 256-weight block: llama.cpp writes them Q8_0, which
    # was not timed here, so the tables price them.
    _, basis = S.decode_seconds(spec, "q6_k", hw, place, depth=0)
    assert "measured_costs" not in basis["devices"]["cpu"]
    table = {"Q6_K": q6.to_json(), "Q8_0": q6.to_json()}
    cpu = Device("cpu", "cpu", 24 * 2**30, 20.0, "measured",
                 details={"runtime_costs": {"llama.cpp": table}, "llc_bytes": 10**12})  # fmt: skip
    hw = Hardware(devices=(cpu,), source="probe")
    _, basis = S.decode_seconds(spec, "q6_k", hw, place, depth=0)
    assert basis["devices"]["cpu"]["measured_costs"]


def test_a_probe_gguf_runs_in_llama_cpp(tmp_path):
    from advisor.engines import Artifact, LoadOptions, llamacpp, open_engine

    if not llamacpp.usable():
        pytest.skip(llamacpp.unavailable_reason())
    path = R.write_probe_gguf(tmp_path / "p.gguf", *R.SHAPES["tiny2"], "Q8_0")
    engine = open_engine(Artifact("probe", path, "llama.cpp", "probe"), LoadOptions("gguf-file", context=256))
    try:
        gen = engine.generate([5] * 8, max_new_tokens=6, exact_length=True)
        assert gen.new_tokens == 6 and gen.decode_tok_s > 0
    finally:
        engine.close()


def test_the_speed_model_knows_the_probe_models_size():
    assert R.matmul_elements(*R.SHAPES["wide8"]) == S.PROBE_MATMUL_ELEMENTS


def test_old_profiles_without_the_per_token_depth_cost_still_read():
    data = {k: v for k, v in TRUE.to_json().items() if k != "context_s_per_token"}
    assert StepCosts.from_json(data).context_s_per_token == 0.0
    with pytest.raises(TypeError):
        StepCosts.from_json({k: v for k, v in data.items() if k != "per_token_s"})
