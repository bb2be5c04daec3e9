"""The runtime interface: what `bench` and `chat` need from a loaded model, whatever runs it.

An `Engine` is made by `advisor.engines.open_engine(artifact, options)` and holds one loaded model. It
tokenizes and lays out conversations with the model's own chat template, generates with a timestamp for every
step (Ctrl-C stops an answer and keeps what was generated), reports the memory it holds, and closes. Neither
command imports a backend: transformers and llama.cpp are two implementations, chosen by the plan.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from advisor.errors import RuntimeLoadError


class EngineError(RuntimeLoadError):
    """Loading or running a model failed in a way the user can act on (one line)."""


class ChatTemplateError(EngineError):
    """The model has no chat template, or its template rejected the conversation."""


@dataclass(frozen=True)
class Artifact:
    """What an engine loads: a transformers model folder, or a GGUF file (the first part of a split one)."""

    model_id: str  # what the user named (or the embedded model's Hub id)
    path: Path
    runtime: str  # transformers | llama.cpp
    origin: str  # embedded | gguf | local | hub | converted | quantized
    allow_pickle: bool = False
    note: str = ""


@dataclass(frozen=True)
class LoadOptions:
    """How to load: the precision, the context to hold, and each runtime's placement knobs."""

    precision: str
    context: int = 4096  # tokens the engine must be able to hold (llama.cpp allocates its KV cache for this)
    device_map: Any = None  # transformers: "cpu", "auto", "cuda:0" or a dict; None: the best here
    max_memory: dict | None = None  # transformers, with device_map="auto"
    gpu_layers: int | None = None  # llama.cpp: decoder layers on the GPU (None: all, where a GPU build runs)
    threads: int | None = None  # llama.cpp: None = physical cores
    kv_cache_type: str | None = None  # llama.cpp type_k/type_v: f16 (default), q8_0, q4_0
    flash_attn: bool | None = None  # llama.cpp: None = its own default
    trust_remote_code: bool = False


@dataclass
class Generation:
    """One generation, timed: `arrivals` holds (seconds from the call, tokens) for each step that produced
    tokens: one token a step in plain decoding, several in a step of assisted generation."""

    prompt_tokens: int
    new_tokens: int
    arrivals: list[tuple[float, int]]
    total_s: float
    kv_bytes: int  # KV cache the engine holds at the end (transformers) or allocated for its context (llama.cpp)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ttft_s(self) -> float:
        """Seconds from the call to the first new token."""
        return self.arrivals[0][0] if self.arrivals else self.total_s

    @property
    def token_times(self) -> list[float]:
        """When each new token was ready (seconds from the call); a step's tokens share its time."""
        return [t for t, n in self.arrivals for _ in range(n)][: self.new_tokens]

    @property
    def passes(self) -> int:
        return len(self.arrivals)

    @property
    def decode_tok_s(self) -> float:
        """Steady decode speed: tokens after the first step over the time they took (0 when too few)."""
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1][0] - self.arrivals[0][0]
        later = sum(n for _, n in self.arrivals[1:])
        return later / span if span > 0 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0


class Clock:
    """Times the steps of one generation: `tick(n)` when n new tokens are ready."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.arrivals: list[tuple[float, int]] = []

    def tick(self, tokens: int = 1) -> None:
        if tokens > 0:
            self.arrivals.append((time.perf_counter() - self.start, tokens))

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class Engine(ABC):
    """A loaded model. Subclasses set the attributes in their constructor."""

    runtime: ClassVar[str]
    model_id: str
    precision: str
    placement: str  # where it was loaded: "cpu", "cuda:0", "cuda:0+cpu" ...
    layers_by_device: dict[str, int]  # decoder layers per device label, as loaded
    load_seconds: float
    weight_bytes: int  # bytes the loaded weights hold
    context_size: int | None  # tokens it can hold (llama.cpp's n_ctx); None: the cache grows as needed

    @classmethod
    @abstractmethod
    def load(cls, artifact: Artifact, options: LoadOptions) -> Engine:
        """Load `artifact` as `options` say; EngineError (one line) when that cannot be done here."""

    # -- text -------------------------------------------------------------------------------------------------

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens skipped."""

    @property
    @abstractmethod
    def has_chat_template(self) -> bool:
        """Whether the model says how to lay out a conversation."""

    @abstractmethod
    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation laid out by the model's own chat template, ready for the assistant's answer;
        ChatTemplateError when there is no template or it rejects the conversation."""

    # -- running ----------------------------------------------------------------------------------------------

    @abstractmethod
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
        """Generate after `prompt`, timing each step. `exact_length` ignores end-of-sequence (for benchmarks);
        `on_text` receives the answer's text as it arrives; `stop` is polled between steps; Ctrl-C stops the
        answer and returns what was generated, with `interrupted` set."""

    @abstractmethod
    def perplexity(self, ids: list[int]) -> float:
        """Perplexity of the model on `ids` (lower is better)."""

    def warm_up(self, tokens: int = 4) -> float:
        """One short generation so the first measured one does not pay for kernel selection, thread-pool start-up
        and allocator growth; returns its seconds."""
        t0 = time.perf_counter()
        ids = self.tokenize("Hello, how are you today? The weather is fine.")[:8] or [0]
        self.generate(ids, max_new_tokens=tokens, exact_length=True)
        return time.perf_counter() - t0

    @abstractmethod
    def set_seed(self, seed: int) -> None:
        """Seed the sampler so answers repeat."""

    def memory_details(self) -> dict[str, int]:
        """Memory the engine holds besides `weight_bytes`, by name (e.g. llama.cpp's compute buffers), and
        `file_backed_weights`: bytes of weights that live in a memory-mapped file rather than allocated memory."""
        return {}

    @abstractmethod
    def close(self) -> None:
        """Free the model and hand its memory back."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.model_id} in {self.precision} on {self.placement} ({self.runtime})"
