"""advisor.sources.local (folders, the Hugging Face cache), quantized and crosscheck: headers only, never data."""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
from hubserver import (
    catalog_config,
    catalog_tensors,
    running_hub,
    safetensors_header,
    split_shards,
    write_fake_safetensors,
)

from advisor.errors import ConfigError, HeaderError, ModelNotFoundError
from advisor.sources.crosscheck import cross_check
from advisor.sources.local import list_cached_models, spec_from_folder
from advisor.sources.quantized import describe_quantization
from advisor.spec import ModelSpec, ParamBreakdown


@pytest.fixture
def hub_server(monkeypatch):
    """The stand-in Hub (tests/hubserver.py), running for this test."""
    yield from running_hub(monkeypatch)


TINY = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
LOCAL_ONLY = (
    "checkpoint_bytes", "checkpoint_params_by_dtype", "checkpoint_bytes_by_dtype", "files", "revision", "gated",
    "warnings", "label", "quantization", "loadable_precisions", "id",
)  # fmt: skip


def _strip(spec: ModelSpec) -> ModelSpec:
    out = {}
    for f in dataclasses.fields(spec):
        if f.name in LOCAL_ONLY and f.name != "id":
            out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return dataclasses.replace(spec, id="x", **out)


def write_tiny_model(folder: Path, config: dict | None = None) -> int:
    """config.json + model.safetensors written by the safetensors library from a real (tiny) model."""
    import torch
    import transformers
    from safetensors.torch import save_model

    config = dict(config or TINY)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    rest = {k: v for k, v in config.items() if k != "model_type"}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(config["model_type"], **rest)
    )
    save_model(model, str(folder / "model.safetensors"))
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Folders


def test_folder_with_config_and_safetensors(tmp_path):
    from advisor.sources.config import spec_from_config

    folder = tmp_path / "tiny-llama"
    n = write_tiny_model(folder)
    spec = spec_from_folder(folder)
    assert spec.source == "local" and spec.id == "tiny-llama"
    assert _strip(spec) == _strip(spec_from_config(TINY, model_id="x", source="local"))
    assert spec.total_params == n == sum(spec.checkpoint_params_by_dtype.values())
    assert spec.checkpoint_params_by_dtype == {"F32": n}
    assert spec.checkpoint_bytes_by_dtype == {"F32": 4 * n}
    assert spec.checkpoint_bytes == (folder / "model.safetensors").stat().st_size
    assert spec.files == {"model.safetensors": spec.checkpoint_bytes}
    assert spec.warnings == ()


def test_sparse_multi_gb_folder_reads_headers_only(tmp_path):
    tensors = catalog_tensors("Qwen/Qwen2.5-7B")
    folder = tmp_path / "Qwen2.5-7B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(catalog_config("Qwen/Qwen2.5-7B")))
    weight_map = {}
    for i, part in enumerate(split_shards(tensors, 4), 1):
        name = f"model-{i:05d}-of-00004.safetensors"
        write_fake_safetensors(folder / name, part)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    spec = spec_from_folder(folder, model_id="Qwen/Qwen2.5-7B")
    assert spec.checkpoint_bytes > 15e9  # the files claim 15 GB; the disk holds a few kB
    assert spec.total_params == sum(spec.checkpoint_params_by_dtype.values()) == 7_615_616_512
    assert len(spec.files) == 4


def test_config_only_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(catalog_config("HuggingFaceTB/SmolLM2-135M-Instruct")))
    spec = spec_from_folder(tmp_path, model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert spec.exact and 130e6 < spec.total_params < 140e6
    assert spec.checkpoint_bytes is None and spec.checkpoint_params_by_dtype == {} and spec.files == {}


def test_pickles_are_never_opened(tmp_path, monkeypatch):
    marker = tmp_path / "UNPICKLED"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Boom()}))
    (tmp_path / "training_args.pt").write_bytes(pickle.dumps(Boom()))
    opened: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(real):
        def wrapper(file, *args, **kwargs):
            opened.append(str(file))
            return real(file, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    spec = spec_from_folder(tmp_path, model_id="tiny")
    monkeypatch.undo()

    assert not marker.exists()
    assert not [p for p in opened if p.endswith((".bin", ".pt"))]
    assert any("never" in w and "pytorch_model.bin" in w for w in spec.warnings)
    assert spec.files["pytorch_model.bin"] == (tmp_path / "pytorch_model.bin").stat().st_size
    assert spec.checkpoint_bytes == sum(spec.files.values())
    assert spec.checkpoint_params_by_dtype == {}


def test_truncated_and_corrupt_headers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    shard = tmp_path / "model.safetensors"

    shard.write_bytes(safetensors_header({"w": ("F32", [10, 10])})[:40])  # cut inside the header
    with pytest.raises(HeaderError, match=r"model\.safetensors"):
        spec_from_folder(tmp_path)

    shard.write_bytes(struct.pack("<Q", 16) + b"{not json at all")
    with pytest.raises(HeaderError, match="not valid JSON"):
        spec_from_folder(tmp_path)

    shard.write_bytes(safetensors_header({"w": ("F32", [10, 10])}) + b"\0" * 100)  # data cut short
    with pytest.raises(HeaderError, match=r"model\.safetensors"):
        spec_from_folder(tmp_path)

    shard.write_bytes(b"")
    with pytest.raises(HeaderError):
        spec_from_folder(tmp_path)


def test_bad_config_and_missing_folder(tmp_path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match=r"config\.json"):
        spec_from_folder(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"no-such-folder"):
        spec_from_folder(tmp_path / "no-such-folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        spec_from_folder(empty)


def test_missing_shard_is_a_warning(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    write_fake_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": ("F32", [4])})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    spec = spec_from_folder(tmp_path)
    assert any("1 of 2 safetensors shards are missing" in w for w in spec.warnings)
    assert spec.checkpoint_params_by_dtype == {}


def test_gguf_only_folder(tmp_path, smollm_gguf):
    (tmp_path / smollm_gguf.name).symlink_to(smollm_gguf)
    spec = spec_from_folder(tmp_path, model_id="SmolLM2-135M-Instruct")
    assert spec.total_params > 100e6
    assert smollm_gguf.name in spec.files


# ---------------------------------------------------------------------------------------------------------------
# The Hugging Face cache


def test_list_cached_models(hub_server, tmp_path):
    from huggingface_hub import hf_hub_download

    tiny_dir = tmp_path / "tiny"
    n = write_tiny_model(tiny_dir)
    tiny = hub_server.add_repo("acme/tiny-llama", config=TINY)
    tiny.add_file("model.safetensors", path=tiny_dir / "model.safetensors")
    hub_server.add_repo("HuggingFaceTB/SmolLM2-135M-Instruct", config="HuggingFaceTB/SmolLM2-135M-Instruct")
    broken = hub_server.add_repo("acme/broken")
    broken.add_file("config.json", b"{broken", lfs=False)

    cache = os.environ["HF_HUB_CACHE"]
    for repo_id, filename in (
        ("acme/tiny-llama", "config.json"),
        ("acme/tiny-llama", "model.safetensors"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "config.json"),
        ("acme/broken", "config.json"),
    ):
        hf_hub_download(repo_id, filename, endpoint=hub_server.url, cache_dir=cache)

    listed = dict(list_cached_models())
    assert set(listed) == {"acme/tiny-llama", "HuggingFaceTB/SmolLM2-135M-Instruct", "acme/broken"}
    spec = listed["acme/tiny-llama"]
    assert isinstance(spec, ModelSpec) and spec.id == "acme/tiny-llama" and spec.source == "local"
    assert spec.total_params == n == sum(spec.checkpoint_params_by_dtype.values())
    assert spec.revision == tiny.sha
    smol = listed["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert isinstance(smol, ModelSpec) and smol.checkpoint_bytes is None
    assert isinstance(listed["acme/broken"], ConfigError)


def test_list_cached_models_without_a_cache():
    assert list_cached_models() == []


# ---------------------------------------------------------------------------------------------------------------
# Quantization configs


@pytest.mark.parametrize(
    ("qc", "dtypes", "label", "loadable"),
    [
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 128},
            {"I32": 10, "F16": 5},
            "gptq 4-bit (group 128)",
            ("gptq-int4",),
        ),
        (
            {"quant_method": "gptq", "bits": 8, "group_size": -1},
            {"I32": 10},
            "gptq 8-bit (per-channel)",
            ("gptq-int8",),
        ),
        (
            {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"},
            {"I32": 10},
            "awq 4-bit (group 128)",
            ("awq-int4",),
        ),
        (
            {
                "quant_method": "bitsandbytes",
                "load_in_4bit": True,
                "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": True,
            },
            {"U8": 10},
            "bitsandbytes 4-bit (nf4, double quant)",
            ("int4-dq",),
        ),
        (
            {"quant_method": "bitsandbytes", "load_in_8bit": True},
            {"I8": 10},
            "bitsandbytes 8-bit (LLM.int8)",
            ("int8",),
        ),
        (
            {"quant_method": "fp8", "weight_block_size": [128, 128]},
            {"F8_E4M3": 10},
            "fp8 (block 128x128)",
            ("fp8", "bf16"),
        ),
        (
            {"quant_method": "mxfp4", "modules_to_not_convert": ["router"]},
            {"U8": 10, "BF16": 4},
            "mxfp4 (experts)",
            ("mxfp4", "bf16"),
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {
                    "group_0": {"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128}}
                },
            },
            {"I32": 10},
            "compressed-tensors w4a16 (group 128)",
            ("ct-int4",),
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                        "input_activations": {"num_bits": 8, "type": "float", "dynamic": True},
                    }
                },
            },
            {"F8_E4M3": 10},
            "compressed-tensors w8a8 (fp8, channel)",
            ("fp8", "bf16"),
        ),
    ],
)
def test_describe_quantization(qc, dtypes, label, loadable):
    got_label, got_loadable, warnings = describe_quantization({"quantization_config": qc}, dtypes)
    assert (got_label, got_loadable) == (label, loadable)
    assert all("\n" not in w for w in warnings)


def test_describe_quantization_plain_and_header_only():
    assert describe_quantization({}, {"BF16": 100}) == (None, None, [])
    label, loadable, warnings = describe_quantization({}, {"F8_E4M3": 90, "BF16": 10})
    assert label == "fp8" and loadable == ("fp8", "bf16") and warnings
    label, loadable, warnings = describe_quantization({"quantization_config": {"quant_method": "hqq", "nbits": 4}}, {})
    assert label == "hqq 4-bit" and loadable == ("hqq",) and "not modelled" in warnings[0]
    assert any(
        "8 int4" in w for w in describe_quantization({"quantization_config": {"quant_method": "gptq"}}, {"I32": 1})[2]
    )
    assert "fp8" in describe_quantization({"quantization_config": {"quant_method": "fp8"}}, {"BF16": 1})[2][1]


# ---------------------------------------------------------------------------------------------------------------
# Cross-checks


def _spec(
    model_id: str, total: int, *, headers: dict | None = None, experts=None, active=None, config=True
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        source="hub",
        exact=True,
        total_params=total,
        active_params=active or total,
        num_experts=experts,
        params=ParamBreakdown(linear=total) if config else None,
        checkpoint_params_by_dtype=headers or {},
    )


def test_crosscheck_agreeing_counts_say_nothing():
    spec = cross_check(_spec("meta-llama/Llama-3.1-8B", 8_030_261_248, headers={"BF16": 8_030_261_248}))
    assert spec.warnings == ()
    assert spec.label is not None and spec.label.label == "8B"


def test_crosscheck_nxm_upper_bound():
    spec = cross_check(_spec("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704, experts=8, active=12_879_204_352))
    (warning,) = spec.warnings
    assert "upper bound" in warning and "46.7B" in warning and "56B" in warning


def test_crosscheck_rounded_name():
    (warning,) = cross_check(_spec("Qwen/Qwen2.5-7B", 7_615_616_512)).warnings
    assert "7.62B" in warning and "8% apart" in warning


def test_crosscheck_header_counts():
    packed = cross_check(_spec("acme/m-GPTQ", 500_000_000, headers={"I32": 50_000_000, "F16": 140_000_000}))
    assert any("8 int4" in w for w in packed.warnings)
    extra = cross_check(_spec("acme/m", 500_000_000, headers={"BF16": 600_000_000}))
    assert any("extra buffers" in w for w in extra.warnings)
    fewer = cross_check(_spec("acme/m", 500_000_000, headers={"BF16": 400_000_000}))
    assert any("fewer tensors" in w for w in fewer.warnings)
    headers_only = cross_check(_spec("acme/m-1B", 1_500_000_000, headers={"BF16": 1_500_000_000}, config=False))
    assert len(headers_only.warnings) == 1 and "checkpoint headers count 1.5B" in headers_only.warnings[0]


def test_crosscheck_moe_active_only_label():
    spec = _spec("Qwen/Qwen1.5-MoE-A2.7B-Chat", 14_315_784_192, experts=60, active=2_689_017_856)
    assert cross_check(spec).warnings == ()
    wrong = dataclasses.replace(spec, active_params=5_000_000_000)
    assert any("active parameters" in w for w in cross_check(wrong).warnings)


def test_crosscheck_is_idempotent():
    once = cross_check(_spec("Qwen/Qwen2.5-7B", 7_615_616_512, headers={"BF16": 9_000_000_000}))
    assert cross_check(once) == once
    assert len(once.warnings) == 2
