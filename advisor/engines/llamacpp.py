"""The llama.cpp engine: a GGUF file run by llama.cpp through llama-cpp-python.

llama.cpp is native code: a build with instructions this CPU traps (a VM that advertises AMX but traps it)
dies with SIGILL on its first matrix multiply. So a child process probes the installed build once (load the
embedded model, evaluate a few tokens) and advisor uses llama.cpp only when that child came back well; the
verdict is kept in the cache, keyed by the library file and this machine. Quantizing also runs in a child.

The engine reads llama.cpp's own log lines for what it allocated (model, KV cache, compute and output
buffers), lays out conversations with the GGUF's own chat template (as llama-cpp-python's chat completion
does), and times each token as llama-cpp-python's generator hands it over.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advisor import precision as P
from advisor.engines.base import Artifact, ChatTemplateError, Clock, Engine, EngineError, Generation, LoadOptions
from advisor.textutil import first_line, safe

PROBE_FILE = "llama_cpp_probe.json"
PROBE_TIMEOUT_S = 120.0
QUANTIZE_TIMEOUT_S = 1800.0
SETUP_HINT = "scripts/setup.sh builds it for this machine (or: pip install llama-cpp-python)"

# llama.cpp file types by name (llama.h `enum llama_ftype`); the names are those llama-quantize prints.
FILE_TYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32,
}  # fmt: skip
# KV cache element types llama.cpp accepts for type_k / type_v (ggml.h `enum ggml_type`).
KV_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "iq4_nl": 20}


def file_type_name(prec: P.Precision) -> str:
    """The llama.cpp file type a precision names: q4_k_m -> Q4_K_M, gguf-f16 -> F16 (the cost model's reading)."""
    from advisor.costmodel.memory import gguf_file_type

    name = gguf_file_type(prec)
    if name not in FILE_TYPES:
        raise EngineError(f"llama.cpp has no file type for precision '{prec.name}'.")
    return name


# ---------------------------------------------------------------------------------------------------------------
# Is a working build installed?


def installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _library_key() -> str | None:
    """Identity of the installed native library (path, size, time) and of this machine: a rebuilt library or
    another CPU is probed again."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    override = os.environ.get("LLAMA_CPP_LIB_PATH")  # llama-cpp-python loads its library from here when set
    if override:
        folder = Path(override)
    libdir = folder if override else folder / "lib"
    libs = sorted(libdir.glob("*.so*")) + sorted(libdir.glob("*.dylib")) + sorted(libdir.glob("*.dll"))
    stamp = [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in libs]
    return f"{folder}|{'|'.join(stamp)}|{_cpu_identity()}"


def _cpu_identity() -> str:
    """The CPU and the instruction sets it offers (a build that ran on one CPU may trap on another)."""
    import hashlib
    import platform

    text = platform.machine() + platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "flags", "Features")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _probe_path() -> Path:
    from advisor.paths import cache_dir

    return cache_dir() / PROBE_FILE


@functools.cache
def probe() -> dict[str, Any]:
    """{"ok": bool, "reason": str, "system_info": str, "gpu_offload": bool}: whether the installed build runs here,
    found once in a child process (a SIGILL or a crash ends the child, never this process) and kept in the
    cache until the library or the machine changes."""
    if not installed():
        return {"ok": False, "reason": f"llama-cpp-python is not installed: {SETUP_HINT}"}
    key = _library_key()
    path = _probe_path()
    with contextlib.suppress(OSError, ValueError):
        from advisor.fileio import MAX_STATE_BYTES, read_json_file

        cached = read_json_file(path, limit=MAX_STATE_BYTES)
        if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("ok"), bool):
            return cached
    result = _run_probe()
    result["key"] = key
    with contextlib.suppress(OSError):
        from advisor.fileio import write_atomic

        write_atomic(path, json.dumps(result))
    return result


def _run_probe() -> dict[str, Any]:
    model = None
    with contextlib.suppress(Exception):
        from advisor.paths import embedded_gguf

        model = str(embedded_gguf())
    cmd = [sys.executable, "-m", "advisor.engines.llamacpp", "probe"] + ([model] if model else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=child_env())
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"the llama.cpp build check did not finish in {PROBE_TIMEOUT_S:.0f} s"}
    except OSError as exc:
        return {"ok": False, "reason": f"the llama.cpp build check could not start ({first_line(exc)})"}
    if proc.returncode == 0:
        try:
            info = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            info = {}
        return {"ok": True, "reason": "", **{k: info.get(k) for k in ("system_info", "gpu_offload", "version")}}
    return {"ok": False, "reason": crash_reason(proc.returncode, proc.stderr)}


def crash_reason(code: int, stderr: str) -> str:
    import signal

    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGILL:
            return (
                "the installed llama.cpp build uses CPU instructions this machine traps (SIGILL; a VM that "
                "advertises AMX but does not grant it does this): rebuild it with `scripts/setup.sh --rebuild-llama`"
            )
        return (
            f"the installed llama.cpp build crashed on a test model ({name}): rebuild it with "
            "`scripts/setup.sh --rebuild-llama`"
        )
    tail = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"the installed llama.cpp build failed its check ({safe(tail[-1] if tail else f'exit {code}', 160)})"


def usable() -> bool:
    return bool(probe().get("ok"))


def unavailable_reason() -> str:
    """One line: why llama.cpp cannot run here, and the fix."""
    reason = probe().get("reason") or "llama.cpp is not usable here"
    return f"llama.cpp cannot run here: {reason}. Meanwhile --runtime transformers runs the transformers options."


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------------------------------------------------------
# Quantizing (in a child process)


def quantize(source: Path, target: Path, ftype: str, *, threads: int | None = None) -> None:
    """Write `source` requantized to llama.cpp file type `ftype` at `target`, with llama.cpp's own quantizer, in a
    child process. EngineError (one line) when it fails."""
    if ftype not in FILE_TYPES:
        raise EngineError(f"llama.cpp has no file type '{ftype}'.")
    if not usable():
        raise EngineError(unavailable_reason())
    cmd = [sys.executable, "-m", "advisor.engines.llamacpp", "quantize", str(source), str(target), ftype,
           str(threads or _physical_cores())]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QUANTIZE_TIMEOUT_S, env=child_env())
    except subprocess.TimeoutExpired:
        raise EngineError(f"Quantizing {source.name} to {ftype} took over {QUANTIZE_TIMEOUT_S:.0f} s.") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        detail = crash_reason(proc.returncode, proc.stderr) if proc.returncode < 0 else (lines[-1] if lines else "")
        raise EngineError(f"llama.cpp could not quantize {safe(source.name)} to {ftype}: {safe(detail, 200)}")


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------
# The engine

_LOG_LOCK = threading.Lock()
_LOG_LINES: list[str] = []
_LOG_CALLBACK = None  # kept alive: llama.cpp holds the pointer

# What llama.cpp says it allocated, by the words of its log lines: "<buffer> <what> buffer size = X MiB", where
# the buffer is CPU, CPU_Mapped (the mmap of the file), CPU_REPACK (a private re-laid copy), CUDA0, CUDA_Host ...
_BUFFER = re.compile(r"(?P<buf>[A-Za-z_]*[A-Za-z0-9_]+)\s+(?P<what>model|KV|compute|output|RS)\s+buffer size\s*=\s*"
                     r"(?P<mib>[\d.]+)\s*MiB")  # fmt: skip
_UNKNOWN_ARCH = re.compile(r"unknown model architecture: '([^']*)'")


def _install_log_callback() -> None:
    """Collect llama.cpp's log lines (info and above) instead of letting them reach the terminal."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user: Any) -> None:
        # ggml log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the line before
        if level in (2, 3, 4, 5):
            with _LOG_LOCK:
                _LOG_LINES.append(text.decode("utf-8", "replace"))
                if len(_LOG_LINES) > 4000:
                    del _LOG_LINES[:2000]

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    _LOG_CALLBACK = collect


def _take_log() -> list[str]:
    with _LOG_LOCK:
        text = "".join(_LOG_LINES)
        _LOG_LINES.clear()
    return text.splitlines()


def buffers_from_log(lines: list[str]) -> dict[str, int]:
    """Bytes llama.cpp says it allocated: `model` (the weights: mapped, host or device copies, summed),
    `file_backed_weights` (the CPU_Mapped part), `repacked_weights` (CPU_REPACK copies beside the mapping),
    `kv_cache` (and recurrent state), `compute` and `output` buffers."""
    out = dict.fromkeys(("model", "file_backed_weights", "repacked_weights", "kv_cache", "compute", "output"), 0.0)
    for line in lines:
        m = _BUFFER.search(line)
        if not m:
            continue
        size = float(m["mib"]) * 2**20
        buf = m["buf"]
        if m["what"] == "model":
            if buf.endswith("_REPACK"):
                out["repacked_weights"] += size
            else:
                out["model"] += size
                if buf == "CPU_Mapped":
                    out["file_backed_weights"] += size
        elif m["what"] in ("KV", "RS"):
            out["kv_cache"] += size
        else:
            out[m["what"]] += size
    return {k: int(v) for k, v in out.items()}


def _load_error(artifact: Artifact, lines: list[str], exc: BaseException) -> EngineError:
    text = "\n".join(lines)
    arch = _UNKNOWN_ARCH.search(text)
    who = safe(artifact.model_id)
    if arch:
        return EngineError(
            f"llama.cpp cannot run '{who}': it does not know the architecture '{safe(arch[1], 60)}'; run it with "
            "--runtime transformers, or update llama-cpp-python."
        )
    bad_type = re.search(r"invalid ggml type \d+|unknown type|tensor type .* not supported|failed to read tensor", text)
    if bad_type:
        return EngineError(
            f"llama.cpp cannot run '{who}': {safe(bad_type[0], 100)} (a quantization type this build does not "
            "know); update llama-cpp-python, or choose another GGUF file."
        )
    errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
    detail = errors[-1] if errors else first_line(exc)
    return EngineError(f"llama.cpp cannot load '{who}': {safe(detail, 200)}")


class LlamaCppEngine(Engine):
    runtime = "llama.cpp"

    def __init__(self, llm, *, artifact: Artifact, options: LoadOptions, load_seconds: float,
                 buffers: dict[str, int], gpu_layers: int, n_layers: int) -> None:  # fmt: skip
        self.llm = llm
        self.artifact = artifact
        self.options = options
        self.model_id = artifact.model_id
        self.precision = options.precision
        self.load_seconds = load_seconds
        self.buffers = buffers
        self.weight_bytes = buffers["model"]
        self.context_size = int(llm.n_ctx())
        on_gpu = min(gpu_layers, n_layers)
        self.layers_by_device = {k: v for k, v in (("cuda:0", on_gpu), ("cpu", n_layers - on_gpu)) if v > 0}
        gpu_name = "cuda:0"
        self.placement = "cpu" if on_gpu == 0 else gpu_name if on_gpu == n_layers else f"{gpu_name}+cpu"
        self._template = None
        self._eog = self._eog_tokens()

    @classmethod
    def load(cls, artifact: Artifact, options: LoadOptions) -> LlamaCppEngine:
        if not usable():
            raise EngineError(unavailable_reason())
        from advisor.sources.gguf import spec_from_gguf

        spec = spec_from_gguf(artifact.path, model_id=artifact.model_id)  # a truncated or corrupt file: one line
        if spec.max_context and options.context > spec.max_context:
            raise EngineError(
                f"A context of {options.context:,} tokens is more than '{safe(artifact.model_id)}' was trained for "
                f"({spec.max_context:,}): lower --max-context (or --depths)."
            )
        import llama_cpp

        _install_log_callback()
        _take_log()
        offload = probe().get("gpu_offload") or llama_cpp.llama_supports_gpu_offload()
        n_layers = spec.num_layers or 0
        gpu_layers = (n_layers if options.gpu_layers is None else options.gpu_layers) if offload else 0
        kwargs: dict[str, Any] = {}
        if options.kv_cache_type:
            kv = options.kv_cache_type.lower()
            if kv not in KV_TYPES:
                raise EngineError(f"Unknown KV cache type '{safe(kv, 20)}': choose one of {', '.join(KV_TYPES)}.")
            kwargs.update(type_k=KV_TYPES[kv], type_v=KV_TYPES[kv])
            if kv not in ("f16", "f32", "bf16") and options.flash_attn is False:
                raise EngineError("A quantized V cache needs flash attention in llama.cpp: drop --no-flash-attn.")
        flash = (
            options.flash_attn
            if options.flash_attn is not None
            else bool(options.kv_cache_type and options.kv_cache_type.lower() not in ("f16", "f32", "bf16"))
        )
        t0 = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                str(artifact.path),
                n_ctx=options.context,
                n_threads=options.threads or _physical_cores(),
                n_threads_batch=options.threads or _physical_cores(),
                n_gpu_layers=gpu_layers,
                flash_attn=flash,
                verbose=False,
                **kwargs,
            )
        except Exception as exc:  # ValueError("Failed to load model from file") and the like
            raise _load_error(artifact, _take_log(), exc) from None
        seconds = time.perf_counter() - t0
        buffers = buffers_from_log(_take_log())
        if not buffers["model"]:
            buffers["model"] = int(llama_cpp.llama_model_size(llm.model))
        return cls(llm, artifact=artifact, options=options, load_seconds=seconds, buffers=buffers,
                   gpu_layers=gpu_layers, n_layers=n_layers)  # fmt: skip

    # -- text -------------------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", "replace")

    @property
    def has_chat_template(self) -> bool:
        return bool(self.llm.metadata.get("tokenizer.chat_template"))

    def _formatter(self):
        if self._template is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self.llm._model
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self._template = Jinja2ChatFormatter(
                template=self.llm.metadata["tokenizer.chat_template"],
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        return self._template

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation laid out by the GGUF's own template, tokenized as llama-cpp-python's chat completion
        does (special tokens parsed, no extra BOS)."""
        if not self.has_chat_template:
            raise ChatTemplateError(
                f"'{safe(self.model_id)}' has no chat template in its GGUF file: it is probably a base model; use "
                "its instruct/chat variant."
            )
        try:
            result = self._formatter()(messages=messages)
        except Exception as exc:
            raise ChatTemplateError(
                f"The chat template of '{safe(self.model_id)}' rejected the conversation: {first_line(exc)}"
            ) from None
        return list(self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    def _eog_tokens(self) -> set[int]:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        n = self.llm.n_vocab()
        found = {t for t in (self.llm.token_eos(),) if t >= 0}
        if hasattr(llama_cpp, "llama_vocab_is_eog"):
            found |= {t for t in range(min(n, 512)) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        return found

    # -- running ----------------------------------------------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        *,
        max_new_tokens: int,
        exact_length: bool = False,
        temperature: float = 0.0,
        top_p: float = 1.0,
        on_text: Callable[[str], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Generation:
        import numpy as np
        from llama_cpp import LogitsProcessorList

        if len(prompt) + max_new_tokens > self.context_size:
            raise EngineError(
                f"{len(prompt):,} prompt tokens and {max_new_tokens:,} new ones need more than the "
                f"{self.context_size:,}-token context this engine was loaded with: shorten the prompt or raise the "
                "context."
            )
        processors = None
        eog = sorted(self._eog)
        if exact_length and eog:

            def no_end(ids, scores):  # like transformers' min_new_tokens: end-of-generation is never sampled
                scores[eog] = -np.inf
                return scores

            processors = LogitsProcessorList([no_end])
        self.llm.reset()  # no prefix reuse: every measured generation evaluates its whole prompt
        clock = Clock()
        ids: list[int] = []
        printed = 0
        interrupted = False
        sampler = self.llm.generate(
            prompt, temp=max(temperature, 0.0), top_p=top_p if temperature > 0 else 1.0, top_k=0, min_p=0.0,
            repeat_penalty=1.0, logits_processor=processors,
        )  # fmt: skip
        try:
            for token in sampler:
                clock.tick(1)
                if token in self._eog and not exact_length:
                    break
                ids.append(token)
                if on_text is not None:
                    text = self.llm.detokenize(ids).decode("utf-8", "replace")
                    if not text.endswith("\ufffd") and len(text) > printed:
                        on_text(text[printed:])
                        printed = len(text)
                if len(ids) >= max_new_tokens or (stop is not None and stop()):
                    break
        except KeyboardInterrupt:  # Ctrl-C: keep what was generated
            interrupted = True
        finally:
            sampler.close()
        total = clock.elapsed()
        arrivals = clock.arrivals[: len(ids)] if len(clock.arrivals) > len(ids) else clock.arrivals
        text = self.llm.detokenize(ids).decode("utf-8", "replace")
        if on_text is not None and len(text) > printed:
            on_text(text[printed:])
        return Generation(
            prompt_tokens=len(prompt),
            new_tokens=len(ids),
            arrivals=arrivals,
            total_s=total,
            kv_bytes=self.buffers.get("kv_cache", 0),
            text=text.strip(),
            token_ids=ids,
            interrupted=interrupted,
        )

    def perplexity(self, ids: list[int]) -> float:
        """Perplexity over `ids`, one token at a time (llama-cpp-python keeps only the last position's logits
        unless the context was made with logits_all, whose output buffer is n_ctx x vocabulary floats)."""
        import math

        import numpy as np

        self.llm.reset()
        total = 0.0
        for i in range(len(ids) - 1):
            self.llm.eval([ids[i]])
            logits = np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float64)
            peak = logits.max()
            log_z = peak + math.log(float(np.exp(logits - peak).sum()))
            total += log_z - logits[ids[i + 1]]
        self.llm.reset()
        return float(math.exp(total / max(len(ids) - 1, 1)))

    def set_seed(self, seed: int) -> None:
        self.llm.set_seed(seed)

    def memory_details(self) -> dict[str, int]:
        return {
            "file_backed_weights": self.buffers.get("file_backed_weights", 0),
            "repacked_weights": self.buffers.get("repacked_weights", 0),
            "kv_cache": self.buffers.get("kv_cache", 0),
            "compute_buffer": self.buffers.get("compute", 0),
            "output_buffer": self.buffers.get("output", 0),
        }

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()


# ---------------------------------------------------------------------------------------------------------------
# Child-process entry points: `python -m advisor.engines.llamacpp probe [MODEL.gguf]` and
# `... quantize SOURCE TARGET TYPE THREADS`


def _child_probe(args: list[str]) -> int:
    import llama_cpp

    _install_log_callback()
    info = {
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "version": getattr(llama_cpp, "__version__", None),
    }
    if args:
        llm = llama_cpp.Llama(args[0], n_ctx=256, n_threads=_physical_cores(), n_gpu_layers=-1 if
                              info["gpu_offload"] else 0, verbose=False)  # fmt: skip
        tokens = llm.tokenize(b"The capital of France is", add_bos=True)
        llm.eval(tokens)  # a prompt-sized batch: the matrix-matrix kernels
        llm.eval([tokens[-1]])  # one token: the matrix-vector kernels
        llm.close()
    print(json.dumps(info))
    return 0


def quantize_here(source: Path, target: Path, ftype: str, *, threads: int | None = None, pure: bool = False) -> None:
    """llama.cpp's quantizer in this process (a child's: see `quantize`); `pure` gives every tensor the file
    type's default type (llama-quantize --pure). EngineError when it fails."""
    import llama_cpp

    _install_log_callback()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[ftype]
    params.nthread = threads or _physical_cores()
    params.allow_requantize = True
    params.pure = pure
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        errors = [line.strip() for line in _take_log() if "error" in line.lower() or "failed" in line.lower()]
        raise EngineError(errors[-1] if errors else f"llama_model_quantize returned {code}")


def _child_quantize(args: list[str]) -> int:
    source, target, ftype, threads = args[0], args[1], args[2], int(args[3])
    try:
        quantize_here(Path(source), Path(target), ftype, threads=threads)
    except EngineError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    verb, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    handlers = {"probe": _child_probe, "quantize": _child_quantize}
    if verb not in handlers:
        print(f"usage: python -m advisor.engines.llamacpp {{{'|'.join(handlers)}}} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(handlers[verb](rest))
