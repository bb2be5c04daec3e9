"""Measuring a process's memory without disturbing it much, and handing freed memory back to the OS.

`PeakMemory` samples this process's memory in a thread (anonymous memory, plus the file-backed pages that
hold weights, plus NVML's figure per GPU); `release_freed_memory` and `trimming` call glibc's `malloc_trim`
so the process's resident size is what the model really holds. No torch import at module level.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator

NVML_INTERVAL = 0.05  # seconds between NVML reads (the process query takes milliseconds on some drivers)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library); looked up once (find_library runs ldconfig)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory(*, collect: bool = True) -> None:
    """Hand memory freed by loading (dtype conversion, quantization temporaries) back to the OS.

    glibc keeps freed heap pages in the process; `malloc_trim(0)` returns them, so the process's
    resident size is what the model really holds. A no-op where glibc is absent. `collect` runs
    Python's cycle collector first (tensors held only by reference cycles are freed then).
    """
    import gc

    if collect:  # ~170 ms with transformers loaded: after loading, not after each generation
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def trimming(interval: float = 0.05) -> Iterator[None]:
    """Hand freed memory back every `interval` seconds while the block runs (a load).

    A load converts or quantizes tensor after tensor; glibc keeps the freed full-precision copies
    unless `malloc_trim` runs, and whether it keeps them depends on its dynamic mmap threshold: a
    360M nf4 load peaked at +0.55 GB in most runs and +1.6 GB in others. Trimming from a thread
    while loading bounds that (malloc_trim takes glibc's arena locks, so it is safe to call here).
    """
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            trim(0)

    thread = threading.Thread(target=run, name="advisor-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class PeakMemory:
    """Samples this process's memory in a background thread.

    `peak` counts anonymous memory (what the process allocated) plus the file-backed pages it had
    before (library code): file pages of a memory-mapped checkpoint are left out, because
    transformers may keep the safetensors file mapped after loading (it does for bitsandbytes
    loads) and the kernel drops those clean pages under pressure. `peak_rss` is the raw figure.

    `baseline_shared` is the file-backed memory to count (default: what is mapped now); a sampler
    started after loading passes the figure from before loading plus the file pages that hold weights.
    """

    def __init__(self, interval: float = 0.005, *, baseline_shared: int | None = None):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        info = self._proc.memory_info()
        self.start_shared = getattr(info, "shared", 0) if baseline_shared is None else baseline_shared
        self.peak_rss = info.rss
        self.peak_anon = info.rss - getattr(info, "shared", 0)
        self.samples = 0
        self.nvml_peaks: dict[int, int] = {}  # GPU index -> most bytes NVML saw this process hold
        self._nvml = None
        self._nvml_read = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advisor-peak-memory", daemon=True)

    def _sample(self) -> None:
        info = self._proc.memory_info()
        self.samples += 1
        self.peak_rss = max(self.peak_rss, info.rss)
        self.peak_anon = max(self.peak_anon, info.rss - getattr(info, "shared", 0))
        now = time.monotonic()
        if self._nvml is not None and now - self._nvml_read >= NVML_INTERVAL:  # slow on some drivers
            self._nvml_read = now
            for index, used in self._nvml.read().items():
                self.nvml_peaks[index] = max(self.nvml_peaks.get(index, 0), used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return self.peak_anon + self.start_shared

    def __enter__(self) -> PeakMemory:
        try:
            import sys

            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self._nvml = nvml_process_memory(os.getpid())
        except Exception:
            self._nvml = None
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml_read = float("-inf")  # the last reading always counts
        self._sample()
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    def cuda_peaks(self) -> dict[str, int]:
        """torch's allocator peaks on the GPU (empty where torch has no GPU or is not loaded)."""
        try:
            import sys

            torch = sys.modules.get("torch")
            if torch is None or not torch.cuda.is_available():
                return {}
            return {
                "cuda_max_allocated": int(torch.cuda.max_memory_allocated()),
                "cuda_max_reserved": int(torch.cuda.max_memory_reserved()),
            }
        except Exception:
            return {}


def mapped_bytes(pointers: Iterator[tuple[int, int]]) -> int:
    """Of the (address, bytes) blocks given, the bytes that lie inside a file mapping of this process (a
    zero-copy checkpoint load, or llama.cpp's mmap): the sampler counts those file pages as the model's memory.
    0 where the process's mappings cannot be read. Reads /proc/self/smaps: for bench, not for every load."""
    import bisect

    import psutil

    try:
        maps = psutil.Process().memory_maps(grouped=False)
    except (psutil.Error, OSError, NotImplementedError):
        return 0
    ranges = sorted(
        tuple(int(x, 16) for x in m.addr.split("-")) for m in maps if m.path.startswith("/") and "-" in m.addr
    )
    starts = [r[0] for r in ranges]
    total = 0
    for ptr, size in pointers:
        i = bisect.bisect_right(starts, ptr) - 1
        if i >= 0 and ptr < ranges[i][1]:
            total += size
    return total


# ---------------------------------------------------------------------------------------------------------------
# NVML: one process's memory per GPU


def _nvml_call(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:  # (NVMLError_NotSupported, FunctionNotFound, ...)
        return default


class NvmlProcessMemory:
    """GPU memory one process holds on each NVIDIA GPU, as NVML counts it (what nvidia-smi shows:
    the CUDA context and every allocator's pool included). Serves bench's GPU peak; `read()` never
    raises and leaves out GPUs where NVML does not tell (MIG, other PID namespaces)."""

    def __init__(self, pid: int):
        import pynvml

        self._nvml = pynvml
        self.pid = pid
        pynvml.nvmlInit()
        try:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:
            pynvml.nvmlShutdown()
            raise

    def read(self) -> dict[int, int]:
        used: dict[int, int] = {}
        for index, handle in enumerate(self._handles):
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                fn = getattr(self._nvml, getter, None)
                for proc in (_nvml_call(fn, handle, default=None) if fn else None) or ():
                    nbytes = getattr(proc, "usedGpuMemory", None)
                    if getattr(proc, "pid", None) == self.pid and isinstance(nbytes, int) and nbytes > 0:
                        used[index] = max(used.get(index, 0), nbytes)
        return used

    def close(self) -> None:
        _nvml_call(self._nvml.nvmlShutdown)


def nvml_process_memory(pid: int) -> NvmlProcessMemory | None:
    """A reader of `pid`'s memory on each NVIDIA GPU, or None where NVML cannot be used."""
    if sys.platform == "darwin":
        return None
    try:
        return NvmlProcessMemory(pid)
    except Exception:  # not installed, no driver, no permission
        return None
