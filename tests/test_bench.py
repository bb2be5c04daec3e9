"""advisor bench: loading in each precision, the measured-vs-estimated comparison, the calibration store."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from advisor import bench as B
from advisor import calibration as C
from advisor import session
from advisor.costmodel import memory as M
from advisor.engines import Artifact, EngineError, LoadOptions, memwatch, open_engine
from advisor.engines import transformers as TE
from advisor.sources.local import spec_from_folder

SMALL = B.Plan(prompt_lengths=(16,), depths=(32,), new_tokens=8, repeats=2, seconds_per_run=0.5)


@pytest.fixture(autouse=True)
def quiet_cpu(cpu_share):
    """Tests see a quiet machine unless they say otherwise."""


@pytest.fixture
def tiny_source(tiny_model_dir):
    return Artifact(str(tiny_model_dir), Path(tiny_model_dir), "transformers", "local")


def load(source, precision, **options):
    return open_engine(source, LoadOptions(precision, **options))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "int8", "int4", "int4-dq"])
def test_load_each_precision_matches_weight_estimate(tiny_source, precision):
    spec = spec_from_folder(tiny_source.path, model_id="tiny")
    engine = load(tiny_source, precision)
    try:
        estimated = M.weight_bytes(spec, precision).total
        # bitsandbytes keeps a few hundred bytes of quantization maps per layer beyond the estimate.
        assert engine.weight_bytes == pytest.approx(estimated, rel=0.02)
        gen = engine.generate(B.prompt_ids(engine, 10), max_new_tokens=6, exact_length=True)
        assert gen.new_tokens == 6 and len(gen.token_times) == 6 and gen.ttft_s > 0 and gen.passes == 6
        assert gen.kv_bytes == M.kv_cache_bytes(spec, 10 + 6 - 1, dtype_bytes=M.cache_dtype_bytes(precision))
        assert engine.placement == "cpu" and engine.layers_by_device == {"cpu": 2}
    finally:
        engine.close()


def test_llama_cpp_precision_is_refused_by_the_transformers_engine(tiny_source):
    with pytest.raises(EngineError, match=r"llama\.cpp"):
        load(tiny_source, "q4_k_m")


def test_bench_compares_and_records(tiny_model_dir, seeded_hw):
    report = B.run_bench(str(tiny_model_dir), ["bf16", "int4"], hw=seeded_hw, plan=SMALL, isolate=False)
    assert [r.status for r in report.rows] == ["ok", "ok"]
    for row in report.rows:
        names = {c.name for c in row.comparisons}
        assert {"weights", "ttft@16", "prefill@16", "decode@32", "kv_cache", "peak_memory", "overhead"} <= names
        assert row.get("weights").ratio == pytest.approx(1.0, rel=0.02)
        assert row.get("kv_cache").ratio == pytest.approx(1.0)
        assert row.get("decode@32").measured > 0 and row.get("decode@32").estimated > 0
        assert row.recorded, "decode runs must be stored"
    stored = C.runs(seeded_hw.fingerprint)
    assert {r.precision for r in stored} == {"bf16", "int4"}
    fitted = C.load_for(seeded_hw)
    assert fitted.step_scale("transformers", "bf16", "float", "cpu")[1]
    assert fitted.step_scale("transformers", "int4", "bnb4", "cpu")[1]
    assert report.calibrated_runs == len(stored)


def test_no_record_leaves_store_empty(tiny_model_dir, seeded_hw):
    B.run_bench(str(tiny_model_dir), ["bf16"], hw=seeded_hw, plan=SMALL, record=False, isolate=False)
    assert C.runs(seeded_hw.fingerprint) == []


def test_sweep_goes_on_after_failures(tiny_model_dir, seeded_hw, monkeypatch):
    import torch

    real_load = TE.TransformersEngine.load.__func__

    def flaky_load(cls, artifact, options):
        if options.precision == "fp16":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_load(cls, artifact, options)

    monkeypatch.setattr(TE.TransformersEngine, "load", classmethod(flaky_load))
    report = B.run_bench(
        str(tiny_model_dir), ["fp16", "q8_0", "bf16"], hw=seeded_hw, plan=SMALL, record=False, isolate=False
    )
    status = {r.precision: r.status for r in report.rows}
    # q8_0 is a llama.cpp type: a transformers folder has no GGUF file for it.
    assert status == {"fp16": "oom", "q8_0": "unsupported", "bf16": "ok"}


def test_ctrl_c_keeps_rows_done(tiny_model_dir, seeded_hw, monkeypatch):
    real = B.bench_option
    calls = []

    def interrupting(job, progress):
        calls.append(job.plan.precision)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, progress)

    monkeypatch.setattr(B, "bench_option", interrupting)
    report = B.run_bench(
        str(tiny_model_dir), ["bf16", "fp32", "int4"], hw=seeded_hw, plan=SMALL, record=False, isolate=False
    )
    assert report.interrupted
    assert [(r.precision, r.status) for r in report.rows] == [("bf16", "ok"), ("fp32", "interrupted")]


def test_child_process_isolation(tiny_model_dir, seeded_hw):
    # Each precision runs in its own process: its peak memory is its own, and results come back intact.
    report = B.run_bench(str(tiny_model_dir), ["fp32"], hw=seeded_hw, plan=SMALL, record=False, isolate=True)
    row = report.rows[0]
    assert row.status == "ok", row.message
    assert row.get("weights").measured == pytest.approx(row.get("weights").estimated, rel=0.02)
    assert row.get("peak_memory").measured > row.get("weights").measured


def test_quality_perplexity_relative(tiny_model_dir, seeded_hw):
    report = B.run_bench(
        str(tiny_model_dir), ["fp32", "int4"], hw=seeded_hw, plan=SMALL, record=False, quality=True, isolate=False
    )
    ppl = {r.precision: r for r in report.rows}
    assert ppl["fp32"].perplexity_ratio == pytest.approx(1.0)
    assert ppl["int4"].perplexity > 0 and ppl["int4"].perplexity_ratio is not None


def test_bench_cli_json(tiny_model_dir, seeded_hw):
    from advisor import bench_cli  # noqa: F401  (registers the command)
    from advisor.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "bench",
            str(tiny_model_dir),
            "-p",
            "bf16",
            "--prompt-lengths",
            "16",
            "--depths",
            "32",
            "--new-tokens",
            "8",
            "--repeats",
            "1",
            "--no-record",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rows"][0]["precision"] == "bf16" and data["rows"][0]["status"] == "ok"
    assert any(c["name"] == "weights" for c in data["rows"][0]["comparisons"])


def test_calibration_cli_show_and_clear(seeded_hw):
    from advisor import bench_cli  # noqa: F401
    from advisor.cli import cli

    C.record(
        C.Run(
            fingerprint=seeded_hw.fingerprint,
            model="m",
            precision="bf16",
            runtime="transformers",
            kind="float",
            device_kind="cpu",
            placement="cpu",
            layers=30,
            bytes_per_token=3e8,
            bandwidth_gbps=20.0,
            measured_tok_s=30.0,
        )
    )
    shown = CliRunner().invoke(cli, ["calibration", "show", "--json"], catch_exceptions=False)
    assert json.loads(shown.output)["runs"][0]["model"] == "m"
    cleared = CliRunner().invoke(cli, ["calibration", "clear", "--yes"], catch_exceptions=False)
    assert "deleted 1 runs" in cleared.output
    assert C.runs() == []


def test_long_prompt_prefills_in_chunks_on_cpu(tiny_source, monkeypatch):
    engine = load(tiny_source, "fp32")
    try:
        ids = B.prompt_ids(engine, 40)
        whole = engine.generate(ids, max_new_tokens=5, exact_length=True)
        seen = []
        real = engine.model.generate

        def spy(*args, **kwargs):
            seen.append(kwargs.get("prefill_chunk_size"))
            return real(*args, **kwargs)

        monkeypatch.setattr(engine.model, "generate", spy)
        monkeypatch.setattr(M, "CPU_PREFILL_CHUNK", 16)
        chunked = engine.generate(ids, max_new_tokens=5, exact_length=True)
        engine.generate(ids[:10], max_new_tokens=2)
        # A model without a cache (rwkv, xlnet ...) cannot be prefilled in chunks: transformers refuses.
        monkeypatch.setattr(engine.model, "_supports_default_dynamic_cache", lambda: False)
        engine.generate(ids, max_new_tokens=2)
    finally:
        engine.close()
    assert seen == [16, None, None]  # only a prompt longer than the chunk is split, and only with a cache
    assert chunked.token_ids == whole.token_ids
    assert chunked.kv_bytes == whole.kv_bytes


def test_peak_memory_leaves_out_file_pages_mapped_after_its_baseline(tmp_path):
    import mmap

    import psutil

    before = psutil.Process().memory_info().shared
    path = tmp_path / "checkpoint.bin"
    size = 64 * 2**20
    path.write_bytes(b"\1" * size)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, size, 4096)) == size // 4096  # every page resident
        with memwatch.PeakMemory() as counted_now, memwatch.PeakMemory(baseline_shared=before) as from_before:
            pass
    assert counted_now.peak - from_before.peak > size // 2  # the mapped file counts only in the first
    assert from_before.peak == from_before.peak_anon + before


def test_gpu_peak_prefers_nvml_per_process_figure():
    cuda = {"cuda_max_allocated": 5_000, "cuda_max_reserved": 8_000}
    assert B.gpu_peak(cuda, {0: 7_000_000, 1: 1_000}) == (7_001_000, "NVML (this process)")
    peak, basis = B.gpu_peak(cuda, {})
    assert peak == 8_000 + M.CUDA_CONTEXT and "reserved" in basis


def test_peak_memory_samples_nvml_while_cuda_is_in_use(monkeypatch):
    import torch

    figures = iter([{0: 100}, {0: 700}, {0: 300}])
    last: dict[int, int] = {0: 300}

    class Reader:
        closed = False

        def read(self):
            nonlocal last
            last = next(figures, last)
            return last

        def close(self):
            Reader.closed = True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    monkeypatch.setattr(memwatch, "nvml_process_memory", lambda pid: Reader())
    with memwatch.PeakMemory(interval=0.001) as mem:
        import time

        time.sleep(0.05)
    assert mem.nvml_peaks == {0: 700} and Reader.closed


def test_loading_trims_freed_memory_while_it_runs(monkeypatch):
    import time

    calls: list[int] = []
    monkeypatch.setattr(memwatch, "_malloc_trim", lambda: calls.append)
    with memwatch.trimming(interval=0.005):
        time.sleep(0.06)
    done = len(calls)
    time.sleep(0.03)
    assert done >= 3 and set(calls) == {0}
    assert len(calls) == done  # the trimming thread stopped with the block


def test_runs_measured_on_a_busy_cpu_are_not_recorded(tiny_model_dir, seeded_hw, cpu_share):
    cpu_share(0.6)
    report = B.run_bench(str(tiny_model_dir), ["bf16"], hw=seeded_hw, plan=SMALL, isolate=False)
    row = report.rows[0]
    assert row.status == "ok" and row.cpu_contention == 0.6 and not row.recorded
    assert C.runs(seeded_hw.fingerprint) == []
    assert any("not recorded" in w and "60%" in w for w in report.warnings)
    # The same bench on a quiet machine is recorded, with the contention it saw beside each run.
    cpu_share(0.05)
    report = B.run_bench(str(tiny_model_dir), ["bf16"], hw=seeded_hw, plan=SMALL, isolate=False)
    assert report.rows[0].recorded
    assert {r.measured["cpu_contention"] for r in C.runs(seeded_hw.fingerprint)} == {0.05}


def test_weights_left_in_the_checkpoint_mapping_are_found(tiny_source):
    # The tiny checkpoint is fp32: an fp32 load keeps its tensors in the file mapping, a bf16 load copies.
    found = {}
    for precision in ("fp32", "bf16"):
        engine = load(tiny_source, precision)
        try:
            found[precision] = (engine.memory_details()["file_backed_weights"], engine.weight_bytes)
        finally:
            engine.close()
    mapped, held = found["fp32"]
    assert mapped == held > 0
    assert found["bf16"][0] == 0


def test_cpu_loads_run_under_the_trimmer(tiny_source, monkeypatch):
    import contextlib

    entered = []

    @contextlib.contextmanager
    def spy():
        entered.append(True)
        yield

    monkeypatch.setattr(memwatch, "trimming", spy)
    load(tiny_source, "bf16").close()
    assert entered == [True]


def test_a_bench_that_measured_nothing_fails_in_one_line(tiny_model_dir, seeded_hw, capsys):
    from advisor.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["bench", str(tiny_model_dir), "-p", "q8_0"])
    assert ended.value.code == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "unsupported" in text and "advisor: Nothing was measured" in out.err
    assert "Traceback" not in text and "Recorded;" not in text
    assert C.runs(seeded_hw.fingerprint) == []


# ---------------------------------------------------------------------------------------------------------------
# The child process: crashes, kills, and a parent that goes away


def _job(**changes):
    from advisor import bench as Bm

    return Bm.Job(plan=None, artifact=None, options=None, hw=None, bench=SMALL, calibration=None, **changes)


@pytest.mark.parametrize(
    ("sig", "status", "words"),
    [(signal.SIGSEGV, "error", "died (SIGSEGV)"), (signal.SIGKILL, "oom", "killed (SIGKILL")],
    ids=["segfault", "killed"],
)
def test_a_child_that_crashes_is_one_row_and_records_nothing(sig, status, words):
    import childfaults

    job = _job(quality=childfaults.DieOnArrival(sig))
    job = dataclasses.replace(job, plan=childfaults.fake_plan())
    row, runs = B.bench_in_child(job, lambda msg: None)
    assert row.status == status and words in row.message and "nothing was recorded" in row.message
    assert runs == [] and not row.recorded


def test_a_child_killed_mid_run_leaves_no_process_behind(tiny_model_dir, seeded_hw):
    import psutil

    spec = session.resolve_model(str(tiny_model_dir))
    rec = session.recommend_for_run(spec, seeded_hw, context=SMALL.context)
    plan = session.choose(rec, model=str(tiny_model_dir), context=SMALL.context, precision="fp32")
    job = B.Job(plan, session.fetch(plan), session.load_options(plan), seeded_hw, SMALL, C.load_for(seeded_hw))
    me = psutil.Process()

    def kill_the_child(msg: str) -> None:
        for child in me.children():
            if "spawn_main" in " ".join(child.cmdline()):
                child.kill()

    row, runs = B.bench_in_child(job, kill_the_child)
    assert row.status == "oom" and "killed" in row.message and runs == []
    assert not [c for c in me.children() if "spawn_main" in " ".join(c.cmdline())]


def test_the_child_dies_with_its_parent(tmp_path):
    import psutil

    script = (
        "import sys, dataclasses\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import childfaults\n"
        "from advisor import bench as B\n"
        "job = B.Job(childfaults.fake_plan(), childfaults.SlowArtifact(120), None, None, B.Plan(), None)\n"
        "B.bench_in_child(job, print)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        child = None
        while child is None and time.monotonic() < deadline:
            kids = [c for c in psutil.Process(parent.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            child = kids[0] if kids else None
            time.sleep(0.2)
        assert child is not None, "the bench child never started"
        time.sleep(3)  # inside the slow read, its lifeline armed
        parent.send_signal(signal.SIGTERM)
        parent.wait(30)
        gone, _alive = psutil.wait_procs([child], timeout=15)
        assert gone, "the bench child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_runs_are_recorded_under_the_placement_that_was_loaded(tiny_model_dir, seeded_hw):
    from advisor.spec import Device

    gpu = Device(kind="cuda", name="Test GPU", memory_bytes=24 * 2**30, bandwidth_gbps=900.0,
                 bandwidth_source="table", matmul_tflops=80.0, index=0)  # fmt: skip
    hw = dataclasses.replace(seeded_hw, devices=(gpu, *seeded_hw.devices))
    report = B.run_bench(str(tiny_model_dir), ["fp32"], hw=hw, plan=SMALL, device_map="cpu", isolate=False)
    row = report.rows[0]
    assert row.status == "ok" and row.placement == "cpu"  # planned on cuda:0, loaded on the CPU
    stored = C.runs(seeded_hw.fingerprint)
    assert stored and {(r.placement, r.device_kind) for r in stored} == {("cpu", "cpu")}
    assert {r.bandwidth_gbps for r in stored} == {seeded_hw.cpu.bandwidth_gbps}  # priced on the CPU, not the GPU
    decode = row.get("decode@32")
    cpu_only = dataclasses.replace(seeded_hw)
    spec = session.resolve_model(str(tiny_model_dir))
    from advisor.costmodel import speed as S

    placement = S.plan(spec, "fp32", cpu_only, context=SMALL.context)
    step, _ = S.decode_seconds(spec, "fp32", cpu_only, placement, depth=32 + stored[0].measured["new_tokens"] // 2)
    assert decode.estimated == pytest.approx(1 / step)
