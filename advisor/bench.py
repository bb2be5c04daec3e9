"""`advisor bench`: load a model, measure it, hold the estimate to the measurement, remember the run.

For each option (precision x runtime): load time; prefill throughput and time to first token at several
prompt lengths; decode tokens/s at several context depths (end-of-generation never sampled), each after a
warm-up and repeated, median and spread; the bytes the loaded weights hold; the KV cache bytes; peak process
memory (over loading and a separate memory pass, so the sampler never runs while speed is timed). Each option
runs in a fresh child process, so its peak is its own and a crash ends that row only.
Every figure is set beside advisor's estimate for the placement that was really loaded, and the decode runs go
into the calibration store under that placement.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advisor import calibration as C
from advisor import hardware as H
from advisor import precision as P
from advisor import session
from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.engines.base import Artifact, Engine, LoadOptions
from advisor.errors import AdvisorError, RuntimeLoadError
from advisor.spec import Hardware, ModelSpec
from advisor.textutil import first_line

# A short English text for prompts and the perplexity check (written for advisor; no licence issues).
BUILTIN_TEXT = (
    "The river town woke slowly on market days. Before dawn the bakers lit their ovens, and by the time the "
    "first barges reached the stone quay the smell of bread had drifted across the water. Farmers came in from "
    "the hills with carts of apples, cheese and wool, and the square filled with voices bargaining over prices "
    "that had not changed in years. Children ran between the stalls, chasing a dog that had stolen a sausage, "
    "while their grandparents sat on the steps of the old church and argued about the weather. At noon the bell "
    "rang twelve times, and for a moment everyone looked up, as if the sound reminded them that the day was "
    "already half gone. In the afternoon the traders packed what was left, the barges loaded sacks of flour for "
    "the city downstream, and the square slowly emptied. A musician played a tune on a battered violin near the "
    "fountain, and a few coins landed in his hat. When the sun set behind the mill, the lamps were lit one by "
    "one along the river, and the town settled into the quiet of an ordinary evening, waiting for the next "
    "market day to begin the whole story again. Scientists measure the speed of light, engineers build bridges "
    "that carry thousands of cars each day, and teachers explain to curious students why the sky is blue and "
    "why the seasons change as the earth travels around the sun once every year."
)


@dataclass(frozen=True)
class Comparison:
    name: str  # weights, kv_cache, peak_memory, decode@512, prefill@128, ttft@128 ...
    measured: float
    estimated: float | None
    unit: str  # bytes | tok/s | s
    spread: float | None = None  # relative spread of the repetitions ((max - min) / median)

    @property
    def ratio(self) -> float | None:
        if self.estimated is None or self.estimated == 0:
            return None
        return self.measured / self.estimated


@dataclass
class BenchRow:
    precision: str
    runtime: str = "transformers"
    status: str = "ok"  # ok | skipped | unsupported | oom | error | interrupted
    message: str = ""
    placement: str = ""
    load_s: float | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    perplexity: float | None = None
    perplexity_ratio: float | None = None
    recorded: list[int] = field(default_factory=list)
    cpu_contention: float | None = None  # share of the CPU other processes took while measuring
    artifact: str = ""  # what was loaded (file or folder name) and how it was obtained

    def get(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "runtime": self.runtime,
            "status": self.status,
            "message": self.message,
            "placement": self.placement,
            "load_s": self.load_s,
            "artifact": self.artifact,
            "perplexity": self.perplexity,
            "perplexity_ratio": self.perplexity_ratio,
            "recorded_runs": self.recorded,
            "cpu_contention": self.cpu_contention,
            "comparisons": [{**dataclasses.asdict(c), "ratio": c.ratio} for c in self.comparisons],
        }


@dataclass
class BenchReport:
    model: str
    source: str
    hardware: Hardware
    rows: list[BenchRow]
    interrupted: bool = False
    calibrated_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "hardware": self.hardware.to_json(),
            "rows": [r.to_json() for r in self.rows],
            "interrupted": self.interrupted,
            "calibrated_runs": self.calibrated_runs,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Plan:
    """What to measure: prompt lengths for prefill/TTFT, context depths for decode."""

    prompt_lengths: tuple[int, ...] = (32, 128, 512)
    depths: tuple[int, ...] = (64, 512, 1024)
    new_tokens: int = 32
    repeats: int = 3
    seconds_per_run: float = 1.5  # adapts new_tokens to slow precisions

    @property
    def context(self) -> int:
        """Tokens the engine must hold: the deepest decode and its new tokens."""
        return max(max(self.depths) + self.new_tokens, max(self.prompt_lengths) + 1)

    @property
    def largest_prompt(self) -> int:
        """The largest prefill of the run (a decode at depth D prefills D tokens first)."""
        return max(*self.prompt_lengths, *self.depths)


def prompt_ids(engine: Engine, length: int) -> list[int]:
    """`length` tokens of the built-in text (repeated as needed)."""
    ids = engine.tokenize(BUILTIN_TEXT)
    reps = -(-length // len(ids))
    return (ids * reps)[:length]


def _spread(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else None


def _main_kind(hw: Hardware) -> str:
    return next((d.kind for d in hw.devices if d.kind != "cpu"), "cpu")


def _placement_kind(hw: Hardware, placement: S.Placement) -> str:
    """The device kind that holds most of the placement's layers (cpu for a CPU-only load on a GPU machine)."""
    kinds = {d.label: d.kind for d in hw.devices}
    label = max(placement.layers, key=lambda k: placement.layers[k]) if placement.layers else "cpu"
    return kinds.get(label, "cpu")


def decode_run(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    placement: S.Placement,
    *,
    step_s: float,
    basis: dict[str, Any],
    measured_tok_s: float,
    measured: dict[str, Any],
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> C.Run:
    """A calibration-store run: decode speed measured for `precision` on `placement` (the loaded one), beside the
    estimate (`step_s` seconds a token and its `basis`, from `S.decode_seconds`). Shared by bench and chat."""
    main = placement.label.split("+")[0].split(" ")[0]
    dev = basis["devices"].get(main) or next(iter(basis["devices"].values()))
    prec = P.get(precision, spec)
    return C.Run(
        fingerprint=hw.fingerprint or "",
        model=spec.id,
        precision=precision,
        runtime=prec.runtime,
        kind=prec.kind,
        device_kind=_placement_kind(hw, placement),
        placement=placement.label,
        layers=spec.num_layers or 1,
        bytes_per_token=float(sum(basis["bytes_per_token"].values())),
        bandwidth_gbps=float(dev.get("bandwidth_gbps") or 0.0),
        measured_tok_s=measured_tok_s,
        estimated_tok_s=1 / step_s if step_s else None,
        measured={
            **measured,
            "kv_elements": basis["bytes_per_token"]["kv_cache"] / M.cache_dtype_bytes(precision, llama),
        },
        estimated={"basis": basis},
    )


@dataclass(frozen=True)
class Job:
    """One option to bench: everything a child process needs (all of it picklable)."""

    plan: session.RunPlan
    artifact: Artifact
    options: LoadOptions
    hw: Hardware
    bench: Plan
    calibration: S.Calibration
    quality: bool = False


def bench_option(job: Job, progress: Callable[[str], None] = lambda msg: None) -> tuple[BenchRow, list[C.Run]]:
    """Load and measure one option. Returns the row and the decode runs for the store."""
    from advisor.engines import memwatch, open_engine

    plan, bench, hw, spec = job.plan, job.bench, job.hw, job.plan.spec
    precision = plan.precision
    row = BenchRow(precision, runtime=plan.runtime, placement=plan.placement.label, artifact=_describe(job.artifact))
    runs: list[C.Run] = []
    engine: Engine | None = None
    name = f"{precision} ({plan.runtime})"
    try:
        progress(f"{name}: loading")
        with memwatch.PeakMemory() as load_mem:
            engine = open_engine(job.artifact, job.options)
        row.load_s = engine.load_seconds
        placement = session.loaded_placement(plan, engine, hw)
        row.placement = placement.label
        kind = _placement_kind(hw, placement)
        llama = session.llama_settings(job.options)
        context = engine.context_size or bench.context
        mem_est = M.estimate(
            spec, precision, context=context, device_kind=kind, prompt_tokens=bench.largest_prompt, llama=llama
        )
        details = engine.memory_details()  # before warm-up, whose trim hands its garbage back
        row.comparisons.append(Comparison("weights", engine.weight_bytes, mem_est.weights_bytes, "bytes"))
        if details.get("repacked_weights") or (plan.runtime == "llama.cpp" and kind == "cpu"):
            repack_est = M.llama_repack_bytes(spec, precision) if kind == "cpu" else 0
            row.comparisons.append(
                Comparison("repacked_weights", details.get("repacked_weights", 0), repack_est, "bytes")
            )

        # Warm-up: kernels, allocator, thread pools; also tells how fast this option is here.
        progress(f"{name}: warming up")
        warm = engine.generate(prompt_ids(engine, min(bench.prompt_lengths)), max_new_tokens=8, exact_length=True)
        speed = warm.decode_tok_s or 1.0
        new_tokens = int(min(bench.new_tokens, max(8, speed * bench.seconds_per_run)))
        load_cuda = load_mem.cuda_peaks()

        # Speed: timed with nothing else of advisor's running beside it.
        with H.CpuContention() as contention:
            for length in bench.prompt_lengths:
                progress(f"{name}: prefill {length} tokens")
                ids = prompt_ids(engine, length)
                engine.generate(ids, max_new_tokens=1, exact_length=True)  # warm this shape
                ttfts = [engine.generate(ids, max_new_tokens=1, exact_length=True).ttft_s for _ in range(bench.repeats)]
                est = S.estimate_speed(
                    spec, precision, hw, placement, context=context, prompt_tokens=length, calibration=job.calibration,
                    llama=llama,
                )  # fmt: skip
                ttft = statistics.median(ttfts)
                row.comparisons.append(Comparison(f"ttft@{length}", ttft, est.ttft_s, "s", _spread(ttfts)))
                row.comparisons.append(
                    Comparison(f"prefill@{length}", length / ttft, est.prefill_tok_s, "tok/s", _spread(ttfts))
                )
            for depth in bench.depths:
                progress(f"{name}: decode at depth {depth}")
                ids = prompt_ids(engine, depth)
                if bench.repeats > 1:
                    engine.generate(ids, max_new_tokens=4, exact_length=True)  # warm this shape
                gens = [
                    engine.generate(ids, max_new_tokens=new_tokens, exact_length=True) for _ in range(bench.repeats)
                ]
                speeds = [g.decode_tok_s for g in gens]
                mid = depth + new_tokens // 2
                t_est, basis = S.decode_seconds(
                    spec, precision, hw, placement, depth=mid, calibration=job.calibration, llama=llama
                )
                measured = statistics.median(speeds)
                row.comparisons.append(
                    Comparison(f"decode@{depth}", measured, 1 / t_est if t_est else None, "tok/s", _spread(speeds))
                )
                at = {"depth": depth, "new_tokens": new_tokens, "speeds": speeds}
                runs.append(
                    decode_run(
                        spec, precision, hw, placement, step_s=t_est, basis=basis, measured_tok_s=measured, measured=at,
                        llama=llama,
                    )
                )  # fmt: skip
            if job.quality:
                progress(f"{name}: perplexity")
                row.perplexity = engine.perplexity(prompt_ids(engine, min(256, len(engine.tokenize(BUILTIN_TEXT)))))
        row.cpu_contention = contention.fraction
        busy = {"cpu_contention": contention.fraction}
        runs = [dataclasses.replace(r, measured={**(r.measured or {}), **busy}) for r in runs]

        # Memory: a pass of its own, sampled, over the largest prefill and the deepest decode.
        progress(f"{name}: memory")
        file_pages = load_mem.start_shared + details.get("file_backed_weights", 0)
        with memwatch.PeakMemory(baseline_shared=file_pages) as run_mem:
            deepest = engine.generate(
                prompt_ids(engine, max(bench.depths)), max_new_tokens=new_tokens, exact_length=True
            )
            if bench.largest_prompt > max(bench.depths):
                engine.generate(prompt_ids(engine, bench.largest_prompt), max_new_tokens=1, exact_length=True)
        kv_tokens = engine.context_size or (max(bench.depths) + new_tokens - 1)  # the last token is never cached
        kv_est = M.kv_cache_bytes(
            spec, kv_tokens, dtype_bytes=M.cache_dtype_bytes(precision, llama), runtime=plan.runtime, llama=llama
        )
        row.comparisons.append(Comparison("kv_cache", deepest.kv_bytes, kv_est, "bytes"))
        _peak_comparisons(row, load_mem, run_mem, load_cuda, details, mem_est)
        overhead = row.get("peak_memory").measured - engine.weight_bytes - deepest.kv_bytes  # repacked copies in it
        row.comparisons.append(Comparison("overhead", overhead, mem_est.overhead_bytes, "bytes"))
    except KeyboardInterrupt:
        row.status, row.message = "interrupted", "stopped by Ctrl-C"
        raise
    except RuntimeLoadError as exc:
        text = str(exc)
        row.status = "oom" if "out of memory" in text.lower() else "unsupported"
        row.message = text
    except Exception as exc:  # one option failing must not end the sweep
        text = first_line(exc)
        if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
            row.status, row.message = "oom", f"out of memory: {text}"
        else:
            row.status, row.message = "error", f"{type(exc).__name__}: {text}"
    finally:
        if engine is not None:
            engine.close()
    return row, runs


def _peak_comparisons(row: BenchRow, load_mem, run_mem, load_cuda, details, mem_est) -> None:
    cuda = run_mem.cuda_peaks()
    if cuda:
        # Peaks over loading and running, as on the CPU.
        cuda = {k: max(v, load_cuda.get(k, 0)) for k, v in cuda.items()}
        nvml = {i: max(run_mem.nvml_peaks.get(i, 0), load_mem.nvml_peaks.get(i, 0))
                for i in {*run_mem.nvml_peaks, *load_mem.nvml_peaks}}  # fmt: skip
        measured_peak, _basis = gpu_peak(cuda, nvml)
        row.comparisons.append(Comparison("peak_memory", measured_peak, mem_est.total_bytes, "bytes"))
        row.comparisons.append(Comparison("cuda_max_allocated", cuda["cuda_max_allocated"], None, "bytes"))
        row.comparisons.append(Comparison("cuda_max_reserved", cuda["cuda_max_reserved"], None, "bytes"))
        if nvml:
            row.comparisons.append(Comparison("nvml_process_peak", sum(nvml.values()), None, "bytes"))
        return
    # The process's peak over loading and running: what the machine must have free.
    load_peak = load_mem.peak + details.get("file_backed_weights", 0)
    peak = max(load_peak, run_mem.peak)
    row.comparisons.append(Comparison("peak_memory", peak, mem_est.total_bytes, "bytes"))
    row.comparisons.append(Comparison("peak_memory_load", load_peak, None, "bytes"))
    for key in ("compute_buffer", "output_buffer"):
        if details.get(key):
            row.comparisons.append(Comparison(key, details[key], None, "bytes"))


def gpu_peak(cuda: dict[str, int], nvml: dict[int, int]) -> tuple[int, str]:
    """The GPU memory a run needed: NVML's figure for this process where it tells (CUDA context and
    every pool included, as nvidia-smi shows), else torch's reserved peak plus a typical context."""
    if nvml:
        return sum(nvml.values()), "NVML (this process)"
    return cuda["cuda_max_reserved"] + M.CUDA_CONTEXT, "torch's reserved peak + the CUDA context estimate"


def _describe(artifact: Artifact) -> str:
    return f"{artifact.path.name} ({artifact.origin})"


# ---------------------------------------------------------------------------------------------------------------
# One child process per option


def _child(conn, job: Job) -> None:
    """Runs in a fresh process: bench one option, report progress and the result through `conn`."""
    import signal

    from advisor import lifeline

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    lifeline.die_with_parent()
    try:
        row, runs = bench_option(job, progress=lambda msg: conn.send(("progress", msg)))
        conn.send(("result", row, runs))
    except BaseException as exc:  # report anything; the parent turns it into a row
        conn.send(("error", f"{type(exc).__name__}: {first_line(exc)}"))
    finally:
        conn.close()


def bench_in_child(job: Job, progress: Callable[[str], None]) -> tuple[BenchRow, list[C.Run]]:
    """Bench one option in a spawned process, so its memory peak is its own (a process never gives freed memory
    back to the OS, so a sweep in one process would measure the largest option's peak every time) and a crash or
    out-of-memory kill ends that row only. The child dies with this process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job), daemon=True)
    proc.start()
    child.close()
    row = BenchRow(job.plan.precision, runtime=job.plan.runtime, placement=job.plan.placement.label)
    try:
        while True:
            if parent.poll(0.2):
                try:
                    msg = parent.recv()
                except EOFError:
                    break
                if msg[0] == "progress":
                    progress(msg[1])
                elif msg[0] == "result":
                    return msg[1], msg[2]
                else:
                    row.status, row.message = "error", msg[1]
                    return row, []
            elif not proc.is_alive():
                break
        proc.join(5)
        code = proc.exitcode
        row.status = "oom" if code in (-9, 137) else "error"
        row.message = _exit_words(code)
        return row, []
    except KeyboardInterrupt:
        proc.terminate()
        proc.join(5)
        raise
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        parent.close()


def _exit_words(code: int | None) -> str:
    import signal

    if code is None:
        return "the measuring process did not finish"
    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGKILL:
            return f"the measuring process was killed ({name}; out of memory?); nothing was recorded"
        return f"the measuring process died ({name}); nothing was recorded"
    return f"the measuring process exited with code {code}; nothing was recorded"


# ---------------------------------------------------------------------------------------------------------------
# The sweep


def select_plans(
    rec, *, model: str | None, context: int, precisions: list[str] | None, runtime: str | None
) -> tuple[list[session.RunPlan], list[BenchRow]]:
    """The options to bench: the recommended one (none asked), every one that runs here ('all'), or those asked;
    rows for those skipped (estimated not to fit, or a runtime that cannot run here)."""
    if not precisions:
        return [session.choose(rec, model=model, context=context, runtime=runtime)], []
    if "all" in precisions:
        usable = session.available_runtimes()
        plans, skipped = [], []
        for option in rec.options:
            if runtime is not None and option.runtime != runtime:
                continue
            if option.runtime not in usable or not session.runnable(option, rec.model, model):
                continue
            if not option.fits:
                skipped.append(BenchRow(option.precision, runtime=option.runtime, status="skipped",
                                        message="estimated not to fit", placement=option.placement))  # fmt: skip
                continue
            plans.append(session.choose(rec, model=model, context=context, precision=option.precision))
        return plans, skipped
    plans = []
    rows = []
    for precision in precisions:
        try:
            plans.append(session.choose(rec, model=model, context=context, precision=precision, runtime=runtime))
        except AdvisorError as exc:
            rows.append(BenchRow(precision, runtime=runtime or "", status="unsupported", message=str(exc)))
    return plans, rows


def run_bench(
    model: str | None = None,
    precisions: list[str] | None = None,
    *,
    hw: Hardware,
    plan: Plan | None = None,
    record: bool = True,
    quality: bool = False,
    runtime: str | None = None,
    device_map: Any = None,
    max_memory: dict | None = None,
    gpu_layers: int | None = None,
    kv_cache_type: str | None = None,
    flash_attn: bool | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Callable[[str], None] = lambda msg: None,
    on_row: Callable[[BenchRow], None] = lambda row: None,
    isolate: bool = True,
    spec: ModelSpec | None = None,
) -> BenchReport:
    """Bench `model` (None: the embedded model) in each precision (None: the recommended option, whatever its
    runtime; 'all': every option that fits, in both runtimes). `spec`: the model's spec when the caller resolved
    it already (the CLI does, before probing the hardware)."""
    bench = plan or Plan()
    progress("reading the model")
    if spec is None:
        spec = session.resolve_model(model, revision=revision, trust_remote_code=trust_remote_code)
    warnings: list[str] = []
    calibration = C.load_for(hw, warnings=warnings)
    rec = session.recommend_for_run(
        spec, hw, context=bench.context, prompt_tokens=max(bench.prompt_lengths), calibration=calibration
    )
    plans, early = select_plans(rec, model=model, context=bench.context, precisions=precisions, runtime=runtime)
    report = BenchReport(model=spec.id, source=spec.source, hardware=hw, rows=[], warnings=warnings)
    for row in early:
        report.rows.append(row)
        on_row(row)
    for run_plan in plans:
        warnings.extend(n for n in run_plan.notes if n not in warnings)
        try:
            progress(f"{run_plan.precision} ({run_plan.runtime}): preparing the files")
            artifact = session.fetch(run_plan, revision=revision, allow_pickle=allow_pickle)
            options = session.load_options(
                run_plan, device_map=device_map, max_memory=max_memory, gpu_layers=gpu_layers,
                kv_cache_type=kv_cache_type, flash_attn=flash_attn, trust_remote_code=trust_remote_code,
            )  # fmt: skip
        except KeyboardInterrupt:
            report.rows.append(BenchRow(run_plan.precision, runtime=run_plan.runtime, status="interrupted",
                                        message="stopped by Ctrl-C"))  # fmt: skip
            report.interrupted = True
            break
        except AdvisorError as exc:
            if len(plans) == 1 and not early:  # one option asked for: its own error, in one line
                raise
            row = BenchRow(run_plan.precision, runtime=run_plan.runtime, status="unsupported", message=str(exc),
                           placement=run_plan.placement.label)  # fmt: skip
            report.rows.append(row)
            on_row(row)
            continue
        job = Job(run_plan, artifact, options, hw, bench, calibration, quality)
        try:
            row, runs = bench_in_child(job, progress) if isolate else bench_option(job, progress)
        except KeyboardInterrupt:
            report.rows.append(BenchRow(run_plan.precision, runtime=run_plan.runtime, status="interrupted",
                                        message="stopped by Ctrl-C"))  # fmt: skip
            report.interrupted = True
            break
        _record(row, runs, hw, record, report)
        report.rows.append(row)
        on_row(row)
    if quality:
        scored = [r for r in report.rows if r.perplexity]
        if scored:
            best = max(scored, key=lambda r: P.get(r.precision, spec).quality_rank).perplexity
            for r in scored:
                r.perplexity_ratio = r.perplexity / best
    recorded = record and hw.fingerprint and any(r.recorded for r in report.rows)
    report.calibrated_runs = len(C.runs(hw.fingerprint)) if recorded else 0
    return report


def _record(row: BenchRow, runs: list[C.Run], hw: Hardware, record: bool, report: BenchReport) -> None:
    """Store the row's runs by the one recording rule, or say why not."""
    if not runs or row.status != "ok":
        return
    why = C.why_not_recorded(hw, placement=row.placement, cpu_contention=row.cpu_contention, record=record)
    if why is None:
        try:
            row.recorded = [C.record(r) for r in runs]
        except C.StoreError as exc:  # the measurement stands; only remembering it failed
            report.warnings.append(str(exc))
    elif why != "--no-record" and not why.startswith("the hardware"):
        report.warnings.append(
            f"{row.precision} not recorded for calibration: {why}; rerun `advisor bench` on a quiet machine."
        )
