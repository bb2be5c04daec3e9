"""GGUF headers -> exact ModelSpec: the real SmolLM2-135M Q4_1 file, and tiny files written here."""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType, LlamaFileType

from advisor.errors import HeaderError, ModelNotFoundError
from advisor.sources.gguf import GGUFPrefixTooShort, spec_from_gguf, spec_from_gguf_prefix

SMOLLM_TOTAL = 134_515_008
SMOLLM_SIZE = 98_362_432


# ----------------------------------------------------------------------------------------------
# The real file


@pytest.fixture(scope="session")
def smollm_spec(smollm_gguf):
    return spec_from_gguf(smollm_gguf)


def test_smollm_shape(smollm_spec):
    s = smollm_spec
    assert s.source == "gguf" and s.exact is True
    assert s.id == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert s.architecture == "llama" and s.model_type == "llama"
    assert s.total_params == SMOLLM_TOTAL
    assert s.active_params == SMOLLM_TOTAL
    assert (s.num_layers, s.hidden_size, s.intermediate_size) == (30, 576, 1536)
    assert (s.num_attention_heads, s.num_kv_heads, s.head_dim) == (9, 3, 64)
    assert s.vocab_size == 49152
    assert s.max_context == 8192
    assert s.sliding_window is None and s.sliding_window_layers == 0
    assert s.num_experts is None and s.experts_per_token is None and s.is_moe is False
    assert s.kv_lora_rank is None
    assert s.tied_embeddings is True
    assert s.native_dtype is None  # quantized: the dominant type is Q4_1
    assert s.quantization == "gguf Q4_1"
    assert s.loadable_precisions is None
    assert s.files == {"SmolLM2-135M-Instruct.Q4_1.gguf": SMOLLM_SIZE}
    assert s.warnings == ()


def test_smollm_params_and_bytes(smollm_spec):
    s = smollm_spec
    assert s.checkpoint_params_by_dtype == {"Q4_1": 106_168_320, "Q8_0": 28_311_552, "F32": 35_136}
    assert s.checkpoint_bytes_by_dtype == {"Q4_1": 66_355_200, "Q8_0": 30_081_024, "F32": 140_544}
    assert sum(s.checkpoint_params_by_dtype.values()) == SMOLLM_TOTAL
    assert sum(s.checkpoint_bytes_by_dtype.values()) == s.checkpoint_bytes == 96_576_768
    # the tensor data fill the file after a 1,785,664-byte header, with no padding at the end
    assert SMOLLM_SIZE - s.checkpoint_bytes == 1_785_664
    p = s.params
    assert p.embedding == 49152 * 576 == 28_311_552
    assert p.lm_head == 0
    assert p.linear == 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536) == 106_168_320
    assert p.linear_rows == 30 * (576 + 192 + 192 + 576 + 1536 + 1536 + 576) == 155_520
    assert p.other == 30 * 2 * 576 + 576 == 35_136
    assert p.total == SMOLLM_TOTAL
    assert (p.routed_experts, p.routed_experts_linear, p.linear_bias) == (0, 0, 0)
    assert p.attn_v == 30 * 576 * 192 == 3_317_760
    assert p.ffn_down == 30 * 576 * 1536 == 26_542_080


def test_smollm_kv(smollm_spec):
    kv = smollm_spec.kv
    assert kv.full_elements == 30 * (3 * 64 + 3 * 64) == 11_520
    assert kv.full_layers == 30
    assert (kv.sliding_elements, kv.sliding_layers, kv.sliding_window) == (0, 0, None)
    assert kv.latent_elements is None and kv.note is None


def test_smollm_json_roundtrip(smollm_spec):
    out = smollm_spec.to_json()
    assert out["total_params"] == SMOLLM_TOTAL
    assert out["kv"]["full_elements"] == 11_520
    assert out["checkpoint_bytes_by_dtype"]["Q8_0"] == 30_081_024


def test_prefix_gives_the_same_spec(smollm_gguf, smollm_spec):
    with open(smollm_gguf, "rb") as f:
        prefix = f.read(8 << 20)
    spec = spec_from_gguf_prefix(prefix, SMOLLM_SIZE, filename=smollm_gguf.name)
    assert spec == smollm_spec


def test_prefix_too_short_then_fetch_more(smollm_gguf, smollm_spec):
    data = smollm_gguf.read_bytes()[: 4 << 20]
    with pytest.raises(GGUFPrefixTooShort) as info:
        spec_from_gguf_prefix(data[:1024], SMOLLM_SIZE, filename=smollm_gguf.name)
    e = info.value
    assert e.have_bytes == 1024
    assert 1024 < e.needed_bytes <= 1_785_664
    assert e.suggested_size == 1 << 20
    assert smollm_gguf.name in str(e) and "fetch the first 1,048,576 bytes" in str(e)
    # the caller's loop: fetch what is suggested until the header fits
    size, tries = e.suggested_size, 1
    while True:
        try:
            spec = spec_from_gguf_prefix(data[:size], SMOLLM_SIZE, filename=smollm_gguf.name)
            break
        except GGUFPrefixTooShort as more:
            assert more.suggested_size > size
            size, tries = more.suggested_size, tries + 1
    assert (size, tries) == (2 << 20, 2)  # 1 KiB -> 1 MiB -> 2 MiB (the header is 1.7 MiB)
    assert spec == smollm_spec


def test_prefix_shorter_than_preamble(smollm_gguf):
    with pytest.raises(GGUFPrefixTooShort) as info:
        spec_from_gguf_prefix(smollm_gguf.read_bytes()[:10], SMOLLM_SIZE, filename="x.gguf")
    assert info.value.needed_bytes == 24


def test_truncated_copy_of_real_file(smollm_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm_gguf.read_bytes()[:100])
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=r"'.*cut\.gguf' is truncated or corrupt: .*272 tensors.*re-download"):
            spec_from_gguf(cut)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # refused from the preamble's counts, before walking anything


def test_real_file_cut_inside_tensor_data(smollm_gguf, tmp_path):
    cut = tmp_path / "half.gguf"
    cut.write_bytes(smollm_gguf.read_bytes()[: 2 << 20])  # the header is whole, the data are not
    with pytest.raises(HeaderError, match=r"half\.gguf' is truncated: its tensor data run to byte"):
        spec_from_gguf(cut)


# ----------------------------------------------------------------------------------------------
# Tiny files written with gguf.GGUFWriter

H, HEADS, KV_HEADS, HEAD_DIM, FF, VOCAB, LAYERS = 64, 4, 2, 16, 128, 100, 2


def _f16(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float16)


def _f32(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def _q8_0(rows: int, cols: int) -> tuple[np.ndarray, GGMLQuantizationType]:
    """Raw Q8_0 bytes for a (rows, cols) weight: 34 bytes per block of 32 (the writer infers the shape)."""
    return np.zeros((rows, cols // 32 * 34), dtype=np.uint8), GGMLQuantizationType.Q8_0


def _write(path: Path, arch: str, tensors: dict, kv=None, *, file_type: int | None = None, split_max_tensors=0):
    """A GGUF with the usual llama-style keys, then whatever `kv(writer)` adds. Numpy shapes are (rows, cols)."""
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    w.add_block_count(LAYERS)
    w.add_context_length(2048)
    w.add_embedding_length(H)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    if kv is not None:
        kv(w)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            w.add_tensor(name, value[0], raw_dtype=value[1])
        else:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _attention(i: int) -> dict:
    return {
        f"blk.{i}.attn_norm.weight": _f32(H),
        f"blk.{i}.attn_q.weight": _f16(HEADS * HEAD_DIM, H),
        f"blk.{i}.attn_k.weight": _f16(KV_HEADS * HEAD_DIM, H),
        f"blk.{i}.attn_v.weight": _f16(KV_HEADS * HEAD_DIM, H),
        f"blk.{i}.attn_output.weight": _f16(H, HEADS * HEAD_DIM),
        f"blk.{i}.ffn_norm.weight": _f32(H),
    }


def _dense_llama(untied: bool) -> dict:
    t = {"token_embd.weight": _f16(VOCAB, H)}
    for i in range(LAYERS):
        t |= _attention(i)
        t |= {
            f"blk.{i}.ffn_gate.weight": _f16(FF, H),
            f"blk.{i}.ffn_up.weight": _f16(FF, H),
            f"blk.{i}.ffn_down.weight": _q8_0(H, FF),
        }
    t["output_norm.weight"] = _f32(H)
    if untied:
        t["output.weight"] = _f16(VOCAB, H)
    return t


ATTN_PER_LAYER = 4096 + 2048 + 2048 + 4096  # q, k, v, o
DENSE_LINEAR = LAYERS * (ATTN_PER_LAYER + 3 * FF * H)  # 73,728
OTHER = LAYERS * 2 * H + H  # norms: 320
EMBED = VOCAB * H  # 6,400


def test_tiny_llama_tied(tmp_path):
    path = _write(tmp_path / "tiny.gguf", "llama", _dense_llama(untied=False), file_type=LlamaFileType.MOSTLY_F16)
    s = spec_from_gguf(path, model_id="me/tiny")
    assert s.id == "me/tiny"
    assert s.total_params == s.active_params == EMBED + DENSE_LINEAR + OTHER == 80_448
    assert s.tied_embeddings is True
    assert (s.num_layers, s.hidden_size, s.intermediate_size, s.max_context) == (2, 64, 128, 2048)
    assert (s.num_attention_heads, s.num_kv_heads, s.head_dim, s.vocab_size) == (4, 2, 16, 100)
    p = s.params
    assert (p.embedding, p.lm_head, p.linear, p.other) == (6_400, 0, 73_728, 320)
    assert p.linear_rows == LAYERS * (64 + 32 + 32 + 64 + 128 + 128 + 64) == 1_024
    assert p.attn_v == 2 * 2048 and p.ffn_down == 2 * 8192
    assert s.checkpoint_params_by_dtype == {"F16": 63_744, "Q8_0": 16_384, "F32": 320}
    assert s.checkpoint_bytes_by_dtype == {"F16": 127_488, "Q8_0": 2 * 8192 // 32 * 34, "F32": 1_280}
    assert s.checkpoint_bytes == 127_488 + 17_408 + 1_280
    assert s.quantization == "gguf F16"  # from general.file_type
    assert s.native_dtype == "float16"
    assert s.kv.full_elements == LAYERS * (KV_HEADS * HEAD_DIM * 2) == 128
    assert s.files == {"tiny.gguf": path.stat().st_size}


def test_tiny_llama_untied_without_file_type(tmp_path):
    path = _write(tmp_path / "untied.gguf", "llama", _dense_llama(untied=True))
    s = spec_from_gguf(path)
    assert s.tied_embeddings is False
    assert s.params.lm_head == EMBED
    assert s.total_params == 80_448 + 6_400 == 86_848
    assert s.quantization == "gguf F16"  # no general.file_type: the dominant type


def test_fake_moe_active_params(tmp_path):
    n_exp, used, ff_exp = 4, 2, 32
    t = {"token_embd.weight": _f16(VOCAB, H), "output_norm.weight": _f32(H), "output.weight": _f16(VOCAB, H)}
    for i in range(LAYERS):
        t |= _attention(i)
        t |= {
            f"blk.{i}.ffn_gate_inp.weight": _f32(n_exp, H),  # router
            f"blk.{i}.ffn_gate_exps.weight": _f16(n_exp, ff_exp, H),
            f"blk.{i}.ffn_up_exps.weight": _f16(n_exp, ff_exp, H),
            f"blk.{i}.ffn_down_exps.weight": _f16(n_exp, H, ff_exp),
            f"blk.{i}.ffn_down_exps.bias": _f32(n_exp, H),  # gpt-oss style expert bias
            f"blk.{i}.ffn_gate_shexp.weight": _f16(ff_exp, H),  # shared expert: always active
            f"blk.{i}.ffn_up_shexp.weight": _f16(ff_exp, H),
            f"blk.{i}.ffn_down_shexp.weight": _f16(H, ff_exp),
        }

    def kv(w):
        w.add_expert_count(n_exp)
        w.add_expert_used_count(used)

    s = spec_from_gguf(_write(tmp_path / "moe.gguf", "qwen2moe", t, kv))
    routed_per_layer = 3 * n_exp * ff_exp * H + n_exp * H  # 24,576 + 256
    shared_per_layer = 3 * ff_exp * H
    router_per_layer = n_exp * H
    total = 2 * EMBED + H + LAYERS * (2 * H + ATTN_PER_LAYER + routed_per_layer + shared_per_layer + router_per_layer)
    assert s.total_params == total == 100_160
    assert s.params.routed_experts == LAYERS * routed_per_layer == 49_664
    assert s.params.routed_experts_linear == 0  # fused 3-D tensors
    assert s.active_params == total - LAYERS * routed_per_layer * (n_exp - used) // n_exp == 75_328
    assert s.is_moe and (s.num_experts, s.experts_per_token) == (4, 2)
    p = s.params
    assert p.linear == LAYERS * (ATTN_PER_LAYER + shared_per_layer)  # 2-D weights; not the router
    assert p.other == total - p.embedding - p.lm_head - p.linear
    assert p.ffn_down == LAYERS * (n_exp * H * ff_exp + H * ff_exp)  # routed + shared down projections
    assert p.linear_bias == 0  # expert biases belong to fused tensors, not to a linear layer
    assert p.total == s.total_params


def test_old_per_expert_layout(tmp_path):
    """Pre-2024 Mixtral files store one 2-D tensor per expert: ffn_gate.{e}.weight."""
    t = {"token_embd.weight": _f16(VOCAB, H)}
    for i in range(LAYERS):
        t |= _attention(i)
        for e in range(4):
            t |= {
                f"blk.{i}.ffn_gate.{e}.weight": _f16(FF, H),
                f"blk.{i}.ffn_up.{e}.weight": _f16(FF, H),
                f"blk.{i}.ffn_down.{e}.weight": _f16(H, FF),
            }

    def kv(w):
        w.add_expert_count(4)
        w.add_expert_used_count(1)

    s = spec_from_gguf(_write(tmp_path / "old.gguf", "llama", t, kv))
    routed = LAYERS * 4 * 3 * FF * H
    assert s.params.routed_experts == s.params.routed_experts_linear == routed == 196_608
    assert s.active_params == s.total_params - routed * 3 // 4


def test_linear_bias_counted(tmp_path):
    t = _dense_llama(untied=False) | {"blk.0.attn_q.bias": _f32(HEADS * HEAD_DIM)}
    s = spec_from_gguf(_write(tmp_path / "bias.gguf", "qwen2", t))
    assert s.params.linear_bias == 64
    assert s.params.other == OTHER + 64


def test_gemma2_alternating_sliding_window(tmp_path):
    def kv(w):
        w.add_sliding_window(4096)
        w.add_block_count(4)  # overwrite: 4 layers, even ones slide

    t = {"token_embd.weight": _f16(VOCAB, H)}
    for i in range(4):
        t |= _attention(i)
    s = spec_from_gguf(_write(tmp_path / "g2.gguf", "gemma2", t, kv))
    assert s.sliding_window == 4096 and s.sliding_window_layers == 2
    kv_ = s.kv
    assert (kv_.full_layers, kv_.sliding_layers, kv_.sliding_window) == (2, 2, 4096)
    assert kv_.full_elements == kv_.sliding_elements == 2 * (KV_HEADS * HEAD_DIM * 2)


def test_per_layer_arrays_and_explicit_pattern(tmp_path):
    def kv(w):
        w.add_head_count_kv([2, 0])  # layer 1 is recurrent: no KV cache
        w.add_head_count([4, 4])
        w.add_key_length(24)
        w.add_value_length(8)
        w.add_sliding_window(512)
        w.add_sliding_window_pattern([True, False])

    s = spec_from_gguf(_write(tmp_path / "arr.gguf", "lfm2", _dense_llama(untied=False), kv))
    assert (s.num_attention_heads, s.num_kv_heads, s.head_dim) == (4, 2, 24)
    assert s.kv.sliding_elements == 2 * (24 + 8) and s.kv.sliding_layers == 1
    assert s.kv.full_elements == 0 and s.kv.full_layers == 0
    assert "recurrent" in s.kv.note


def test_unknown_sliding_pattern_leaves_a_note(tmp_path):
    s = spec_from_gguf(
        _write(tmp_path / "m.gguf", "mistral", _dense_llama(untied=False), lambda w: w.add_sliding_window(4096))
    )
    assert s.sliding_window == 4096 and s.sliding_window_layers == 0
    assert s.kv.full_elements == 128 and s.kv.full_layers == 2
    assert "upper bound" in s.kv.note


def test_mla_latent_and_decompressed(tmp_path):
    def kv(w):
        w.add_head_count_kv(1)
        w.add_kv_lora_rank(32)
        w.add_rope_dimension_count(8)
        w.add_key_length(40)  # kv_lora_rank + rope: the latent llama.cpp caches
        w.add_value_length(32)
        w.add_key_length_mla(24)  # per-head K and V once decompressed
        w.add_value_length_mla(16)

    s = spec_from_gguf(_write(tmp_path / "ds.gguf", "deepseek2", _dense_llama(untied=False), kv))
    assert (s.kv_lora_rank, s.qk_rope_head_dim, s.head_dim, s.num_kv_heads) == (32, 8, 24, 4)
    assert s.kv.full_elements == LAYERS * HEADS * (24 + 16) == 320
    assert s.kv.latent_elements == LAYERS * (32 + 8) == 80


def test_split_model_reads_all_shards(tmp_path):
    whole = spec_from_gguf(_write(tmp_path / "whole.gguf", "llama", _dense_llama(untied=True)))
    _write(tmp_path / "split.gguf", "llama", _dense_llama(untied=True), split_max_tensors=10)
    shards = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert [p.name for p in shards] == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for shard in (shards[0], shards[2]):  # the metadata live in the first shard
        s = spec_from_gguf(shard)
        assert s.exact is True and s.warnings == ()
        assert s.total_params == whole.total_params == 86_848
        assert s.checkpoint_bytes == whole.checkpoint_bytes
        assert s.kv == whole.kv
        assert s.files == {p.name: p.stat().st_size for p in shards}
    shards[1].unlink()
    s = spec_from_gguf(shards[0])
    assert s.exact is False and s.total_params < whole.total_params
    assert "split into 3 files" in s.warnings[0] and "split-00002-of-00003.gguf" in s.warnings[0]


def test_adapter_is_refused(tmp_path):
    path = _write(tmp_path / "lora.gguf", "llama", _dense_llama(untied=False), lambda w: w.add_type("adapter"))
    with pytest.raises(HeaderError, match="LoRA adapter"):
        spec_from_gguf(path)


# ----------------------------------------------------------------------------------------------
# Bad files


@pytest.fixture
def tiny(tmp_path) -> Path:
    return _write(tmp_path / "tiny.gguf", "llama", _dense_llama(untied=False))


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        spec_from_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError, match="directory"):
        spec_from_gguf(tmp_path)


def test_bad_magic(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"abcd" + bytes(100))
    with pytest.raises(HeaderError) as info:
        spec_from_gguf(path)
    assert str(info.value) == (f"'{path}' is not a GGUF file (bad magic b'abcd'): check the path or re-download it.")
    with pytest.raises(HeaderError, match=r"'x\.gguf' is not a GGUF file \(bad magic"):
        spec_from_gguf_prefix(b"abcd" + bytes(100), 1000, filename="x.gguf")


def test_bad_version(tiny):
    data = bytearray(tiny.read_bytes())
    struct.pack_into("<I", data, 4, 7)
    tiny.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match="GGUF version 7"):
        spec_from_gguf(tiny)
    struct.pack_into("<I", data, 4, 1)
    tiny.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match="version 1"):
        spec_from_gguf(tiny)


def test_forged_counts_fail_fast_without_allocating(tmp_path):
    path = tmp_path / "forged.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**60, 1) + bytes(4096))
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=r"1,152,921,504,606,846,976 tensors"):
            spec_from_gguf(path)
        with pytest.raises(HeaderError, match="truncated or corrupt"):
            spec_from_gguf_prefix(path.read_bytes(), 1 << 40, filename="forged.gguf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _offset_after_key(data: bytes, key: str) -> int:
    """Offset of the value-type field that follows a metadata key."""
    needle = struct.pack("<Q", len(key)) + key.encode()
    at = data.index(needle)
    return at + len(needle)


def test_string_length_past_end_of_file(tiny):
    data = bytearray(tiny.read_bytes())
    at = _offset_after_key(data, "general.architecture")  # u32 type (STRING), then u64 length
    struct.pack_into("<Q", data, at + 4, 2**40)
    tiny.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=r"is truncated or corrupt: its header runs to byte 1,099,511,6"):
            spec_from_gguf(tiny)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the terabyte string was never read


def test_absurd_array_length(tiny):
    data = bytearray(tiny.read_bytes())
    at = _offset_after_key(data, "tokenizer.ggml.tokens")  # u32 ARRAY, u32 item type, u64 length
    struct.pack_into("<Q", data, at + 8, 2**40)
    tiny.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match=r"corrupt \(a metadata array claims 1,099,511,627,776 items\)"):
        spec_from_gguf(tiny)


def test_unknown_tensor_type(tiny):
    data = bytearray(tiny.read_bytes())
    at = _offset_after_key(data, "output_norm.weight")  # u32 n_dims, u64 dims..., u32 type
    (n_dims,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 999)
    tiny.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match=r"tiny\.gguf' has a corrupt GGUF header \(.*999"):
        spec_from_gguf(tiny)


def test_prefix_inconsistent_sizes(tiny):
    data = tiny.read_bytes()
    with pytest.raises(HeaderError, match="re-fetch its size"):
        spec_from_gguf_prefix(data, len(data) - 1, filename="tiny.gguf")
    # a prefix whose header points past the claimed total size is corrupt, not too short
    with pytest.raises(HeaderError, match="truncated"):
        spec_from_gguf_prefix(data[:200], 300, filename="tiny.gguf")


def test_prefix_of_whole_small_file_matches(tiny):
    data = tiny.read_bytes()
    assert spec_from_gguf_prefix(data, len(data), filename="tiny.gguf") == spec_from_gguf(tiny)


def test_module_import_stays_light():
    code = "import sys, advisor.sources.gguf; print('gguf' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_big_endian_file(tmp_path):
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(LAYERS)
    w.add_embedding_length(H)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_tensor("token_embd.weight", _f32(VOCAB, H))
    w.add_tensor("blk.0.attn_k.weight", _f32(KV_HEADS * HEAD_DIM, H))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    s = spec_from_gguf(path)
    assert (s.total_params, s.vocab_size, s.head_dim) == (EMBED + 2048, VOCAB, HEAD_DIM)
    assert s.kv.full_elements == 128 and s.native_dtype == "float32"
