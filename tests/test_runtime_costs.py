"""The probe's step costs: the fit from three small models, and the speed model that uses them."""

from __future__ import annotations

import dataclasses

import pytest

from advisor import runtime_costs as R
from advisor.costmodel import speed as S
from advisor.spec import Device, Hardware, StepCosts

TRUE = StepCosts(per_token_s=4e-4, per_layer_s=2e-4, elements_per_s=6e9, context_s_per_element=1.5e-9,
                 prefill_pass_s=1e-2, prefill_elements_per_s=1e11, context_s_per_token=3e-6)  # fmt: skip


def timings(costs: StepCosts) -> dict[str, dict[str, float]]:
    """What the probe would time for each shape if the machine behaved exactly as `costs` says (with the wide2k
    shape too when `costs` splits a matrix's time into elements and rows)."""
    out = {}
    shapes = {**R.SHAPES, "wide2k": R.WIDE2K} if costs.per_row_s else R.SHAPES
    for name, (layers, hidden, inter) in shapes.items():
        elements = R.matmul_elements(layers, hidden, inter)
        if costs.per_row_s:
            weights = elements / costs.stream_elements_per_s + R.matmul_rows(layers, hidden, inter) * costs.per_row_s
        else:
            weights = elements / costs.elements_per_s
        step = costs.per_token_s + layers * costs.per_layer_s + weights
        long = step + costs.context_s_per_element * (R.kv_elements(layers, hidden, R.DEPTH_LONG)
                                                     - R.kv_elements(layers, hidden, R.DEPTH_SHORT))  # fmt: skip
        long += costs.context_s_per_token * (R.DEPTH_LONG - R.DEPTH_SHORT)
        prefill = {n: costs.prefill_pass_s + n * elements / costs.prefill_elements_per_s
                   + costs.prefill_attention_s * layers * hidden * n * n
                   for n in (R.PREFILL_SHORT, R.PREFILL_LONG, R.PREFILL_LONGEST)}  # fmt: skip
        out[name] = {"decode_s": step, "decode_long_s": long, "prefill_short_s": prefill[R.PREFILL_SHORT],
                     "prefill_long_s": prefill[R.PREFILL_LONG]}  # fmt: skip
        if costs.prefill_attention_s:
            out[name]["prefill_longest_s"] = prefill[R.PREFILL_LONGEST]
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


def _smollm_on_measured_cpu(llc: int):
    """SmolLM2-135M's spec and a CPU whose probe timed transformers bf16 as TRUE, with an LLC of `llc` bytes."""
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    details = {"runtime_costs": {"transformers": {"bf16": TRUE.to_json()}}, "llc_bytes": llc}
    cpu = Device("cpu", "cpu", 24 * 2**30, 20.0, "measured", details=details)
    return spec, Hardware(devices=(cpu,), source="probe")


def test_decode_uses_the_measured_costs_where_the_probe_took_them():
    spec, hw = _smollm_on_measured_cpu(10**12)
    place = S.plan(spec, "bf16", hw, context=1024)
    layers_elements, head = S.matmul_elements(spec)
    kv = spec.kv.full_elements * 64 * spec.num_attention_heads / spec.num_kv_heads  # read once per query head
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


ROWS = dataclasses.replace(TRUE, per_row_s=6e-8, stream_elements_per_s=1.7e10)


def test_the_fit_separates_a_cost_per_output_row_from_the_cost_per_element():
    fitted = R.fit(timings(ROWS))
    assert fitted.per_row_s == pytest.approx(ROWS.per_row_s, rel=0.01)
    assert fitted.stream_elements_per_s == pytest.approx(ROWS.stream_elements_per_s, rel=0.01)
    # the tiny models' own rows and elements come out of the constants
    assert fitted.per_layer_s == pytest.approx(ROWS.per_layer_s, rel=0.01)
    assert fitted.per_token_s == pytest.approx(ROWS.per_token_s, rel=0.01)
    # the one rate of the wide8 probe is what it always was: elements over the weights' time
    layers, hidden, inter = R.SHAPES["wide8"]
    e, rows = R.matmul_elements(layers, hidden, inter), R.matmul_rows(layers, hidden, inter)
    assert fitted.elements_per_s == pytest.approx(e / (e / ROWS.stream_elements_per_s + rows * ROWS.per_row_s), 0.01)
    assert R.plausible(fitted)


def test_a_disturbed_wide_timing_leaves_the_weights_unseparated():
    samples = timings(ROWS)
    samples["wide2k"] = {"decode_s": samples["wide8"]["decode_s"] * 0.5}  # more weights, less time: no machine
    fitted = R.fit(samples)
    assert fitted.per_row_s == 0.0 and fitted.stream_elements_per_s == 0.0
    assert R.plausible(fitted)


def _cpu(table: dict[str, StepCosts]) -> Hardware:
    details = {"runtime_costs": {"transformers": {k: v.to_json() for k, v in table.items()}}, "llc_bytes": 10**12}
    return Hardware(devices=(Device("cpu", "cpu", 64 * 2**30, 20.0, "measured", details=details),), source="probe")


def test_decode_pays_each_output_row_so_wide_models_run_more_elements_a_second():
    from advisor.sources import catalog

    hw = _cpu({"bf16": ROWS})
    rates = {}
    for model in ("HuggingFaceTB/SmolLM2-135M-Instruct", "meta-llama/Llama-3.2-1B-Instruct"):
        spec = catalog.spec_from_catalog(model)
        place = S.plan(spec, "bf16", hw, context=1024)
        _, basis = S.decode_seconds(spec, "bf16", hw, place, depth=0)
        layer_elements, head = S.matmul_elements(spec)
        rows = spec.params.linear_rows + spec.vocab_size
        expected = (layer_elements + head) / ROWS.stream_elements_per_s + rows * ROWS.per_row_s
        assert basis["devices"]["cpu"]["compute_s"] == pytest.approx(expected, rel=1e-6)
        rates[model] = (layer_elements + head) / expected
    # SmolLM2's rows are 576 wide, Llama-3.2-1B's 2048: the narrow one pays more rows per element
    assert rates["meta-llama/Llama-3.2-1B-Instruct"] > 1.3 * rates["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_a_spec_without_row_counts_uses_the_probes_one_rate():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, linear_rows=0))
    hw = _cpu({"bf16": ROWS})
    _, basis = S.decode_seconds(spec, "bf16", hw, S.plan(spec, "bf16", hw, context=1024), depth=0)
    layer_elements, head = S.matmul_elements(spec)
    assert basis["devices"]["cpu"]["compute_s"] == pytest.approx((layer_elements + head) / ROWS.elements_per_s, 1e-6)


BNB8 = StepCosts(per_token_s=4e-4, per_layer_s=5e-4, elements_per_s=3e9, context_s_per_element=1.5e-9,
                 prefill_pass_s=1e-2, prefill_elements_per_s=2e11)  # fmt: skip


def test_bitsandbytes_timed_by_the_probe_is_priced_by_its_own_costs():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    layer_elements, head = S.matmul_elements(spec)
    hw = _cpu({"bf16": TRUE, "bnb8": BNB8})
    place = S.plan(spec, "int8", hw, context=1024)
    _, basis = S.decode_seconds(spec, "int8", hw, place, depth=0)
    # the layers at LLM.int8's own rate, the output projection (left in bf16 by transformers) at bf16's
    expected = layer_elements / BNB8.elements_per_s + head / TRUE.elements_per_s
    assert basis["devices"]["cpu"]["compute_s"] == pytest.approx(expected, rel=1e-6)
    assert basis["devices"]["cpu"]["layers_s"] == pytest.approx(spec.num_layers * BNB8.per_layer_s)
    # a profile from before bitsandbytes was timed: bf16's costs and the kind's factor
    hw_old = _cpu({"bf16": TRUE})
    _, basis = S.decode_seconds(spec, "int8", hw_old, place, depth=0)
    factor = S.BNB_CPU_ELEMENT_FACTOR["bnb8"]
    assert basis["devices"]["cpu"]["compute_s"] == pytest.approx(
        (layer_elements + head) / (TRUE.elements_per_s * factor)
    )


def test_nf4_prompt_passes_pay_one_dequantization_of_the_models_own_weights():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    per_element = 2e-10  # what one dequantization costs per weight element
    bnb4 = dataclasses.replace(TRUE, prefill_pass_s=TRUE.prefill_pass_s + per_element * S.PROBE_MATMUL_ELEMENTS)
    hw = _cpu({"bf16": TRUE, "bnb4": bnb4})
    place = S.plan(spec, "int4", hw, context=1024)
    _, basis = S.prefill_seconds(spec, "int4", hw, place, prompt_tokens=128)
    layer_elements, _head = S.matmul_elements(spec, tokens=128)
    expected = TRUE.prefill_pass_s + per_element * layer_elements  # SmolLM2 has ~4x the probe's weights
    assert basis["devices"]["cpu"]["pass_s"] == pytest.approx(expected, rel=1e-6)
    assert basis["devices"]["cpu"]["pass_s"] > 3 * (bnb4.prefill_pass_s - TRUE.prefill_pass_s)


def test_the_fit_prices_a_prompts_attention_apart_from_its_weights():
    machine = dataclasses.replace(TRUE, prefill_attention_s=3e-12)
    fitted = R.fit(timings(machine))
    assert fitted.prefill_attention_s == pytest.approx(machine.prefill_attention_s, rel=1e-6)
    assert fitted.prefill_pass_s == pytest.approx(machine.prefill_pass_s, rel=1e-6)
    assert fitted.prefill_elements_per_s == pytest.approx(machine.prefill_elements_per_s, rel=1e-6)
    # without the 512-token prompt the square term would have been read as a slower GEMM
    two_point = R.fit({**timings(machine), "wide8": {k: v for k, v in timings(machine)["wide8"].items()
                                                     if k != "prefill_longest_s"}})  # fmt: skip
    assert two_point.prefill_attention_s == 0 and two_point.prefill_elements_per_s < machine.prefill_elements_per_s


def test_a_prompt_is_priced_with_the_measured_attention_cost():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    machine = dataclasses.replace(TRUE, prefill_attention_s=3e-12)
    hw = _cpu({"bf16": TRUE})
    hw_attn = _cpu({"bf16": machine})
    place = S.plan(spec, "bf16", hw, context=1024)
    base = S.prefill_seconds(spec, "bf16", hw, place, prompt_tokens=512)[1]["devices"]["cpu"]["compute_s"]
    with_attn = S.prefill_seconds(spec, "bf16", hw_attn, place, prompt_tokens=512)[1]["devices"]["cpu"]["compute_s"]
    units = spec.num_layers * spec.num_attention_heads * spec.head_dim * 512 * 512
    before = units / TRUE.prefill_elements_per_s
    assert with_attn - base == pytest.approx(units * machine.prefill_attention_s - before, rel=1e-6)


def _llama_cpu(table: dict[str, StepCosts], stream: float | None, llc: int = 32 * 2**20) -> Hardware:
    costs = {"llama.cpp": {k: v.to_json() for k, v in table.items()}}
    if stream is not None:
        costs["llama.cpp stream"] = {"s_per_byte": stream, "cache_resident_bytes": R.STREAM_PROBE_SMALL}
    details = {"runtime_costs": costs, "llc_bytes": llc}
    return Hardware(devices=(Device("cpu", "cpu", 64 * 2**30, 25.0, "measured", details=details),), source="probe")


Q4 = StepCosts(per_token_s=2e-5, per_layer_s=1e-5, elements_per_s=7e10, context_s_per_element=2e-10,
               prefill_pass_s=1e-3, prefill_elements_per_s=2e11)  # fmt: skip


def test_llama_cpp_weights_read_from_memory_cost_the_measured_stream_on_top_of_a_cached_probe():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("Qwen/Qwen2.5-0.5B-Instruct")  # rows of 896: every tensor keeps Q4_0
    table = {"Q4_0": Q4, "Q8_0": Q4}
    hw = _llama_cpu(table, stream=3e-11, llc=64 * 2**20)  # its Q8_0 head's 26 MB probe fits half of it too
    place = S.plan(spec, "q4_0", hw, context=1024)
    seconds, basis = S.decode_seconds(spec, "q4_0", hw, place, depth=0)
    cpu = basis["devices"]["cpu"]
    read = cpu["bytes"]
    # the 14 and 26 MB probes sat in the cache: compute at their rate plus the bytes at the measured cost
    assert cpu["stream_s"] == pytest.approx(read * 3e-11, rel=1e-6)
    assert cpu["layers_s"] + cpu["constant_s"] + cpu["compute_s"] + cpu["stream_s"] == pytest.approx(
        seconds - cpu["context_s"], rel=1e-6
    )
    # without the measurement, torch's bandwidth prices the reading
    _, basis = S.decode_seconds(spec, "q4_0", _llama_cpu(table, stream=None, llc=64 * 2**20), place, depth=0)
    assert basis["devices"]["cpu"]["stream_s"] == pytest.approx(read / 25e9, rel=1e-6)


def test_a_llama_cpp_probe_larger_than_the_cache_had_already_paid_part_of_its_reading():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("Qwen/Qwen2.5-0.5B-Instruct")
    per_byte = 3e-11
    cache = 16 * 2**20  # half of a 32 MiB L3
    # F16: a 48 MB probe, two thirds of it read from memory, slower than that reading alone: arithmetic plus reading
    f16 = dataclasses.replace(Q4, elements_per_s=2.0e10)
    hw = _llama_cpu({"F16": f16, "F32": f16}, stream=per_byte)
    place = S.plan(spec, "gguf-f16", hw, context=1024)
    seconds, basis = S.decode_seconds(spec, "gguf-f16", hw, place, depth=0)
    cpu = basis["devices"]["cpu"]
    layers, head = S.matmul_elements(spec)
    elements = layers + head
    probe_bytes = S.PROBE_MATMUL_ELEMENTS * 2
    probe_reading = (probe_bytes - cache) / probe_bytes * 2 * per_byte  # per element
    expected = elements * (1 / f16.elements_per_s - probe_reading) + cpu["bytes"] * per_byte
    assert cpu["stream_s"] == pytest.approx(cpu["bytes"] * per_byte, rel=1e-6)
    assert seconds - cpu["layers_s"] - cpu["constant_s"] - cpu["context_s"] == pytest.approx(expected, rel=1e-6)
    # F32: a 97 MB probe that ran faster than the measured cost of its reading allows (the plain dot product
    # overlaps reading and arithmetic): never faster than its own rate
    f32 = dataclasses.replace(Q4, elements_per_s=5e10)
    hw = _llama_cpu({"F32": f32, "F16": f32}, stream=per_byte)
    seconds, basis = S.decode_seconds(spec, "gguf-f32", hw, place, depth=0)
    cpu = basis["devices"]["cpu"]
    probe_bytes = S.PROBE_MATMUL_ELEMENTS * 4
    probe_reading = (probe_bytes - cache) / probe_bytes * 4 * per_byte * elements
    own = elements / f32.elements_per_s
    assert own < probe_reading  # it ran faster than the measured cost of its own reading
    assert seconds - cpu["layers_s"] - cpu["constant_s"] - cpu["context_s"] == pytest.approx(
        max(own, own - probe_reading + cpu["bytes"] * per_byte), rel=1e-6
    )


def test_the_stream_probe_reads_the_extra_time_of_a_model_too_large_for_the_cache(tmp_path):
    layers, hidden, inter = R.STREAM_SHAPE
    elements = R.matmul_elements(layers, hidden, inter)
    per_byte = 3e-11
    nbytes = elements * 4.5 / 8
    step = Q4.per_token_s + layers * Q4.per_layer_s + elements / Q4.elements_per_s + nbytes * per_byte
    assert R._stream_per_byte(step, Q4) == pytest.approx(per_byte, rel=1e-6)
    assert R._deep_probe(tmp_path).stat().st_size > nbytes  # a real GGUF of that shape
    # a deep model no slower than the cached rate: nothing to add, no figure
    assert R._stream_per_byte(step - nbytes * per_byte * 1.01, Q4) is None


def test_a_burst_in_one_round_moves_no_figure_of_the_llama_cpp_probe(tmp_path, monkeypatch):
    # The cost per byte is a difference of two timings, and the constants a difference of two tiny models: a
    # neighbour's burst during one round must set none of them. Timings come from a machine that obeys Q4 plus
    # 3e-11 s a byte read from memory; the deep model's first round is 40% slower, tiny8's third twice as slow.
    from advisor.engines import llamacpp

    per_byte = 3e-11
    layers, hidden, inter = R.STREAM_SHAPE
    elements = R.matmul_elements(layers, hidden, inter)
    deep_step = Q4.per_token_s + layers * Q4.per_layer_s + elements / Q4.elements_per_s + elements * 4.5 / 8 * per_byte
    machine = timings(dataclasses.replace(Q4, context_s_per_token=0.0))
    calls: dict[str, int] = {}
    loaded: list = []

    class Fake:
        def __init__(self, path):
            self.path = path
            self.closed = False
            loaded.append(self)

        def generate(self, prompt, max_new_tokens, exact_length):  # the warm-up
            return None

        def close(self):
            self.closed = True

    def fake_round(engine, figures=()):
        name = engine.path.stem
        n = calls[name] = calls.get(name, 0) + 1
        if name.startswith("deep"):
            return {"decode_s": deep_step * (1.4 if n == 1 else 1.0)}
        timing = dict(machine["wide8" if name.startswith("wide8") else name])
        if name == "tiny8" and n == 3:
            timing = {key: 2 * value for key, value in timing.items()}
        return timing

    monkeypatch.setattr(
        llamacpp.LlamaCppEngine, "load", classmethod(lambda cls, artifact, options: Fake(artifact.path))
    )
    monkeypatch.setattr(R, "_time_round", fake_round)
    out = R.measure_llamacpp_here(tmp_path, types=("Q4_0",))
    assert calls == {"tiny2": R.ROUNDS, "tiny8": R.ROUNDS, "wide8-Q4_0": R.ROUNDS, "deep-Q4_0": R.ROUNDS}
    assert out["stream"]["s_per_byte"] == pytest.approx(per_byte, rel=1e-4)
    undisturbed = R.rounded(R.fit({name: machine[name] for name in R.SHAPES}))
    assert out["Q4_0"] == undisturbed  # the median left tiny8's slow round out entirely
    assert all(engine.closed for engine in loaded) and len(loaded) == 4  # each model loaded once
    assert not list(tmp_path.glob("deep*"))  # the 109 MB model does not stay behind


def test_llama_cpp_types_share_the_attention_three_types_measured(tmp_path, monkeypatch):
    # Attention reads the same F16 cache whatever the weights' type: only F16, Q8_0 and Q4_0 are timed at the long
    # depth and the longest prompt, every other type takes the median of theirs and keeps its own weight rate, pass
    # and prompt rate, recovered exactly from a machine that obeys them.
    from advisor.engines import llamacpp

    attention = {"F16": (1.0e-10, 1.0e-11), "Q8_0": (1.2e-10, 1.4e-11), "Q4_0": (1.6e-10, 1.2e-11)}
    base = dataclasses.replace(Q4, context_s_per_token=0.0)
    machines = {t: timings(dataclasses.replace(base, context_s_per_element=c, prefill_attention_s=a))
                for t, (c, a) in attention.items()}  # fmt: skip
    own = dataclasses.replace(base, elements_per_s=2.2e10, prefill_pass_s=3e-3, prefill_elements_per_s=4e10,
                              context_s_per_element=1.2e-10, prefill_attention_s=1.2e-11)  # fmt: skip
    machines["Q4_1"] = timings(own)
    asked: dict[str, set] = {}

    class Fake:
        def __init__(self, path):
            self.path = path

        def generate(self, prompt, max_new_tokens, exact_length):
            return None

        def close(self):
            pass

    def fake_round(engine, figures=()):
        name = engine.path.stem
        asked.setdefault(name, set()).update(figures)
        if name.startswith("deep"):
            return {"decode_s": 1.0}
        kind = name.split("-")[1] if name.startswith("wide8") else "Q4_0"
        timing = machines[kind]["wide8" if name.startswith("wide8") else name]
        keep = {"decode_s"}
        if R.DECODE_LONG in figures:
            keep.add("decode_long_s")
        if R.PREFILLS in figures:
            keep |= {"prefill_short_s", "prefill_long_s"}
        if R.PREFILL_SQUARE in figures:
            keep.add("prefill_longest_s")
        return {k: v for k, v in timing.items() if k in keep}

    monkeypatch.setattr(
        llamacpp.LlamaCppEngine, "load", classmethod(lambda cls, artifact, options: Fake(artifact.path))
    )
    monkeypatch.setattr(R, "_time_round", fake_round)
    out = R.measure_llamacpp_here(tmp_path, types=("F16", "Q8_0", "Q4_0", "Q4_1"))
    assert asked["wide8-Q4_1"] == {R.PREFILLS}  # neither the 1,024-deep step nor the 512-token prompt
    assert all(asked[f"wide8-{t}"] == set(R.FULL) for t in attention)
    q41 = StepCosts.from_json(out["Q4_1"])
    measured = [StepCosts.from_json(out[t]) for t in attention]
    middle = sorted(measured, key=lambda c: c.context_s_per_element)[1]
    assert q41.context_s_per_element == pytest.approx(middle.context_s_per_element, rel=1e-4)
    assert q41.prefill_attention_s == pytest.approx(1.2e-11, rel=1e-4)  # the median of 1.0, 1.4 and 1.2e-11
    # its own figures: those the fit reads from every figure timed (the attention shared is its own here)
    whole = R.fit({"tiny2": machines["Q4_0"]["tiny2"], "tiny8": machines["Q4_0"]["tiny8"],
                   "wide8": machines["Q4_1"]["wide8"]})  # fmt: skip
    for figure in ("elements_per_s", "prefill_pass_s", "prefill_elements_per_s"):
        assert getattr(q41, figure) == pytest.approx(getattr(whole, figure), rel=1e-4), figure
    assert whole.prefill_pass_s == pytest.approx(own.prefill_pass_s, rel=1e-4)
    tiny = {"tiny2": machines["Q4_0"]["tiny2"], "tiny8": machines["Q4_0"]["tiny8"]}
    assert out["F16"] == R.rounded(R.fit({**tiny, "wide8": machines["F16"]["wide8"]}))  # timed: its own figures
    assert out["F16"]["context_s_per_element"] < q41.context_s_per_element


def test_the_probe_models_take_turns_and_each_figure_is_the_median_of_its_rounds(monkeypatch):
    # A slow moment of the host lands on whichever model runs then: with the models taking turns (a different one
    # first each round) and medians over the rounds, one slow round moves no figure.
    order: list[str] = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def generate(self, prompt, max_new_tokens, exact_length):
            return None

    def fake_round(engine, figures=()):
        order.append(engine.name)
        slow = 3.0 if len(order) in (2, 3) else 1.0  # a burst over the second and third timings
        return {"decode_s": slow * {"a": 1.0, "b": 2.0, "c": 5.0}[engine.name]}

    monkeypatch.setattr(R, "_time_round", fake_round)
    out = R._time_engines({n: (Fake(n), ()) for n in "abc"}, rounds=5)
    assert out == {"a": {"decode_s": 1.0}, "b": {"decode_s": 2.0}, "c": {"decode_s": 5.0}}
    firsts = order[::3]
    assert firsts == ["a", "b", "c", "a", "b"]  # a different model opens each round
    assert sorted(order) == sorted("abc" * 5)


def test_each_llama_cpp_tensor_type_is_priced_by_how_much_of_its_own_probe_fit_the_cache():
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("Qwen/Qwen2.5-0.5B-Instruct")  # Q4_0 layers, a Q8_0 head (26 MB probe)
    per_byte = 3e-11
    hw = _llama_cpu({"Q4_0": Q4, "Q8_0": Q4}, stream=per_byte)  # 32 MiB: the Q8_0 probe spilled a third of itself
    place = S.plan(spec, "q4_0", hw, context=1024)
    seconds, basis = S.decode_seconds(spec, "q4_0", hw, place, depth=0)
    cpu = basis["devices"]["cpu"]
    layers, head = S.matmul_elements(spec)
    q8_probe = S.PROBE_MATMUL_ELEMENTS * 8.5 / 8
    head_probe_reading = head * (q8_probe - 16 * 2**20) / q8_probe * 8.5 / 8 * per_byte
    expected = (layers + head) / Q4.elements_per_s - head_probe_reading + cpu["bytes"] * per_byte
    assert cpu["stream_s"] == pytest.approx(cpu["bytes"] * per_byte, rel=1e-6)
    assert seconds - cpu["layers_s"] - cpu["constant_s"] - cpu["context_s"] == pytest.approx(expected, rel=1e-6)


def test_the_cost_per_byte_is_recovered_where_the_reference_probe_itself_spilled(tmp_path):
    # A machine that obeys the model exactly: Q4_0 arithmetic `a` a weight, `c` a byte read from memory, and an LLC
    # of 16 MiB, so the 13.6 MB wide8 Q4_0 probe (its rate the reference) read part of itself from memory too.
    a, c, bpe, llc = 1 / 7e10, 3e-11, 4.5 / 8, 16 * 2**20
    cache = S._probe_cache_bytes(Device("cpu", "cpu", 1, 1.0, "measured", details={"llc_bytes": llc}))
    spilled = (R.STREAM_PROBE_SMALL - cache) / R.STREAM_PROBE_SMALL
    assert 0.3 < spilled < 0.5
    q4 = dataclasses.replace(Q4, elements_per_s=1 / (a + spilled * bpe * c))
    layers, hidden, inter = R.STREAM_SHAPE
    deep = q4.per_token_s + layers * q4.per_layer_s + R.matmul_elements(layers, hidden, inter) * (a + bpe * c)
    measured = R._stream_per_byte(deep, q4)
    assert measured == pytest.approx(c * (1 - spilled), rel=1e-6)  # what the deep model's extra time shows
    hw = _llama_cpu({"Q4_0": q4}, stream=measured, llc=llc)
    assert S.llama_stream_cost(hw.cpu) == pytest.approx(c, rel=1e-6)
    # where the reference probe sat in the cache, the figure is taken as measured
    assert S.llama_stream_cost(_llama_cpu({"Q4_0": Q4}, stream=c, llc=64 * 2**20).cpu) == pytest.approx(c)


def test_llama_cpp_decode_is_never_faster_than_memory_delivers_its_bytes():
    # A deep probe that still sat in a very large cache measures a cost per byte near zero; the step must still
    # read every byte at no more than the bandwidth (25 GB/s here).
    from advisor.sources import catalog

    spec = catalog.spec_from_catalog("Qwen/Qwen2.5-7B-Instruct")
    hw = _llama_cpu({"Q4_0": Q4, "Q8_0": Q4, "Q6_K": Q4}, stream=1e-13, llc=512 * 2**20)
    place = S.plan(spec, "q4_0", hw, context=1024)
    seconds, basis = S.decode_seconds(spec, "q4_0", hw, place, depth=0)
    cpu = basis["devices"]["cpu"]
    assert seconds >= cpu["bytes"] / 25e9
    assert 1 / seconds < 25e9 / cpu["bytes"]


def test_a_kind_that_fails_to_time_costs_only_itself(monkeypatch):
    # A bitsandbytes build without CPU kernels (or a library mismatch) raises while its kind is timed: the 16-bit
    # kinds already timed are kept, and the profile's notes say which kind is missing and why.
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a))  # fmt: skip

    def measure(kind, device, tmp):
        if kind in R.BNB_PRECISIONS:
            raise RuntimeError("bitsandbytes has no CPU backend")
        return R.fit(timings(TRUE))

    monkeypatch.setattr(R, "_measure_kind", measure)
    notes: list[str] = []
    out = R.measure_transformers(notes=notes)
    assert sorted(out) == sorted(R.TRANSFORMERS_DTYPES)
    assert len(notes) == len(R.BNB_PRECISIONS)
    assert all("bitsandbytes has no CPU backend" in n for n in notes)


def test_every_query_head_reads_llama_cpps_mla_latent():
    from advisor.sources import catalog

    lite = catalog.spec_from_catalog("deepseek-ai/DeepSeek-V2-Lite")
    assert lite.kv_lora_rank and lite.kv.latent_elements
    # transformers caches K and V per head (one head reads its own); llama.cpp one latent all heads read
    assert S.query_groups(lite, "transformers") == lite.num_attention_heads / lite.num_kv_heads
    assert S.query_groups(lite, "llama.cpp") == lite.num_attention_heads
    qwen = catalog.spec_from_catalog("Qwen/Qwen2.5-0.5B-Instruct")
    assert S.query_groups(qwen, "llama.cpp") == S.query_groups(qwen) == 7


def test_the_first_token_comes_out_of_the_prompt_pass_without_reading_the_weights_again():
    # Where the probe priced the device, TTFT is the prompt pass plus the step's own constants (per token, per
    # layer, attention over the prompt), not a whole second decode step that reads every weight again; on a CPU the
    # pass pays its weights' reading on top of its arithmetic.
    spec, hw = _smollm_on_measured_cpu(2**20)
    place = S.plan(spec, "bf16", hw, context=1024)
    est = S.estimate_speed(spec, "bf16", hw, place, context=1024, prompt_tokens=32)
    step, basis = S.decode_seconds(spec, "bf16", hw, place, depth=32)
    pre, pre_basis = S.prefill_seconds(spec, "bf16", hw, place, prompt_tokens=32)
    d = basis["devices"]["cpu"]
    fixed = d["constant_s"] + d["layers_s"] + d["context_s"]
    assert 0 < fixed < step  # the step also reads 270 MB of weights
    assert est.ttft_s == pytest.approx(pre + fixed, rel=1e-9)
    assert est.prefill_tok_s == pytest.approx(32 / (pre + fixed), rel=1e-9)
    p = pre_basis["devices"]["cpu"]
    assert p["stream_s"] > 0 and p["compute_s"] > 0
    assert pre == pytest.approx(p["passes"] * p["pass_s"] + p["compute_s"] + p["stream_s"], rel=1e-9)
    # fp32 was not timed: the table defaults price it, and the whole step stays in its TTFT
    est32 = S.estimate_speed(spec, "fp32", hw, place, context=1024, prompt_tokens=32)
    step32, _ = S.decode_seconds(spec, "fp32", hw, place, depth=32)
    pre32, _ = S.prefill_seconds(spec, "fp32", hw, place, prompt_tokens=32)
    assert est32.ttft_s == pytest.approx(pre32 + step32, rel=1e-9)
