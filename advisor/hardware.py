"""Hardware probe: measure the machine instead of looking it up.

What is measured, and how
-------------------------
* CPU + RAM: totals from psutil; read bandwidth from a matrix-vector product (``torch.mv``,
  what a decode step does with every weight matrix) over a weight matrix several times the
  last-level cache (>= 256 MiB), with torch's intra-op threads (one per physical core by
  default, which is what a torch runtime will use). Figure = bytes of the matrix / median time,
  in fp32 and bf16. The fp32 figure is the CPU Device's ``bandwidth_gbps``, the bf16 one is in
  ``details["bandwidth_gbps_by_dtype"]``. fp32 (and bf16) GEMM throughput gives
  ``matmul_tflops`` for prefill estimates.
* NVIDIA GPUs via NVML (nvidia-ml-py, imported lazily): name, memory, bus width and max memory
  clock (-> theoretical bandwidth), PCIe link, power limit, compute capability, driver.
* GPUs torch can use (CUDA or ROCm): matrix-vector read bandwidth, device-to-device copy
  bandwidth and 16-bit GEMM TFLOPS, timed with CUDA events. Apple MPS: unified memory,
  ``torch.mps.recommended_max_memory()`` and the same matrix-vector bandwidth.
* Disk: cold sequential read throughput of the volume holding the Hugging Face cache
  (see :func:`measure_disk_read`).

GB means 1e9 bytes everywhere. torch is only imported inside functions.

The profile is cached at ``cache_dir()/hardware.json`` (see :func:`load_or_probe`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from advisor.engines.memwatch import _nvml_call, nvml_process_memory  # noqa: F401  (re-exported)
from advisor.errors import AdvisorError, HardwareProbeError
from advisor.fileio import MAX_STATE_BYTES, NotRegularFile, decode_json, read_bytes
from advisor.hf import hub_cache_dir
from advisor.paths import cache_dir, set_aside
from advisor.spec import Device, Hardware
from advisor.textutil import first_line

CACHE_FILE = "hardware.json"
SCHEMA = 5  # bump when the meaning of a stored figure changes: older caches are re-measured

MiB = 2**20
GiB = 2**30
GB = 1e9

# Quick-probe sizes (the careful benchmark in benchmarks/bandwidth.py uses bigger ones).
CPU_MATVEC_MIN_BYTES = 256 * MiB
CPU_MATVEC_MAX_BYTES = 1 * GiB
CPU_MATVEC_LLC_MULTIPLE = 8  # the matrix is at least this many times the last-level cache
CPU_MATVEC_COLS = 4096  # a typical hidden size; rows follow from the byte size
CPU_MATVEC_REPS = 9
CPU_GEMM_TARGET_S = 0.05  # seconds per GEMM in the quick probe (n is chosen to match)
CPU_GEMM_REPS = 3
CONTENTION_NOTE = 0.15  # note when other processes took this share of the CPU during the probe

GPU_MATVEC_BYTES = 1 * GiB
GPU_MATVEC_REPS = 20
GPU_GEMM_N = 8192
GPU_GEMM_REPS = 10

DISK_PROBE_BYTES = 256 * MiB
DISK_CHUNK_BYTES = 8 * MiB
DISK_WRITE_BUDGET_S = 1.0
DISK_READ_BUDGET_S = 0.6
DISK_READ_PASSES = 3  # cold passes (page cache dropped before each); the median is reported

# NVML reports the memory clock such that peak bandwidth = bus_width / 8 * clock * 2: the "2"
# is the double data rate (two transfers per reported clock). This holds for HBM2/2e/3/3e and for
# GDDR6/6X as NVML reports them (A100 40GB: 5120 bit x 1215 MHz -> 1555 GB/s; H100 SXM: 5120 bit
# x 2619 MHz -> 3352 GB/s; RTX 4090: 384 bit x 10501 MHz -> 1008 GB/s; all match the datasheets).
DDR_FACTOR = 2


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _err(exc: BaseException) -> str:
    """A one-line description of an exception that never raises (NVMLError.__str__ can)."""
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text and text != type(exc).__name__ else type(exc).__name__


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _median_gbps(nbytes: float, times: list[float]) -> float:
    return nbytes / statistics.median(times) / GB


# --------------------------------------------------------------------------------------------
# CPU identity
# --------------------------------------------------------------------------------------------


def cpu_model_name() -> str:
    """The CPU model, from /proc/cpuinfo (Linux), sysctl (macOS) or `platform` (elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and value.strip():
                fields.setdefault(key.strip().lower(), value.strip())
        for key in ("model name", "cpu model", "model", "hardware", "cpu"):
            # "model" is a number on x86 (caught by "model name" first); a board name on ARM.
            if key in fields and not fields[key].isdigit():
                return fields[key]
        with contextlib.suppress(OSError):
            model = Path("/sys/firmware/devicetree/base/model").read_text(errors="replace")
            if model.strip("\x00 \n"):
                return model.strip("\x00 \n")
    elif sys.platform == "darwin":
        import subprocess

        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def last_level_cache_bytes() -> int | None:
    """Total size of the last-level cache (all instances, e.g. one L3 per CCX), from sysfs."""
    root = Path("/sys/devices/system/cpu")
    if not root.is_dir():
        return None
    best_level = -1
    per_level: dict[int, dict[str, int]] = {}
    for cache in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            ctype = (cache / "type").read_text().strip()
            if ctype == "Instruction":
                continue
            level = int((cache / "level").read_text())
            size_text = (cache / "size").read_text().strip().upper()
            shared = (cache / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        mult = {"K": 1024, "M": MiB, "G": GiB}.get(size_text[-1:], 1)
        digits = size_text.rstrip("KMG")
        if not digits.isdigit():
            continue
        per_level.setdefault(level, {})[shared] = int(digits) * mult
        best_level = max(best_level, level)
    if best_level < 0:
        return None
    return sum(per_level[best_level].values())


def _physical_cores() -> int | None:
    with contextlib.suppress(Exception):
        return psutil.cpu_count(logical=False)
    return None


def _logical_cores() -> int | None:
    with contextlib.suppress(Exception):
        return psutil.cpu_count(logical=True)
    return os.cpu_count()


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------


def _torch_dist_version() -> str | None:
    """The installed torch version (e.g. '2.13.0+cu128') without importing torch."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _amd_gpu_ids() -> list[str]:
    """PCI ids of AMD display devices from sysfs (cheap; identifies ROCm machines)."""
    ids = []
    for card in sorted(Path("/sys/class/drm").glob("card[0-9]*")):
        dev = card / "device"
        try:
            vendor = (dev / "vendor").read_text().strip()
            if vendor != "0x1002":
                continue
            ident = (dev / "device").read_text().strip()
            uid = (dev / "unique_id").read_text().strip() if (dev / "unique_id").exists() else ""
        except OSError:
            continue
        ids.append(f"{vendor}:{ident}:{uid}")
    return ids


def _fingerprint_inputs() -> dict[str, Any]:
    gpus, _ = _nvml_identity()
    try:
        ram = psutil.virtual_memory().total
    except Exception:
        ram = 0
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu_model_name(),
        "physical_cores": _physical_cores(),
        "logical_cores": _logical_cores(),
        # Rounded: some VMs report a few MiB more or less from one boot to the next.
        "ram_gib": round(ram / GiB),
        "nvidia_gpus": gpus,
        "amd_gpus": _amd_gpu_ids() if sys.platform.startswith("linux") else [],
        # A CPU-only torch replaced by a CUDA one changes what can be measured.
        "torch": _torch_dist_version(),
    }


def machine_fingerprint() -> str:
    """A short hash of what identifies this machine: CPU model, cores, RAM, GPU names and UUIDs.

    Cheap (no torch import): it is computed on every `load_or_probe` to validate the cache.
    """
    blob = json.dumps(_fingerprint_inputs(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------------


def _nvml_identity() -> tuple[list[list[str]], str | None]:
    """[[name, uuid], ...] of NVIDIA GPUs, or ([], reason) when NVML cannot be used."""
    if sys.platform == "darwin":
        return [], "macOS"
    try:
        import pynvml
    except ImportError as exc:
        return [], _err(exc)
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return [], _err(exc)
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                [
                    _text(_nvml_call(pynvml.nvmlDeviceGetName, h, default="?")),
                    _text(_nvml_call(pynvml.nvmlDeviceGetUUID, h, default="")),
                ]
            )
        return out, None
    except Exception as exc:
        return [], _err(exc)
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def probe_nvml() -> tuple[list[dict[str, Any]], list[str]]:
    """Every NVIDIA GPU NVML sees (NVML index order), and notes. Never raises.

    Each entry: index, name, uuid, pci_bus_id, memory_total_bytes, memory_free_bytes,
    memory_bus_width_bits, max_memory_clock_mhz, theoretical_bandwidth_gbps, pcie_gen,
    pcie_width, pcie_gen_max, pcie_width_max, power_limit_w, compute_capability,
    driver_version, cuda_driver_version, mig_enabled (missing figures are None).
    """
    notes: list[str] = []
    if sys.platform == "darwin":
        return [], notes
    try:
        import pynvml
    except ImportError as exc:
        return [], [f"NVML not available: nvidia-ml-py is not installed ({_err(exc)}); NVIDIA GPUs not probed"]
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        why = _err(exc)
        if "LibraryNotFound" in why or "DriverNotLoaded" in why:
            why = why.split(": ", 1)[-1]
            notes.append(f"NVML not available: {why} (no NVIDIA driver: no NVIDIA GPU can be used)")
        else:
            notes.append(f"NVML not available: {why}")
        return [], notes
    gpus: list[dict[str, Any]] = []
    try:
        driver = _nvml_call(pynvml.nvmlSystemGetDriverVersion)
        cuda_driver = _nvml_call(pynvml.nvmlSystemGetCudaDriverVersion)
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:
            notes.append(f"NVML could not count GPUs: {_err(exc)}")
            count = 0
        if count == 0 and not notes:
            notes.append("NVML found no NVIDIA GPU")
        for i in range(count):
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:
                notes.append(f"NVML could not open GPU {i}: {_err(exc)}")
                continue
            gpus.append(_nvml_device(pynvml, h, i, driver, cuda_driver, notes))
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return gpus, notes


# Usable GB/s per lane after line encoding (8b/10b up to gen 2, 128b/130b from gen 3; gen 6 FLIT
# mode ~ 242/256), one direction.
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


def pcie_theoretical_gbps(gen: int | None, width: int | None) -> float | None:
    """One-direction PCIe bandwidth of a link, GB/s (x16 gen 4: 31.5)."""
    if not gen or not width or gen not in PCIE_LANE_GBPS:
        return None
    return round(PCIE_LANE_GBPS[gen] * width, 1)


def _nvml_device(pynvml, h, i: int, driver, cuda_driver, notes: list[str]) -> dict[str, Any]:
    call = _nvml_call
    mem = call(pynvml.nvmlDeviceGetMemoryInfo, h)
    bus = call(pynvml.nvmlDeviceGetMemoryBusWidth, h)
    clock = call(pynvml.nvmlDeviceGetMaxClockInfo, h, getattr(pynvml, "NVML_CLOCK_MEM", 2))
    theoretical = bus / 8 * clock * 1e6 * DDR_FACTOR / GB if bus and clock else None
    pci = call(pynvml.nvmlDeviceGetPciInfo, h)
    power_mw = call(pynvml.nvmlDeviceGetPowerManagementLimit, h) or call(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    cc = call(pynvml.nvmlDeviceGetCudaComputeCapability, h)
    mig = call(pynvml.nvmlDeviceGetMigMode, h)
    name = _text(call(pynvml.nvmlDeviceGetName, h, default=f"NVIDIA GPU {i}"))
    entry = {
        "index": i,
        "name": name,
        "uuid": _text(call(pynvml.nvmlDeviceGetUUID, h, default="")) or None,
        "pci_bus_id": _text(pci.busId) if pci is not None and hasattr(pci, "busId") else None,
        "memory_total_bytes": int(mem.total) if mem is not None else None,
        "memory_free_bytes": int(mem.free) if mem is not None else None,
        "memory_bus_width_bits": bus,
        "max_memory_clock_mhz": clock,
        "theoretical_bandwidth_gbps": round(theoretical, 1) if theoretical else None,
        "pcie_gen": call(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "pcie_width": call(pynvml.nvmlDeviceGetCurrPcieLinkWidth, h),
        "pcie_gen_max": call(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "pcie_width_max": call(pynvml.nvmlDeviceGetMaxPcieLinkWidth, h),
        "pcie_theoretical_gbps": None,
        "power_limit_w": round(power_mw / 1000, 1) if power_mw else None,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "driver_version": _text(driver) if driver else None,
        "cuda_driver_version": (
            f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}" if isinstance(cuda_driver, int) else None
        ),
        "mig_enabled": bool(mig[0]) if mig else None,
    }
    # The current link often idles at gen 1; the maximum the device and slot allow is what a
    # transfer gets.
    entry["pcie_theoretical_gbps"] = pcie_theoretical_gbps(
        entry["pcie_gen_max"] or entry["pcie_gen"], entry["pcie_width_max"] or entry["pcie_width"]
    )
    if mem is None:
        notes.append(f"NVML could not read the memory of GPU {i} ({name})")
    if entry["mig_enabled"]:
        notes.append(f"GPU {i} ({name}) is in MIG mode: NVML figures are for the whole GPU")
    return entry


# --------------------------------------------------------------------------------------------
# CPU measurements
# --------------------------------------------------------------------------------------------


def _alloc_cpu_buffer(torch, nbytes: int):
    """A zeroed byte tensor backed by an anonymous mmap with MADV_HUGEPAGE where available.

    Huge pages make the first touch ~10x cheaper (fewer page faults), which keeps the quick probe
    short and its figure steady; the memory is freed when the tensor and the map are dropped.
    """
    import mmap

    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mm = mmap.mmap(-1, nbytes)
            with contextlib.suppress(OSError):
                mm.madvise(mmap.MADV_HUGEPAGE)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "non-writable buffer" does not apply to mmap
                buf = torch.frombuffer(mm, dtype=torch.uint8)
            return buf, mm
        except (OSError, ValueError, TypeError):
            pass
    return torch.empty(nbytes, dtype=torch.uint8), None


class CpuContention:
    """How much CPU other processes (and the hypervisor: steal) took while we measured.

    `fraction` = (busy CPU time of the whole machine - this process's CPU time, its finished children's
    included) / (wall time x logical CPUs): 0 on a quiet machine, 0.5 when something else kept one of two
    cores busy. A measurement taken at 0.2 or more likely reads low.
    """

    def __init__(self) -> None:
        self.fraction: float | None = None

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def _own(self) -> float:
        t = self._proc.cpu_times()  # user, system, and the user and system time of children waited for
        return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)

    def __enter__(self) -> CpuContention:
        try:
            self._proc = psutil.Process()
            self._own0 = self._own()
            self._busy0 = self._busy()
            self._t0 = time.perf_counter()
        except Exception:
            self._proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        try:
            wall = time.perf_counter() - self._t0
            own = self._own() - self._own0
            busy = self._busy() - self._busy0
            cpus = psutil.cpu_count() or 1
        except Exception:
            return
        if wall > 0:
            self.fraction = round(min(1.0, max(0.0, (busy - own) / (wall * cpus))), 3)


def cpu_matvec_size(ram_available: int | None = None, llc: int | None = None) -> int:
    """Bytes of the quick probe's weight matrix: >= 256 MiB and >= 8x LLC, <= 1 GiB and <= RAM/4."""
    llc = last_level_cache_bytes() if llc is None else llc
    size = max(CPU_MATVEC_MIN_BYTES, CPU_MATVEC_LLC_MULTIPLE * (llc or 0))
    size = min(size, CPU_MATVEC_MAX_BYTES)
    if ram_available:
        size = min(size, max(64 * MiB, ram_available // 4))
    return size


def measure_cpu_bandwidth(
    nbytes: int | None = None,
    reps: int = CPU_MATVEC_REPS,
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    cols: int = CPU_MATVEC_COLS,
    stream: bool = False,
) -> dict[str, Any]:
    """Read bandwidth (GB/s) of `torch.mv(W, x)` on the CPU, per dtype, all torch threads.

    W is one buffer of `nbytes` (viewed as fp32 or bf16, filled with 0.5 / 0.0 - no denormals),
    x a vector of `cols`. Figure = bytes of W / median time over `reps` timed runs after one
    warm-up. With `stream`, also the plain streaming read of `W.sum()` (benchmark only: it swings
    from ~48 to ~85 GB/s run to run on the 2-core test VM). Returns {"gbps": {dtype: ..},
    "stream_gbps": .., "bytes": .., "threads": .., "times_s": {dtype: [...]}}.
    """
    import torch

    if nbytes is None:
        nbytes = cpu_matvec_size(psutil.virtual_memory().available)
    row_bytes = cols * 4
    nbytes = max(row_bytes, nbytes // row_bytes * row_bytes)
    threads = torch.get_num_threads()
    torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    buf, mm = _alloc_cpu_buffer(torch, nbytes)
    try:
        buf.view(torch.float32).fill_(0.5)  # touch every page before timing
        out: dict[str, Any] = {"gbps": {}, "times_s": {}, "bytes": nbytes, "threads": threads}
        for name in dtypes:
            dt = torch_dtypes[name]
            w = buf.view(dt).view(-1, cols)
            x = torch.ones(cols, dtype=dt)
            y = torch.mv(w, x)  # warm-up (also allocates y)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.mv(w, x, out=y)
                times.append(time.perf_counter() - t0)
            out["gbps"][name] = round(_median_gbps(nbytes, times), 2)
            out["times_s"][name] = times
        if stream:
            w = buf.view(torch.float32)
            w.sum()
            times = []
            for _ in range(max(3, reps // 2)):
                t0 = time.perf_counter()
                w.sum()
                times.append(time.perf_counter() - t0)
            out["stream_gbps"] = round(_median_gbps(nbytes, times), 2)
        return out
    finally:
        del buf
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()


def measure_cpu_matmul(
    n: int | None = None, reps: int = CPU_GEMM_REPS, dtype: str = "fp32", target_s: float = CPU_GEMM_TARGET_S
) -> float:
    """Dense GEMM throughput (TFLOPS) of an n x n @ n x n product on the CPU: 2 n^3 / median time.

    Without `n`, a 1024 x 1024 warm-up picks n (a multiple of 256, 1024..8192) so that one
    product takes about `target_s`: big enough to keep every core busy, short enough for the probe.
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if n is None:
        a = torch.rand(1024, 1024).to(dt)
        a @ a
        t0 = time.perf_counter()
        a @ a
        t1024 = max(time.perf_counter() - t0, 1e-6)
        n = int(1024 * (target_s / t1024) ** (1 / 3)) // 256 * 256
        n = min(8192, max(1024, n))
    a = torch.rand(n, n).to(dt)
    b = torch.rand(n, n).to(dt)
    c = a @ b  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e12


def probe_runtimes() -> bool:
    """Whether the probe times the runtimes' step costs (ADVISOR_PROBE_RUNTIMES=0 skips it: the estimates then use
    the tables' defaults; the test suite sets it so that each isolated cache does not re-time them)."""
    return os.environ.get("ADVISOR_PROBE_RUNTIMES", "1").strip() not in ("0", "false", "no", "off")


def measure_runtime_costs(notes: list[str]) -> dict[str, Any]:
    """Step costs of each runtime that can run here on this CPU (see `advisor.runtime_costs`): transformers in
    this process (torch is loaded), llama.cpp in a child process."""
    out: dict[str, Any] = {}
    try:
        from advisor.runtime_costs import measure_transformers

        out["transformers"] = measure_transformers(notes=notes)
    except Exception as exc:  # a torch build without a dtype, a transformers change
        notes.append(f"transformers step costs not measured ({_err(exc)}): its estimates use default costs")
    try:
        from advisor.engines import llamacpp
        from advisor.runtime_costs import measure_llamacpp

        if llamacpp.installed():
            with tempfile.TemporaryDirectory(prefix="advisor-probe-") as tmp:
                costs, why = measure_llamacpp(Path(tmp))
            if costs:
                stream = costs.pop("stream", None)
                out["llama.cpp"] = costs
                if stream:
                    out["llama.cpp stream"] = stream  # not a tensor type: the cost of weights read from memory
            elif why:
                notes.append(f"llama.cpp step costs not measured: {why}")
    except Exception as exc:
        notes.append(f"llama.cpp step costs not measured ({_err(exc)}): its estimates use default costs")
    return out


def _cpu_device(notes: list[str], ram_total: int, ram_available: int) -> Device:
    details: dict[str, Any] = {}
    bandwidth = None
    matmul = None
    started = time.perf_counter()
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        notes.append(f"torch is not installed ({_err(exc)}): CPU bandwidth not measured")
    else:
        llc = last_level_cache_bytes()
        details["llc_bytes"] = llc
        contention = CpuContention()
        with contention:
            try:
                bw = measure_cpu_bandwidth(cpu_matvec_size(ram_available, llc))
            except Exception as exc:  # (MemoryError, RuntimeError from torch)
                notes.append(f"CPU bandwidth measurement failed: {_err(exc)}")
            else:
                bandwidth = bw["gbps"].get("fp32")
                details["bandwidth_gbps_by_dtype"] = dict(bw["gbps"])
                details["bandwidth_method"] = (
                    f"torch.mv over a {bw['bytes'] / MiB:.0f} MiB matrix, {bw['threads']} threads, "
                    f"median of {CPU_MATVEC_REPS}"
                )
                details["threads"] = bw["threads"]
            try:
                matmul = round(measure_cpu_matmul(), 3)
                by_dtype = {"fp32": matmul}
                with contextlib.suppress(Exception):
                    by_dtype["bf16"] = round(measure_cpu_matmul(dtype="bf16"), 3)
                details["matmul_tflops_by_dtype"] = by_dtype
            except Exception as exc:
                notes.append(f"CPU matmul measurement failed: {_err(exc)}")
            if probe_runtimes():
                details["runtime_costs"] = measure_runtime_costs(notes)
        details["cpu_contention"] = contention.fraction
        if contention.fraction is not None and contention.fraction >= CONTENTION_NOTE:
            notes.append(
                f"Other processes used {contention.fraction:.0%} of the CPU while it was measured: "
                "the CPU bandwidth and TFLOPS may read low; re-measure on a quiet machine"
            )
    details["measure_seconds"] = round(time.perf_counter() - started, 2)
    return Device(
        kind="cpu",
        name=cpu_model_name(),
        memory_bytes=ram_total,
        bandwidth_gbps=bandwidth,
        bandwidth_source="measured" if bandwidth else "unknown",
        free_bytes=ram_available,
        matmul_tflops=matmul,
        matmul_source="measured" if matmul else "unknown",
        index=0,
        details=details,
    )


# --------------------------------------------------------------------------------------------
# GPU measurements (CUDA / ROCm / MPS)
# --------------------------------------------------------------------------------------------


def _cuda_time(torch, fn, reps: int) -> list[float]:
    """Seconds per call of fn on the current CUDA device, timed with events, after 2 warm-ups."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return times


def measure_cuda_device(
    index: int, matvec_bytes: int = GPU_MATVEC_BYTES, reps: int = GPU_MATVEC_REPS
) -> dict[str, Any]:
    """Measured figures for torch device cuda:index (CUDA or ROCm).

    - matvec_gbps: bytes of a 16-bit weight matrix / median time of torch.mv (a decode step);
    - copy_gbps: 2 x bytes / median time of a device-to-device copy (read + write);
    - h2d_gbps: bytes / median time of a pinned host-to-device copy (PCIe or C2C link);
    - matmul_tflops: 2 n^3 / median time of an n x n bf16 (fp16 where bf16 is unsupported) GEMM.
    Every buffer is at most a quarter of the free memory.
    """
    import torch

    dev = torch.device("cuda", index)
    out: dict[str, Any] = {}
    with torch.cuda.device(dev):
        free, _total = torch.cuda.mem_get_info(dev)
        cols = 8192
        nbytes = min(matvec_bytes, free // 4)
        rows = max(1, nbytes // (cols * 2))
        nbytes = rows * cols * 2
        try:
            w = torch.full((rows, cols), 0.5, dtype=torch.float16, device=dev)
            x = torch.ones(cols, dtype=torch.float16, device=dev)
            y = torch.empty(rows, dtype=torch.float16, device=dev)
            times = _cuda_time(torch, lambda: torch.mv(w, x, out=y), reps)
            out["matvec_gbps"] = round(_median_gbps(nbytes, times), 1)
            dst = torch.empty_like(w)
            times = _cuda_time(torch, lambda: dst.copy_(w), reps)
            out["copy_gbps"] = round(_median_gbps(2 * nbytes, times), 1)
            out["matvec_bytes"] = nbytes
            w = x = y = dst = None  # free before the next test
        finally:
            torch.cuda.empty_cache()
        with contextlib.suppress(Exception):  # pinned memory can be unavailable (containers)
            out["h2d_gbps"] = round(_measure_h2d(torch, dev, min(256 * MiB, free // 8)), 1)
        torch.cuda.empty_cache()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        n = GPU_GEMM_N
        while n > 1024 and 3 * n * n * 2 > free // 4:
            n //= 2
        try:
            a = torch.randn(n, n, dtype=dtype, device=dev)
            b = torch.randn(n, n, dtype=dtype, device=dev)
            c = torch.empty(n, n, dtype=dtype, device=dev)
            times = _cuda_time(torch, lambda: torch.matmul(a, b, out=c), GPU_GEMM_REPS)
            out["matmul_tflops"] = round(2 * n**3 / statistics.median(times) / 1e12, 1)
            out["matmul_dtype"] = "bf16" if dtype == torch.bfloat16 else "fp16"
            out["matmul_n"] = n
            a = b = c = None
        finally:
            torch.cuda.empty_cache()
    return out


def _measure_h2d(torch, dev, nbytes: int) -> float:
    """Host-to-device copy from pinned memory (what offloading streams over PCIe), GB/s."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    target = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    times = _cuda_time(torch, lambda: target.copy_(host, non_blocking=True), 5)
    return _median_gbps(nbytes, times)


def measure_mps(matvec_bytes: int = 512 * MiB, reps: int = GPU_MATVEC_REPS) -> dict[str, Any]:
    """Measured figures for Apple MPS: fp16 torch.mv read bandwidth and fp16 GEMM TFLOPS.

    MPS has no event timer in every torch version: each figure is the wall time of `reps` calls
    bracketed by torch.mps.synchronize(), divided by reps (a mean, not a median).
    """
    import torch

    dev = torch.device("mps")
    cols = 8192
    rows = max(1, matvec_bytes // (cols * 2))
    nbytes = rows * cols * 2
    out: dict[str, Any] = {}

    def timed(fn, n_reps):
        fn()
        torch.mps.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_reps):
            fn()
        torch.mps.synchronize()
        return (time.perf_counter() - t0) / n_reps

    try:
        w = torch.full((rows, cols), 0.5, dtype=torch.float16, device=dev)
        x = torch.ones(cols, dtype=torch.float16, device=dev)
        out["matvec_gbps"] = round(nbytes / timed(lambda: torch.mv(w, x), reps) / GB, 1)
        out["matvec_bytes"] = nbytes
        w = x = None
        n = 4096
        a = torch.randn(n, n, dtype=torch.float16, device=dev)
        b = torch.randn(n, n, dtype=torch.float16, device=dev)
        out["matmul_tflops"] = round(2 * n**3 / timed(lambda: a @ b, 10) / 1e12, 2)
        out["matmul_dtype"] = "fp16"
        a = b = None
    finally:
        with contextlib.suppress(Exception):
            torch.mps.empty_cache()
    return out


def _parse_bus_id(text: str | None) -> tuple[int, int, int] | None:
    """NVML's "00000000:01:00.0" -> (domain, bus, device)."""
    try:
        domain, bus, rest = (text or "").split(":")
        return int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
    except ValueError:
        return None


def _match_nvml(props, torch_index: int, nvml_gpus: list[dict[str, Any]], same_order: bool):
    """The NVML entry for a torch CUDA device: by UUID, else PCI bus id, else position."""
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        key = str(uuid).lower().removeprefix("gpu-")
        for g in nvml_gpus:
            if g.get("uuid") and g["uuid"].lower().removeprefix("gpu-") == key:
                return g
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        want = (getattr(props, "pci_domain_id", None), bus, getattr(props, "pci_device_id", None))
        for g in nvml_gpus:
            have = _parse_bus_id(g.get("pci_bus_id"))
            if have and all(w is None or w == h for w, h in zip(want, have, strict=True)):
                return g
    if same_order and torch_index < len(nvml_gpus):
        return nvml_gpus[torch_index]
    return None


def _nvml_details(g: dict[str, Any] | None) -> dict[str, Any]:
    if not g:
        return {}
    keys = (
        "uuid", "pci_bus_id", "pcie_gen", "pcie_width", "pcie_gen_max", "pcie_width_max", "pcie_theoretical_gbps",
        "power_limit_w", "compute_capability", "driver_version", "cuda_driver_version",
        "memory_bus_width_bits", "max_memory_clock_mhz", "mig_enabled",
    )  # fmt: skip
    d = {k: g.get(k) for k in keys if g.get(k) is not None}
    d["nvml_index"] = g["index"]
    return d


def _nvml_only_devices(nvml_gpus: list[dict[str, Any]]) -> list[Device]:
    """GPUs NVML sees but torch cannot use: driver figures only (theoretical bandwidth)."""
    devices = []
    for g in nvml_gpus:
        theo = g.get("theoretical_bandwidth_gbps")
        devices.append(
            Device(
                kind="cuda",
                name=g["name"],
                memory_bytes=g.get("memory_total_bytes") or 0,
                bandwidth_gbps=theo,
                bandwidth_source="driver" if theo else "unknown",
                free_bytes=g.get("memory_free_bytes"),
                matmul_tflops=None,
                matmul_source="unknown",
                index=g["index"],
                theoretical_bandwidth_gbps=theo,
                details=_nvml_details(g) | {"measured": False},
            )
        )
    return devices


def _torch_gpu_devices(nvml_gpus: list[dict[str, Any]], notes: list[str], measure: bool) -> list[Device] | None:
    """Devices torch can use (cuda/rocm or mps), or None when torch sees no accelerator."""
    try:
        import torch
    except ImportError:
        return None
    devices: list[Device] = []
    try:
        cuda_ok = torch.cuda.is_available()
    except Exception as exc:
        notes.append(f"torch could not query CUDA: {_err(exc)}")
        cuda_ok = False
    if cuda_ok:
        hip = getattr(torch.version, "hip", None)
        count = torch.cuda.device_count()
        # Position is a safe last resort only when torch sees every GPU in NVML's (PCI) order:
        # CUDA's default order is fastest-first, which equals PCI order for identical GPUs.
        same_order = (
            not os.environ.get("CUDA_VISIBLE_DEVICES")
            and count == len(nvml_gpus)
            and (os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" or len({g.get("name") for g in nvml_gpus}) <= 1)
        )
        matched_uuids = set()
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            g = None if hip else _match_nvml(props, i, nvml_gpus, same_order)
            if g is not None:
                matched_uuids.add(g.get("uuid"))
            details = _nvml_details(g)
            details["backend"] = "rocm" if hip else "cuda"
            if hip:
                details["gcn_arch"] = getattr(props, "gcnArchName", None)
                details["hip_version"] = hip
            else:
                details.setdefault("compute_capability", f"{props.major}.{props.minor}")
                details["cuda_runtime_version"] = torch.version.cuda
            details["multiprocessors"] = getattr(props, "multi_processor_count", None)
            details["l2_cache_bytes"] = getattr(props, "L2_cache_size", None)
            klass = table_device_class(props.name)
            if klass:
                details["device_class"] = klass
            try:
                free, total = torch.cuda.mem_get_info(i)
            except Exception:
                free, total = (g or {}).get("memory_free_bytes"), props.total_memory
            theo = (g or {}).get("theoretical_bandwidth_gbps")
            bandwidth, bw_source = (theo, "driver") if theo else (None, "unknown")
            matmul, mm_source = None, "unknown"
            if measure:
                try:
                    m = measure_cuda_device(i)
                except Exception as exc:  # (OOM, busy GPU, driver error)
                    notes.append(f"Could not measure cuda:{i} ({props.name}): {_err(exc)}")
                else:
                    bandwidth, bw_source = m["matvec_gbps"], "measured"
                    matmul, mm_source = m.get("matmul_tflops"), "measured" if m.get("matmul_tflops") else "unknown"
                    details["bandwidth_gbps_by_method"] = {"matvec_fp16": m["matvec_gbps"], "d2d_copy": m["copy_gbps"]}
                    details["matmul_dtype"] = m.get("matmul_dtype")
                    if m.get("h2d_gbps"):
                        details["pcie_gbps"] = m["h2d_gbps"]  # measured host-to-device, pinned
                    if theo:
                        details["bandwidth_efficiency"] = round(m["matvec_gbps"] / theo, 3)
            devices.append(
                Device(
                    kind="cuda",
                    name=(g or {}).get("name") or props.name,
                    memory_bytes=int((g or {}).get("memory_total_bytes") or total),
                    bandwidth_gbps=bandwidth,
                    bandwidth_source=bw_source,
                    free_bytes=int(free) if free is not None else None,
                    matmul_tflops=matmul,
                    matmul_source=mm_source,
                    index=i,
                    theoretical_bandwidth_gbps=theo,
                    details={k: v for k, v in details.items() if v is not None},
                )
            )
        hidden = [g for g in nvml_gpus if g.get("uuid") not in matched_uuids]
        if hidden and not hip and not any(g.get("mig_enabled") for g in nvml_gpus):
            names = ", ".join(f"{g['index']}: {g['name']}" for g in hidden)
            notes.append(f"NVML sees GPUs torch does not use (CUDA_VISIBLE_DEVICES?): {names}")
        return devices
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        ram = psutil.virtual_memory()
        recommended = None
        with contextlib.suppress(Exception):
            recommended = int(torch.mps.recommended_max_memory())
        details: dict[str, Any] = {
            "backend": "mps",
            "unified_memory_bytes": ram.total,
            "recommended_max_memory_bytes": recommended,
        }
        bandwidth = matmul = None
        if measure:
            try:
                m = measure_mps()
            except Exception as exc:
                notes.append(f"Could not measure mps: {_err(exc)}")
            else:
                bandwidth, matmul = m.get("matvec_gbps"), m.get("matmul_tflops")
                details["matmul_dtype"] = m.get("matmul_dtype")
        memory = recommended or ram.total
        devices.append(
            Device(
                kind="mps",
                name=cpu_model_name(),
                memory_bytes=memory,
                bandwidth_gbps=bandwidth,
                bandwidth_source="measured" if bandwidth else "unknown",
                free_bytes=min(memory, ram.available),
                matmul_tflops=matmul,
                matmul_source="measured" if matmul else "unknown",
                index=0,
                details={k: v for k, v in details.items() if v is not None},
            )
        )
        notes.append("Apple unified memory: the GPU and the CPU share the same RAM")
        return devices
    return None


# --------------------------------------------------------------------------------------------
# Disk
# --------------------------------------------------------------------------------------------


def _existing_dir(path: Path) -> Path:
    path = path.absolute()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


DISK_PROBE_PREFIX = ".advisor-disk-probe-"


def _remove_stale_probe_files(directory: Path, older_than_s: float = 3600) -> None:
    """Delete test files a killed probe left behind: ours only (the prefix), those whose process is gone (the pid
    in the name), or, for names without one, those over an hour old."""
    now = time.time()
    for leftover in directory.glob(f"{DISK_PROBE_PREFIX}*.tmp"):
        with contextlib.suppress(OSError, ValueError):
            pid = leftover.name[len(DISK_PROBE_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid():
                if not psutil.pid_exists(int(pid)):
                    leftover.unlink()
            elif not pid.isdigit() and now - leftover.stat().st_mtime > older_than_s:
                leftover.unlink()


@contextlib.contextmanager
def _exit_on_signals():
    """SIGTERM and SIGHUP end the block as an exception (so its `finally` deletes the probe's test file) instead of
    killing the process where it stands. Only in the main thread, where Python runs signal handlers."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    old = {}
    for sig in wanted:
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, leave)
    try:
        yield
    finally:
        for sig, handler in old.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)


class _DiskProbe:
    """Write phase in a background thread (while torch imports), read phase later, on a quiet CPU.

    What it measures: a freshly written file of random data (an 8 MiB urandom block repeated, so
    compressing file systems cannot shrink it) is fsync'ed, its pages dropped from the page cache
    with posix_fadvise(POSIX_FADV_DONTNEED) (F_NOCACHE on macOS), then read sequentially with
    8 MiB reads through the page cache with kernel read-ahead - the path a cold safetensors /
    GGUF load takes. Figure = bytes read / seconds (GB = 1e9), the median of up to three such
    cold passes within the read budget. It is a sequential, single-stream, cold-cache figure; it
    is not random-read IOPS and not a warm (already cached) load. In a VM the host may still cache
    the virtual disk, which the guest cannot drop. The file is written only up to the write budget
    (so a slow disk is measured on a smaller file) and is always deleted.
    """

    def __init__(
        self,
        directory: Path | None = None,
        size: int = DISK_PROBE_BYTES,
        write_budget_s: float = DISK_WRITE_BUDGET_S,
        read_budget_s: float = DISK_READ_BUDGET_S,
    ):
        self.dir = _existing_dir(directory if directory is not None else hub_cache_dir())
        self.size = size
        self.write_budget_s = write_budget_s
        self.read_budget_s = read_budget_s
        self.path: str | None = None
        self.written = 0
        self.error: str | None = None
        self.method = "buffered read after fsync + POSIX_FADV_DONTNEED"
        self.passes: list[float] = []
        self._thread: threading.Thread | None = None

    def start(self) -> _DiskProbe:
        self._thread = threading.Thread(target=self._write, name="advisor-disk-probe", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        try:
            free = psutil.disk_usage(str(self.dir)).free
            if free < 4 * self.size:
                self.size = (free // 8) // DISK_CHUNK_BYTES * DISK_CHUNK_BYTES
                if self.size < DISK_CHUNK_BYTES:
                    self.error = f"too little free space on {self.dir} to measure disk reads"
                    return
            _remove_stale_probe_files(self.dir)
            prefix = f"{DISK_PROBE_PREFIX}{os.getpid()}-"
            fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.dir)
            if sys.platform == "darwin":
                import fcntl

                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, getattr(fcntl, "F_NOCACHE", 48), 1)
            block = os.urandom(DISK_CHUNK_BYTES)
            t0 = time.perf_counter()
            try:
                while self.written < self.size:
                    self.written += os.write(fd, block)
                    if time.perf_counter() - t0 > self.write_budget_s:
                        break
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception as exc:  # (read-only volume, permissions, ENOSPC)
            self.error = f"could not write a test file in {self.dir}: {_err(exc)}"

    def finish(self) -> float | None:
        """Join the write phase, run the read phase, delete the file. GB/s or None (see .error)."""
        try:
            if self._thread is not None:
                self._thread.join()
            if self.error or not self.path or not self.written:
                return None
            return self._read_passes()
        except Exception as exc:
            self.error = f"disk read measurement failed: {_err(exc)}"
            return None
        finally:
            self.cleanup()

    def _read_passes(self) -> float | None:
        """Up to DISK_READ_PASSES cold passes within the read budget; the median GB/s."""
        figures = []
        started = time.perf_counter()
        for _ in range(DISK_READ_PASSES):
            left = self.read_budget_s - (time.perf_counter() - started)
            if figures and left < 0.05:
                break
            gbps = self._read(max(left, 0.05))
            if gbps is None:
                break
            figures.append(gbps)
        self.passes = figures
        return statistics.median(figures) if figures else None

    def _read(self, budget_s: float) -> float | None:
        """One sequential pass over the file after dropping it from the page cache."""
        assert self.path is not None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            elif sys.platform == "darwin":
                import fcntl

                fcntl.fcntl(fd, getattr(fcntl, "F_NOCACHE", 48), 1)
                self.method = "read with F_NOCACHE (file also written with F_NOCACHE)"
            else:
                self.method = "buffered read (the OS cache could not be dropped: may be optimistic)"
            view = memoryview(bytearray(DISK_CHUNK_BYTES))
            total = 0
            t0 = time.perf_counter()
            while True:
                n = os.readv(fd, [view])
                if n <= 0:
                    break
                total += n
                if time.perf_counter() - t0 > budget_s:
                    break
            elapsed = time.perf_counter() - t0
        finally:
            os.close(fd)
        if not total or elapsed <= 0:
            return None
        return total / elapsed / GB

    def cleanup(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()  # the writer may still create the file
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


def measure_disk_read(
    directory: Path | str | None = None, size: int = DISK_PROBE_BYTES
) -> tuple[float | None, str, str | None]:
    """Cold sequential read throughput (GB/s) of the volume holding `directory`.

    `directory` defaults to the Hugging Face hub cache (or its nearest existing parent). Returns
    (gbps or None, the directory used, an error message or None). See `_DiskProbe` for the
    method. The temporary file is always removed.
    """
    p = _DiskProbe(Path(directory) if directory is not None else None, size=size)
    p.start()
    gbps = p.finish()
    return gbps, str(p.dir), p.error


# --------------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------------


def probe(*, measure: bool = True, disk: bool = True) -> Hardware:
    """Measure this machine now (about 1-3 s on a CPU-only box, plus a few s per GPU).

    `measure=False` skips the timed measurements (driver and psutil figures only); `disk=False`
    skips the disk read test. Never raises for a missing GPU, driver or torch: such things
    become `notes`.
    """
    with _exit_on_signals():
        return _probe(measure=measure, disk=disk)


def _probe(*, measure: bool, disk: bool) -> Hardware:
    notes: list[str] = []
    disk_probe = _DiskProbe().start() if disk else None  # writes while torch imports
    try:
        try:
            vm = psutil.virtual_memory()
        except Exception as exc:
            raise HardwareProbeError(f"Cannot read the amount of RAM (psutil failed: {_err(exc)})") from exc
        nvml_gpus, nvml_notes = probe_nvml()
        notes.extend(nvml_notes)
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401  (the slow import overlaps the disk write)
        if disk_probe is not None and disk_probe._thread is not None:
            disk_probe._thread.join()  # keep the disk write off the CPU measurement
        if measure:
            cpu = _cpu_device(notes, vm.total, vm.available)
        else:
            cpu = Device(
                kind="cpu", name=cpu_model_name(), memory_bytes=vm.total, bandwidth_gbps=None, free_bytes=vm.available
            )
        gpus = _torch_gpu_devices(nvml_gpus, notes, measure)
        if gpus is None:
            gpus = _nvml_only_devices(nvml_gpus)
            if nvml_gpus:
                notes.append(
                    "torch cannot use the NVIDIA GPU(s) (CPU-only torch build?): "
                    "GPU bandwidth is the driver's theoretical peak, not measured"
                )
        disk_gbps = disk_path = None
        if disk_probe is not None:
            disk_gbps = disk_probe.finish()
            disk_path = str(disk_probe.dir)
            if disk_probe.error:
                notes.append(f"Disk read not measured: {disk_probe.error}")
            elif disk_gbps is not None and cpu.bandwidth_gbps and disk_gbps > 0.5 * cpu.bandwidth_gbps:
                notes.append(
                    f"Disk read of {disk_gbps:.1f} GB/s is close to RAM speed: the page cache "
                    "may not have been dropped, so the figure may be optimistic"
                )
    finally:
        if disk_probe is not None:
            disk_probe.cleanup()
    return Hardware(
        devices=(cpu, *gpus),
        source="probe",
        cpu_name=cpu.name,
        physical_cores=_physical_cores(),
        logical_cores=_logical_cores(),
        ram_total_bytes=vm.total,
        ram_available_bytes=vm.available,
        disk_read_gbps=round(disk_gbps, 2) if disk_gbps is not None else None,
        disk_path=disk_path,
        measured_at=_now_iso(),
        fingerprint=machine_fingerprint(),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# JSON and cache
# --------------------------------------------------------------------------------------------


# What each stored field must hold: anything else means the file was damaged or hand-edited wrongly, and the
# profile is set aside and measured again (a wrong type would otherwise crash the cost model much later).
_DEVICE_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "name": (str,), "memory_bytes": (int,), "bandwidth_gbps": (int, float, type(None)),
    "bandwidth_source": (str,), "free_bytes": (int, type(None)), "matmul_tflops": (int, float, type(None)),
    "matmul_source": (str,), "index": (int,), "theoretical_bandwidth_gbps": (int, float, type(None)),
    "details": (dict, type(None)),
}  # fmt: skip
_HARDWARE_FIELDS: dict[str, tuple[type, ...]] = {
    "source": (str,), "cpu_name": (str, type(None)), "physical_cores": (int, type(None)),
    "logical_cores": (int, type(None)), "ram_total_bytes": (int, type(None)),
    "ram_available_bytes": (int, type(None)), "disk_read_gbps": (int, float, type(None)),
    "disk_path": (str, type(None)), "measured_at": (str, type(None)), "fingerprint": (str, type(None)),
    "notes": (list, tuple, type(None)),
}  # fmt: skip
_DETAIL_TABLES = ("bandwidth_gbps_by_dtype", "matmul_tflops_by_dtype", "bandwidth_gbps_by_method")
_DETAIL_NUMBERS = ("pcie_gbps", "power_limit_w", "recommended_max_memory_bytes", "unified_memory_bytes")


def _check_fields(data: dict[str, Any], table: dict[str, tuple[type, ...]], what: str) -> None:
    for key, types in table.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{what} field '{key}' holds {type(value).__name__}")
        if isinstance(value, (int, float)) and not _is_number(value):
            raise ValueError(f"{what} field '{key}' is out of range")


def _is_number(value: Any) -> bool:
    """A figure a profile can hold: finite, not negative, within int64 (an int of 400 digits overflows floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**63
    return math.isfinite(value) and 0 <= value < 2.0**63


def _device_from_json(d: dict[str, Any]) -> Device:
    _check_fields(d, _DEVICE_FIELDS, "device")
    details = d.get("details") or {}
    for key in _DETAIL_TABLES:
        table = details.get(key)
        if table is not None and not (isinstance(table, dict) and all(_is_number(v) for v in table.values())):
            raise ValueError(f"device detail '{key}' is not a table of numbers")
    for key in _DETAIL_NUMBERS:
        if details.get(key) is not None and not _is_number(details[key]):
            raise ValueError(f"device detail '{key}' is not a number")
    names = {f.name for f in dataclasses.fields(Device)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs["details"] = dict(details)
    return Device(**kwargs)


def hardware_from_json(data: dict[str, Any]) -> Hardware:
    """The inverse of `Hardware.to_json()` (unknown keys are ignored). Raises ValueError on bad input."""
    if not isinstance(data, dict):
        raise ValueError("a hardware profile must be a JSON object")
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices or not all(isinstance(d, dict) for d in devices):
        raise ValueError("'devices' must be a non-empty list of objects")
    _check_fields(data, _HARDWARE_FIELDS, "profile")
    names = {f.name for f in dataclasses.fields(Hardware)}
    kwargs = {k: v for k, v in data.items() if k in names and k != "devices"}
    if "source" not in kwargs:
        raise ValueError("'source' is missing")
    notes = kwargs.get("notes") or ()
    if not all(isinstance(n, str) for n in notes):
        raise ValueError("'notes' must be a list of strings")
    kwargs["notes"] = tuple(notes)
    try:
        parsed = tuple(_device_from_json(d) for d in devices)
        hw = Hardware(devices=parsed, **kwargs)
    except TypeError as exc:  # a device without kind, name or memory_bytes
        raise ValueError(str(exc)) from exc
    return hw


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


class ProfileWriteError(AdvisorError, OSError):
    """The hardware profile could not be written (disk full, read-only cache): the previous file is intact.

    Also an OSError, so callers that handled the raw error keep working.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        OSError.__init__(self, errno_, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def save_hardware(hw: Hardware, path: Path | None = None) -> Path:
    """Write the profile atomically: a temp file in the same folder, fsync, os.replace.

    On failure (a full disk: ENOSPC from the write or the fsync) the temp file is removed, the previous
    profile is left as it was, and ProfileWriteError (an AdvisorError) says so in one line.
    """
    path = path or cache_path()
    data = {"schema": SCHEMA, **hw.to_json()}
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        kept = "the previous profile is kept" if path.exists() else "nothing was saved"
        nospace = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        step = "free some disk space" if nospace else "check the folder's permissions"
        raise ProfileWriteError(
            f"Cannot save the hardware profile to {path} ({_err(exc)}): {kept}; {step}, or set ADVISOR_CACHE_DIR "
            "to another folder.",
            exc.errno,
        ) from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return path


def _refresh_volatile(hw: Hardware) -> Hardware:
    """A cached profile with today's available RAM (cheap; bandwidths stay as measured)."""
    try:
        avail = psutil.virtual_memory().available
    except Exception:
        return hw
    devices = tuple(dataclasses.replace(d, free_bytes=avail) if d.kind == "cpu" else d for d in hw.devices)
    return dataclasses.replace(hw, devices=devices, ram_available_bytes=avail)


def _read_cache(path: Path) -> tuple[Hardware | None, int | None, str | None]:
    """(profile, schema, warning): a corrupt file is set aside, an unreadable one left alone."""
    try:
        raw = read_bytes(path, limit=MAX_STATE_BYTES)
    except NotRegularFile as exc:
        return None, None, f"Could not read the cached hardware profile: {_err(exc)}; measured again"
    except OSError as exc:
        return None, None, f"Could not read the cached hardware profile {path}: {_err(exc)}"
    except ValueError as exc:  # far larger than any profile: damaged; checked before reading a byte of it
        raw, too_big = b"", exc
    else:
        too_big = None
    try:
        if too_big is not None:
            raise too_big
        data = decode_json(raw)
        hw = hardware_from_json(data)
        return hw, data.get("schema"), None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:  # UnicodeDecodeError too
        try:
            aside = set_aside(path)
        except OSError as exc2:
            return None, None, f"The cached hardware profile was unreadable and could not be moved: {_err(exc2)}"
        return (
            None,
            None,
            (f"The cached hardware profile was unreadable ({_err(exc)}); moved it to {aside.name} and measured again"),
        )


# NOTE: a profile measured while others took a quarter of the CPU is re-measured on its next use; bench and
# chat runs measured so are not recorded for calibration.
CONTENTION_REMEASURE = 0.25


def contention_limit() -> float:
    """The share of the CPU other processes may take while advisor measures: ADVISOR_MAX_CPU_CONTENTION (0-1),
    for a shared machine whose owner accepts noisier calibration, else 0.25."""
    try:
        value = float(os.environ.get("ADVISOR_MAX_CPU_CONTENTION", CONTENTION_REMEASURE))
    except ValueError:
        return CONTENTION_REMEASURE
    return value if 0 < value <= 1 else CONTENTION_REMEASURE


def too_contended(share: float | None) -> bool:
    """Whether a measurement during which other processes took `share` of the CPU reads too low to keep."""
    limit = contention_limit()
    return isinstance(share, (int, float)) and share >= limit and limit < 1


def _contended(hw: Hardware) -> bool:
    """Measured while other work shared the CPU, and not yet measured a second time (one retry: on a machine that
    stays busy, every command would otherwise probe again, 30 s or more each; `advisor hw --refresh` re-measures)."""
    cpu = hw.cpu
    details = (cpu.details or {}) if cpu is not None else {}
    return not details.get("contention_retried") and too_contended(details.get("cpu_contention"))


def _retried(hw: Hardware) -> Hardware:
    """`hw` marked as the profile kept after the one retry a contended profile gets."""
    cpu = hw.cpu
    if cpu is None:
        return hw
    marked = dataclasses.replace(cpu, details={**(cpu.details or {}), "contention_retried": True})
    return dataclasses.replace(hw, devices=tuple(marked if d is cpu else d for d in hw.devices))


def _cpu_bandwidth(hw: Hardware) -> float:
    return float(hw.cpu.bandwidth_gbps or 0.0) if hw.cpu is not None else 0.0


# Who is told that a probe is starting (the `advisor` command prints it on a terminal's stderr): a first probe
# takes one to a few minutes on a small CPU (about 5 on a busy day of the 2-vCPU VM), and a silent wait that long
# looks like a hang. None: nobody (library use).
_probe_notice: Any = None


def on_probe(notice: Any) -> None:
    """Call `notice(line)` before each probe `load_or_probe` runs (None: stop)."""
    global _probe_notice
    _probe_notice = notice


def _announce(why: str) -> None:
    if _probe_notice is None:
        return
    runtimes = ", each runtime's step costs" if probe_runtimes() else ""
    with contextlib.suppress(Exception):  # a closed stderr must not stop the probe
        _probe_notice(
            f"advisor: {why}: measuring this machine (memory bandwidth, matmul rates{runtimes}); "
            f"this takes one to a few minutes (longer on a busy machine) and is kept in {cache_path()}"
        )


def load_or_probe(refresh: bool = False) -> Hardware:
    """The cached profile if it was made on this machine, else a fresh `probe()` (then cached).

    - `refresh=True` always re-measures;
    - a profile whose fingerprint (or schema) does not match this machine is re-measured;
    - a corrupt file is renamed to `hardware.json.corrupt-<UTC timestamp>` and re-measured,
      with a warning in the returned profile's notes (not in the saved one);
    - available RAM is refreshed on every load; measured figures are kept;
    - a profile measured under heavy CPU contention is measured again, once, and the better one kept.
    """
    path = cache_path()
    warnings: list[str] = []
    saved = path.exists()  # (a damaged file is moved aside by the read below)
    if not refresh and saved:
        cached, schema, warning = _read_cache(path)
        if warning:
            warnings.append(warning)
        if cached is not None and schema == SCHEMA and cached.fingerprint == machine_fingerprint():
            if not _contended(cached):
                return _refresh_volatile(cached)
            # Measured while other work shared the CPU: measure again and keep the less disturbed
            # profile (contention only ever lowers the figures).
            _announce("the saved profile was measured while the CPU was busy")
            fresh = probe()
            kept = fresh if _cpu_bandwidth(fresh) >= _cpu_bandwidth(cached) else cached
            if _contended(kept):
                kept = _retried(kept)
            with contextlib.suppress(OSError):
                save_hardware(kept, path)
            return kept if kept is fresh else _refresh_volatile(kept)
    if refresh:
        _announce("--refresh")
    elif saved:
        _announce("the saved profile cannot be used here (another machine, an older advisor or a damaged file)")
    else:
        _announce("first run")
    hw = probe()
    try:
        save_hardware(hw, path)
    except ProfileWriteError as exc:
        warnings.append(str(exc))
    except OSError as exc:
        warnings.append(f"Could not save the hardware profile to {path}: {_err(exc)}")
    if warnings:
        hw = dataclasses.replace(hw, notes=tuple(hw.notes) + tuple(warnings))
    return hw


def fit_to_total(hw: Hardware) -> Hardware:
    """The same hardware with the free-memory figures dropped: plans then fit against each device's total
    (`--fit total`), as if nothing else were running."""
    devices = tuple(dataclasses.replace(d, free_bytes=None) for d in hw.devices)
    return dataclasses.replace(hw, devices=devices)


def table_device_class(name: str) -> str | None:
    """The accelerator table's class for a detected GPU ("NVIDIA H100 80GB HBM3" -> "cuda/hbm"), when the table
    knows the card; the speed model's per-class defaults then apply to it."""
    from advisor.accelerators import device_class, lookup, table
    from advisor.errors import DeviceNotFoundError

    words = name.replace("NVIDIA", "").replace("AMD", "").replace("-", " ").split()
    for n in range(len(words), 0, -1):
        try:
            return device_class(lookup(" ".join(words[:n])))
        except DeviceNotFoundError:
            # 'H100 80GB' names the PCIe and SXM rows alike: one class for both is enough
            wanted = [w.lower() for w in words[:n]]
            classes = {device_class(a) for a in table() if all(w in a.name.lower() for w in wanted)}
            if len(classes) == 1:
                return classes.pop()
    return None
