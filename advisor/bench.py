"""`advisor bench`: load a model, measure it, hold the estimate to the measurement, remember the run.

For each precision: load time; prefill throughput and time to first token at several prompt
lengths; decode tokens/s at several context depths (end-of-sequence ignored), each after a
warm-up and repeated, median and spread; peak memory (process memory sampled in a thread, less
the file pages of a memory-mapped checkpoint; CUDA's allocator peaks on GPU); the bytes the
loaded weights hold; the KV cache bytes after generating. Each precision runs in a fresh child
process, so its peak is its own.
Every figure is set beside advisor's estimate for the same configuration, and the decode runs go
into the calibration store.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advisor import calibration as C
from advisor import hardware as H
from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.errors import AdvisorError, RuntimeLoadError
from advisor.spec import Hardware, ModelSpec

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
    status: str = "ok"  # ok | skipped | unsupported | oom | error | interrupted
    message: str = ""
    placement: str = ""
    load_s: float | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    perplexity: float | None = None
    perplexity_ratio: float | None = None
    recorded: list[int] = field(default_factory=list)
    cpu_contention: float | None = None  # share of the CPU other processes took while measuring

    def get(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "status": self.status,
            "message": self.message,
            "placement": self.placement,
            "load_s": self.load_s,
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


def _prompt_ids(tokenizer, length: int):
    """`length` tokens of the built-in text (repeated as needed), as a 1 x length tensor."""
    import torch

    ids = tokenizer(BUILTIN_TEXT, add_special_tokens=False)["input_ids"]
    reps = -(-length // len(ids))
    return torch.tensor([(ids * reps)[:length]], dtype=torch.long)


def perplexity(loaded, max_tokens: int = 256) -> float:
    """Perplexity of the model on the built-in text (lower is better)."""
    import torch

    ids = _prompt_ids(loaded.tokenizer, min(max_tokens, len(loaded.tokenizer(BUILTIN_TEXT)["input_ids"])))
    ids = ids.to(next(loaded.model.parameters()).device)
    with torch.inference_mode():
        out = loaded.model(ids, labels=ids)
    return float(math.exp(out.loss.float().item()))


def _spread(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else None


def _main_kind(hw: Hardware) -> str:
    return next((d.kind for d in hw.devices if d.kind != "cpu"), "cpu")


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
) -> C.Run:
    """A calibration-store run: decode speed measured for `precision` on `placement`, beside the estimate
    (`step_s` seconds a token and its `basis`, from `S.decode_seconds`). Shared by bench and chat."""
    dev = basis["devices"].get(placement.label.split("+")[0]) or next(iter(basis["devices"].values()))
    prec = P.get(precision)
    return C.Run(
        fingerprint=hw.fingerprint or "",
        model=spec.id,
        precision=precision,
        runtime=prec.runtime,
        kind=prec.kind,
        device_kind=_main_kind(hw),
        placement=placement.label,
        layers=spec.num_layers or 1,
        bytes_per_token=float(sum(basis["bytes_per_token"].values())),
        bandwidth_gbps=float(dev.get("bandwidth_gbps") or 0.0),
        measured_tok_s=measured_tok_s,
        estimated_tok_s=1 / step_s if step_s else None,
        measured={**measured, "kv_elements": basis["bytes_per_token"]["kv_cache"] / M.cache_dtype_bytes(precision)},
        estimated={"basis": basis},
    )


def bench_precision(
    source,
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    plan: Plan,
    *,
    calibration: S.Calibration,
    device_map: Any = None,
    max_memory: dict | None = None,
    trust_remote_code: bool = False,
    quality: bool = False,
    progress: Callable[[str], None] = lambda msg: None,
) -> tuple[BenchRow, list[C.Run]]:
    """Load and measure one precision. Returns the row and the decode runs for the store."""
    from advisor import runtime

    row = BenchRow(precision)
    runs: list[C.Run] = []
    context = max(plan.depths) + plan.new_tokens
    # The decode runs prefill `depth` tokens in one pass: the largest prefill sets the activation peak.
    prompt = max(*plan.prompt_lengths, *plan.depths)
    placement = S.plan(spec, precision, hw, context=context, prompt_tokens=prompt)
    mem_est = M.estimate(spec, precision, context=context, device_kind=_main_kind(hw), prompt_tokens=prompt)
    row.placement = placement.label
    progress(f"{precision}: loading")
    loaded = None
    try:
        with runtime.PeakMemory() as load_mem:
            loaded = runtime.load(
                source, precision, device_map=device_map, max_memory=max_memory, trust_remote_code=trust_remote_code
            )
        row.load_s = loaded.load_seconds
        mapped = runtime.mapped_weight_bytes(loaded.model)  # before warm-up, whose trim hands its garbage back
        row.placement = loaded.placement or row.placement
        row.comparisons.append(Comparison("weights", loaded.weight_bytes, mem_est.weights_bytes, "bytes"))
        tok = loaded.tokenizer

        # Warm-up: kernels, allocator, thread pools; also tells how fast this precision is here.
        progress(f"{precision}: warming up")
        warm = runtime.generate(loaded, _prompt_ids(tok, min(plan.prompt_lengths)), max_new_tokens=8, exact_length=True)
        speed = warm.decode_tok_s or 1.0
        new_tokens = int(min(plan.new_tokens, max(8, speed * plan.seconds_per_run)))

        load_cuda = load_mem.cuda_peaks()  # read before the run's sampler resets torch's peak counters
        # File pages count where they hold weights (a zero-copy load), not where the load left the
        # checkpoint mapped beside quantized copies of it.
        file_pages = load_mem.start_shared + mapped
        with runtime.PeakMemory(baseline_shared=file_pages) as run_mem, H.CpuContention() as contention:
            for length in plan.prompt_lengths:
                progress(f"{precision}: prefill {length} tokens")
                ids = _prompt_ids(tok, length)
                runtime.generate(loaded, ids, max_new_tokens=1, exact_length=True)  # warm this shape
                ttfts = [
                    runtime.generate(loaded, ids, max_new_tokens=1, exact_length=True).ttft_s
                    for _ in range(plan.repeats)
                ]
                est = S.estimate_speed(
                    spec, precision, hw, placement, context=context, prompt_tokens=length, calibration=calibration
                )
                ttft = statistics.median(ttfts)
                row.comparisons.append(Comparison(f"ttft@{length}", ttft, est.ttft_s, "s", _spread(ttfts)))
                row.comparisons.append(
                    Comparison(f"prefill@{length}", length / ttft, est.prefill_tok_s, "tok/s", _spread(ttfts))
                )
            kv_measured = 0
            for depth in plan.depths:
                progress(f"{precision}: decode at depth {depth}")
                ids = _prompt_ids(tok, depth)
                if plan.repeats > 1:
                    runtime.generate(loaded, ids, max_new_tokens=4, exact_length=True)  # warm this shape
                gens = [
                    runtime.generate(loaded, ids, max_new_tokens=new_tokens, exact_length=True)
                    for _ in range(plan.repeats)
                ]
                speeds = [g.decode_tok_s for g in gens]
                mid = depth + new_tokens // 2
                t_est, basis = S.decode_seconds(spec, precision, hw, placement, depth=mid, calibration=calibration)
                measured = statistics.median(speeds)
                row.comparisons.append(
                    Comparison(f"decode@{depth}", measured, 1 / t_est if t_est else None, "tok/s", _spread(speeds))
                )
                kv_measured = gens[-1].kv_bytes
                kv_depth = depth + new_tokens - 1  # the last token is generated, never cached
                if depth == max(plan.depths):
                    kv_est = M.kv_cache_bytes(spec, kv_depth, dtype_bytes=M.cache_dtype_bytes(precision))
                    row.comparisons.append(Comparison("kv_cache", kv_measured, kv_est, "bytes"))
                runs.append(
                    decode_run(
                        spec,
                        precision,
                        hw,
                        placement,
                        step_s=t_est,
                        basis=basis,
                        measured_tok_s=measured,
                        measured={"depth": depth, "new_tokens": new_tokens, "speeds": speeds},
                    )
                )
            if quality:
                progress(f"{precision}: perplexity")
                row.perplexity = perplexity(loaded)
        row.cpu_contention = contention.fraction
        busy = {"cpu_contention": contention.fraction}
        runs = [dataclasses.replace(r, measured={**(r.measured or {}), **busy}) for r in runs]
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
        else:
            # The process's peak over loading and running: what the machine must have free.
            load_peak = load_mem.peak + mapped
            peak = max(load_peak, run_mem.peak)
            row.comparisons.append(Comparison("peak_memory", peak, mem_est.total_bytes, "bytes"))
            row.comparisons.append(Comparison("peak_memory_load", load_peak, None, "bytes"))
        overhead_measured = row.get("peak_memory").measured - loaded.weight_bytes - kv_measured
        row.comparisons.append(Comparison("overhead", overhead_measured, mem_est.overhead_bytes, "bytes"))
    except KeyboardInterrupt:
        row.status, row.message = "interrupted", "stopped by Ctrl-C"
        raise
    except RuntimeLoadError as exc:
        text = str(exc)
        row.status = "oom" if "memory" in text.lower() else "unsupported"
        row.message = text
    except Exception as exc:  # one precision failing must not end the sweep
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            row.status, row.message = "oom", f"out of memory: {str(exc).splitlines()[0]}"
        else:
            row.status = "error"
            row.message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        runtime.free(loaded)
    return row, runs


def gpu_peak(cuda: dict[str, int], nvml: dict[int, int]) -> tuple[int, str]:
    """The GPU memory a run needed: NVML's figure for this process where it tells (CUDA context and
    every pool included, as nvidia-smi shows), else torch's reserved peak plus a typical context."""
    if nvml:
        return sum(nvml.values()), "NVML (this process)"
    return cuda["cuda_max_reserved"] + M.CUDA_CONTEXT, "torch's reserved peak + the CUDA context estimate"


def _child(conn, args: dict) -> None:
    """Runs in a fresh process: bench one precision, report progress and the result through `conn`."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    try:
        row, runs = bench_precision(progress=lambda msg: conn.send(("progress", msg)), **args)
        conn.send(("result", row, runs))
    except BaseException as exc:  # report anything; the parent turns it into a row
        conn.send(("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    finally:
        conn.close()


def bench_in_child(args: dict, progress: Callable[[str], None]) -> tuple[BenchRow, list[C.Run]]:
    """Bench one precision in a spawned process, so its memory peak is its own (a process never gives
    freed memory back to the OS, so a sweep in one process would measure the largest precision's peak
    every time) and a crash or out-of-memory kill ends that row only."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, args), daemon=True)
    proc.start()
    child.close()
    precision = args["precision"]
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
                    return BenchRow(precision, status="error", message=msg[1]), []
            elif not proc.is_alive():
                break
        proc.join(5)
        code = proc.exitcode
        killed = code is not None and code < 0
        status = "oom" if code in (-9, 137) else "error"
        text = "killed (out of memory?)" if killed else f"the measuring process exited with code {code}"
        return BenchRow(precision, status=status, message=text), []
    except KeyboardInterrupt:
        proc.terminate()
        proc.join(5)
        raise
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        parent.close()


def run_bench(
    model: str | None = None,
    precisions: list[str] | None = None,
    *,
    hw: Hardware,
    plan: Plan | None = None,
    record: bool = True,
    quality: bool = False,
    device_map: Any = None,
    max_memory: dict | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Callable[[str], None] = lambda msg: None,
    on_row: Callable[[BenchRow], None] = lambda row: None,
    isolate: bool = True,
) -> BenchReport:
    """Bench `model` (None: the embedded model) in each precision (None: the recommended one; 'all': every
    transformers precision that fits)."""
    from advisor import runtime
    from advisor.recommend import recommend
    from advisor.sources.local import spec_from_folder

    plan = plan or Plan()
    progress("preparing the model")
    source = runtime.prepare(model, revision=revision, allow_pickle=allow_pickle)
    spec = spec_from_folder(source.path, model_id=source.id, trust_remote_code=trust_remote_code)
    spec = dataclasses.replace(spec, source=source.origin)
    warnings: list[str] = []
    calibration = C.load_for(hw, warnings=warnings)
    context = max(plan.depths) + plan.new_tokens
    rec = recommend(
        spec,
        hw,
        context=context,
        prompt_tokens=max(plan.prompt_lengths),
        runtime="transformers",
        calibration=calibration,
    )
    if not precisions:
        if rec.recommended is None:
            raise AdvisorError(f"'{source.id}' does not fit on this machine in any precision: {rec.reason}.")
        wanted = [rec.recommended.precision]
    elif "all" in precisions:
        wanted = list(P.TRANSFORMERS_PRECISIONS)
    else:
        wanted = precisions
    fits = {o.precision: o for o in rec.options}
    report = BenchReport(model=source.id, source=source.origin, hardware=hw, rows=[], warnings=warnings)
    for precision in wanted:
        option = fits.get(precision)
        if option is not None and not option.fits and "all" in (precisions or []):
            row = BenchRow(precision, status="skipped", message="estimated not to fit", placement=option.placement)
            report.rows.append(row)
            on_row(row)
            continue
        args = dict(
            source=source,
            spec=spec,
            precision=precision,
            hw=hw,
            plan=plan,
            calibration=calibration,
            device_map=device_map,
            max_memory=max_memory,
            trust_remote_code=trust_remote_code,
            quality=quality,
        )
        try:
            row, runs = bench_in_child(args, progress) if isolate else bench_precision(progress=progress, **args)
        except KeyboardInterrupt:
            report.rows.append(BenchRow(precision, status="interrupted", message="stopped by Ctrl-C"))
            report.interrupted = True
            break
        busy = row.cpu_contention if row.placement == "cpu" else None
        if record and runs and hw.source == "probe" and H.too_contended(busy):
            report.warnings.append(
                f"{precision} not recorded for calibration: other processes used {busy:.0%} of the CPU while it "
                "was measured, so its speeds read low; rerun `advisor bench` on a quiet machine."
            )
        elif record and runs and hw.source == "probe":
            try:
                row.recorded = [C.record(r) for r in runs]
            except C.StoreError as exc:  # the measurement stands; only remembering it failed
                report.warnings.append(str(exc))
        report.rows.append(row)
        on_row(row)
    if quality:
        scored = [r for r in report.rows if r.perplexity]
        if scored:
            best = max(scored, key=lambda r: P.get(r.precision).quality_rank).perplexity
            for r in scored:
                r.perplexity_ratio = r.perplexity / best
    recorded = record and hw.fingerprint and any(r.recorded for r in report.rows)
    report.calibrated_runs = len(C.runs(hw.fingerprint)) if recorded else 0
    return report
