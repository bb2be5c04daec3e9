"""The transformers engine: a model folder loaded with `from_pretrained` in one of advisor's precisions.

fp32/bf16/fp16 load as they are; int8 and int4 through bitsandbytes (LLM.int8, nf4). Pickled weights are never
loaded unless the folder was fetched with `allow_pickle`; repository code never runs unless
`trust_remote_code` is set. Every generation is timed step by step through a streamer, which sees each step's
tokens as they leave `generate` (one token a step, several in assisted generation).
"""

from __future__ import annotations

import importlib.util
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.engines import memwatch
from advisor.engines.base import Artifact, ChatTemplateError, Clock, Engine, EngineError, Generation, LoadOptions
from advisor.hf import quiet
from advisor.textutil import first_line, safe


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
    try:
        prec = P.get(precision)
    except KeyError:
        raise EngineError(f"Unknown precision '{safe(precision, 60)}': choose one of {', '.join(P.names())}.") from None
    if prec.runtime != "transformers":
        raise EngineError(
            f"Precision '{precision}' runs on llama.cpp, not transformers: pass --runtime llama.cpp, or choose "
            f"one of {', '.join(P.TRANSFORMERS_PRECISIONS)}."
        )
    if prec.kind == "float":
        return {"dtype": _torch_dtype(precision)}
    if prec.kind == "prequant":
        return {}  # the checkpoint's own quantization_config
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"Precision '{precision}' needs bitsandbytes: pip install bitsandbytes.")
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


def _unique_tensors(model) -> Iterator[Any]:
    seen: set[tuple] = set()
    for tensor in model.state_dict().values():
        if not hasattr(tensor, "data_ptr") or tensor.device.type == "meta":
            continue
        key = (str(tensor.device), tensor.data_ptr(), tensor.numel(), str(tensor.dtype))
        if key not in seen:
            seen.add(key)
            yield tensor


def held_weight_bytes(model) -> int:
    """Bytes the loaded weights hold: every tensor of the state dict once (tied tensors, bitsandbytes
    scales and quantization maps included)."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def mapped_weight_bytes(model) -> int:
    """Bytes of the model's CPU tensors that live in a memory-mapped file (the checkpoint), not in memory the
    process allocated: a load in the file's own dtype is zero-copy, and the memory sampler must count those
    file-backed pages as the model's memory all the same."""
    blocks = (
        (t.data_ptr(), t.numel() * t.element_size())
        for t in _unique_tensors(model)
        if t.device.type == "cpu" and t.numel()
    )
    return memwatch.mapped_bytes(blocks)


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


def _placement(model) -> tuple[str, dict[str, int]]:
    """(label, decoder layers per device) of a loaded model, from accelerate's device map."""
    first = next(model.parameters())
    hf_map = getattr(model, "hf_device_map", None) or {}

    def label(device: Any) -> str:
        text = str(device)
        return f"cuda:{text}" if text.isdigit() else text

    devices = list(dict.fromkeys(label(v) for v in hf_map.values())) if hf_map else [label(first.device)]
    layers: dict[str, int] = {}
    for name, device in hf_map.items():
        parts = name.split(".")
        if any(p.isdigit() for p in parts) and ("layers" in parts or "h" in parts or "blocks" in parts):
            layers[label(device)] = layers.get(label(device), 0) + 1
    config = getattr(model, "config", None)
    total = getattr(config.get_text_config(), "num_hidden_layers", None) if config is not None else None
    if not layers:
        layers = {devices[0]: int(total or 1)}
    gpus = [d for d in devices if d != "cpu" and d != "disk"]
    text = "+".join(gpus + (["cpu"] if "cpu" in devices and gpus else []) or devices)
    return text, layers


class _TimedStreamer:
    """A transformers streamer that times each step: generate hands it the prompt first, then each step's new
    tokens. With `on_text`, it also decodes the answer as it grows (words whole, like TextStreamer)."""

    def __init__(self, tokenizer, clock: Clock, *, text: bool) -> None:
        self.clock = clock
        self.prompt_seen = False
        self.text_queue: queue.Queue | None = queue.Queue() if text else None
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._printed = 0

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self.clock.tick(len(ids))
        if self.text_queue is not None:
            self._ids.extend(ids)
            text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # a multi-byte character not complete yet
                return
            cut = len(text) if text.endswith((" ", "\n")) else text.rfind(" ") + 1
            if cut > self._printed:
                self.text_queue.put(text[self._printed : cut])
                self._printed = cut

    def end(self) -> None:
        if self.text_queue is not None:
            text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
            if len(text) > self._printed:
                self.text_queue.put(text[self._printed :])
            self._printed = len(text)
            self.text_queue.put(None)


class TransformersEngine(Engine):
    runtime = "transformers"

    def __init__(self, model, tokenizer, *, artifact: Artifact, options: LoadOptions, load_seconds: float) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.artifact = artifact
        self.model_id = artifact.model_id
        self.precision = options.precision
        self.options = options
        self.load_seconds = load_seconds
        self.weight_bytes = held_weight_bytes(model)
        self.placement, self.layers_by_device = _placement(model)
        self.context_size = None
        self.assistant: TransformersEngine | None = None

    @classmethod
    def load(cls, artifact: Artifact, options: LoadOptions) -> TransformersEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = load_kwargs(options.precision)
        device_map = options.device_map or default_device_map()
        t0 = time.perf_counter()
        try:
            with quiet(), memwatch.trimming() if device_map == "cpu" else _null():
                model = AutoModelForCausalLM.from_pretrained(
                    artifact.path,
                    device_map=device_map,
                    max_memory=options.max_memory,
                    trust_remote_code=options.trust_remote_code,
                    use_safetensors=None if artifact.allow_pickle else True,
                    **kwargs,
                )
                tokenizer = AutoTokenizer.from_pretrained(artifact.path, trust_remote_code=options.trust_remote_code)
        except torch.OutOfMemoryError:
            raise EngineError(
                f"Out of memory loading '{safe(artifact.model_id)}' in {options.precision}: try a smaller precision."
            ) from None
        except (ImportError, ValueError, RuntimeError, OSError, KeyError, TypeError) as exc:
            raise EngineError(
                f"Cannot load '{safe(artifact.model_id)}' in {options.precision}: {first_line(exc)}"
            ) from None
        model.eval()
        memwatch.release_freed_memory()
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer, artifact=artifact, options=options, load_seconds=time.perf_counter() - t0)

    # -- text -------------------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.has_chat_template:
            raise no_template_error(self.model_id)
        try:
            enc = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except Exception as exc:  # jinja errors: "System role not supported", "roles must alternate" ...
            raise ChatTemplateError(
                f"The chat template of '{safe(self.model_id)}' rejected the conversation: {first_line(exc)}"
            ) from None
        ids = enc["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    # -- running ----------------------------------------------------------------------------------------------

    def attach_assistant(self, draft: TransformersEngine) -> None:
        """Use `draft` for assisted generation; it must share this model's tokenizer and vocabulary."""
        t_tok, d_tok = self.tokenizer, draft.tokenizer
        t_vocab = self.model.config.get_text_config().vocab_size
        d_vocab = draft.model.config.get_text_config().vocab_size
        same_tokens = t_tok.get_vocab() == d_tok.get_vocab()
        if not same_tokens or t_vocab != d_vocab:
            what = (
                f"its tokenizer ({len(d_tok)} tokens) differs from the target's ({len(t_tok)} tokens)"
                if not same_tokens
                else f"its vocabulary size ({d_vocab}) differs from the target's ({t_vocab})"
            )
            raise EngineError(
                f"The assistant '{safe(draft.model_id)}' cannot draft for '{safe(self.model_id)}': {what}; "
                "choose a smaller model of the same family."
            )
        self.assistant = draft

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
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model = self.model
        device = next(model.parameters()).device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        clock = Clock()
        streamer = _TimedStreamer(self.tokenizer, clock, text=on_text is not None)
        interrupted = threading.Event()

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                halt = interrupted.is_set() or bool(stop and stop())
                return torch.full((input_ids.shape[0],), halt, dtype=torch.bool, device=input_ids.device)

        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList([Stop()]),
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
            attention_mask=torch.ones_like(ids),
        )
        if exact_length:
            kwargs["min_new_tokens"] = max_new_tokens
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.assistant is not None:
            kwargs["assistant_model"] = self.assistant.model
        # Chunking needs a cache to fill (transformers refuses it for cacheless models: rwkv, xlnet ...).
        has_cache = getattr(model, "_supports_default_dynamic_cache", lambda: True)() and (
            getattr(getattr(model, "generation_config", None), "use_cache", True) is not False
        )
        chunk = M.prefill_chunk(ids.shape[1], device_kind=device.type)
        if has_cache and chunk < ids.shape[1]:
            # A long prompt is prefilled in chunks, like llama.cpp's micro-batches: the activations (and
            # the freed buffers the allocator keeps) scale with the chunk, not with the prompt.
            kwargs["prefill_chunk_size"] = chunk

        def run() -> Any:
            with torch.inference_mode(), quiet():
                return model.generate(ids, **kwargs)

        out = run() if on_text is None else self._stream(run, streamer, on_text, interrupted)
        total = clock.elapsed()
        if device.type == "cpu":
            memwatch.release_freed_memory(collect=False)  # a long prompt's freed prefill buffers go back
        new_ids = out.sequences[0, ids.shape[1] :].tolist()
        cache = getattr(out, "cache", None)
        if cache is None:
            with quiet():  # the old name still works, with a deprecation line
                cache = getattr(out, "past_key_values", None)
        return Generation(
            prompt_tokens=len(prompt),
            new_tokens=len(new_ids),
            arrivals=clock.arrivals,
            total_s=total,
            kv_bytes=cache_bytes(cache),
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True).strip(),
            token_ids=new_ids,
            interrupted=interrupted.is_set(),
        )

    @staticmethod
    def _stream(run: Callable[[], Any], streamer: _TimedStreamer, on_text, interrupted: threading.Event) -> Any:
        """Run `run` in a worker thread and hand its text to `on_text` here, in the calling thread, where Python
        delivers Ctrl-C: that stops the answer at its next step and keeps what was generated."""
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["out"] = run()
            except BaseException as exc:  # handed to the calling thread
                result["error"] = exc
            finally:
                streamer.end()

        worker = threading.Thread(target=work, name="advisor-generate", daemon=True)
        worker.start()
        assert streamer.text_queue is not None
        done = False
        while not done:
            try:
                piece = streamer.text_queue.get(timeout=0.2)
                if piece is None:
                    done = True
                elif piece:
                    on_text(piece)
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # stop at the next step; keep draining what is already generated
                interrupted.set()
        while worker.is_alive():
            try:
                worker.join()
            except KeyboardInterrupt:
                interrupted.set()
        if "error" in result:
            raise result["error"]
        return result["out"]

    def perplexity(self, ids: list[int]) -> float:
        import math

        import torch

        tensor = torch.tensor([ids], dtype=torch.long, device=next(self.model.parameters()).device)
        with torch.inference_mode(), quiet():
            out = self.model(tensor, labels=tensor)
        return float(math.exp(out.loss.float().item()))

    def set_seed(self, seed: int) -> None:
        from transformers import set_seed

        set_seed(seed)

    def memory_details(self) -> dict[str, int]:
        return {"file_backed_weights": mapped_weight_bytes(self.model)}

    def close(self) -> None:
        import gc

        self.model = None
        if self.assistant is not None:
            self.assistant.close()
            self.assistant = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass


def no_template_error(model_id: str) -> ChatTemplateError:
    return ChatTemplateError(
        f"'{safe(model_id)}' has no chat template (its tokenizer does not say how to lay out a conversation): "
        "it is probably a base model; use its instruct/chat variant."
    )


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
