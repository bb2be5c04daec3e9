"""Fuzz every reader of untrusted input with mutated REAL seeds (tests/hardening.py holds the generators).

Contract, for every input: it parses (and the spec survives JSON and the cost model), or it raises advisor's own
error (an AdvisorError subclass) with a one-line message. No other exception, no hang, no memory blow-up.

The default budget keeps the whole module to well under a minute on two cores; `-m slow` runs each reader with
twenty times the inputs. Inputs that once broke a reader are kept below as regular test cases.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import hardening as HZ
import pytest
from hypothesis import given

from advisor.errors import AdvisorError, ConfigError, HeaderError, NameParseError

BUDGET = {"label": 500, "config": 80, "safetensors": 300, "header": 300, "gguf": 300, "hardware": 150}
SLOW = 20  # times the default budget under -m slow
# Slow tests run only when selected (`-m slow`): pyproject's addopts does not deselect them.
SLOW_SKIP = "'slow' not in config.getoption('markexpr') or 'not slow' in config.getoption('markexpr')"


def _fuzz(name: str, strategy, check, *, factor: int = 1):
    @HZ.fuzz_settings(BUDGET[name] * factor)
    @given(strategy)
    def run(case):
        check(case)

    return run


# ---------------------------------------------------------------------------------------------------------------
# The campaigns


def test_fuzz_size_labels():
    _fuzz("label", HZ.label_strategy(), HZ.check_label)()


def test_fuzz_config_reader():
    _fuzz("config", HZ.config_strategy(), HZ.check_config)()


def test_fuzz_safetensors_reader():
    _fuzz("safetensors", HZ.safetensors_strategy(), HZ.check_safetensors)()


def test_fuzz_safetensors_header_dicts():
    _fuzz("header", HZ.header_dict_strategy(), HZ.check_header_dict)()


def test_fuzz_gguf_reader(smollm_gguf):
    _fuzz("gguf", HZ.gguf_strategy(), HZ.check_gguf)()


def test_fuzz_hardware_profile():
    _fuzz("hardware", HZ.hardware_json_strategy(), HZ.check_hardware_json)()


@pytest.mark.slow
@pytest.mark.skipif(SLOW_SKIP, reason="long fuzz run: select it with -m slow")
@pytest.mark.parametrize("name", sorted(BUDGET))
def test_fuzz_long(name):
    strategy, check = {
        "label": (HZ.label_strategy(), HZ.check_label),
        "config": (HZ.config_strategy(all_configs=True), HZ.check_config),
        "safetensors": (HZ.safetensors_strategy(), HZ.check_safetensors),
        "header": (HZ.header_dict_strategy(), HZ.check_header_dict),
        "gguf": (HZ.gguf_strategy(), HZ.check_gguf),
        "hardware": (HZ.hardware_json_strategy(), HZ.check_hardware_json),
    }[name]
    _fuzz(name, strategy, check, factor=SLOW)()


def test_seeds_parse_unmutated(smollm_gguf):
    """The seeds themselves are good inputs: a fuzz run that only sees errors proves little."""
    for name, text in HZ.config_seeds(all_configs=True):
        assert HZ.check_config((name, text.encode())) == "parsed", name
    for name, data in HZ.safetensors_seeds():
        assert HZ.check_safetensors((name, data, None)) == "parsed", name
    for name, data in HZ.gguf_seeds():
        assert HZ.check_gguf((name, data, None)) == "parsed", name
        assert HZ.check_gguf((name, data, len(data))) == "parsed", name
    prefix, total = HZ.smollm_seed()
    assert HZ.check_gguf(("smollm2-prefix", prefix, total)) == "parsed"
    assert len(HZ.gguf_fields(prefix)) > 100  # the walker found the header's fields to mutate


# ---------------------------------------------------------------------------------------------------------------
# Inputs that broke a reader, kept as regular cases


DEEP = "[" * 100_000 + "]" * 100_000
BIG_INT = "9" * 5000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (DEEP.encode(), "nested too deeply"),  # was RecursionError
        (('{"hidden_size": ' + BIG_INT + "}").encode(), "4300 digits"),  # was ValueError (int digit limit)
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not UTF-8"),  # was UnicodeDecodeError (read_text)
        (b'{"model_type": "llama", "x": 1e999999}', None),  # inf parses; the build refuses or ignores it
    ],
    ids=["deep-nesting", "5000-digit-int", "binary", "huge-float"],
)
def test_config_file_regressions(tmp_path, raw, reason):
    from advisor.sources.config import load_config_file
    from advisor.sources.local import spec_from_folder

    path = tmp_path / "config.json"
    path.write_bytes(raw)
    if reason is None:
        load_config_file(path)
        return
    for call in (lambda: load_config_file(path), lambda: spec_from_folder(tmp_path)):
        with pytest.raises(ConfigError, match=reason) as err:
            call()
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_config_with_a_bom_is_read(tmp_path):
    from advisor.sources.config import load_config_file

    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"model_type": "llama"}).encode())
    assert load_config_file(path) == {"model_type": "llama"}


def test_absurd_layer_count_is_refused_before_building(monkeypatch):
    """10**6 layers took ~5 ms each to build on the meta device (over an hour): refused before any build now."""
    from advisor.sources import config as cfg
    from advisor.sources.config import spec_from_config

    def no_build(*args, **kwargs):
        raise AssertionError("a config with an absurd layer count reached the build")

    monkeypatch.setattr(cfg, "build_config", no_build)
    config = json.loads((HZ.CONFIGS / "HuggingFaceTB__SmolLM2-135M-Instruct.json").read_text())
    for key, value in (("num_hidden_layers", 10**6), ("num_hidden_layers", 1e300)):
        with pytest.raises(ConfigError, match=f"claims {key}"):
            spec_from_config({**config, key: value}, model_id="x")
    text = {**config, "model_type": "llava", "text_config": {**config, "num_hidden_layers": 10**7}}
    with pytest.raises(ConfigError, match="num_hidden_layers = 10,000,000"):
        spec_from_config(text, model_id="x")


def test_huge_expert_count_builds_on_the_meta_device_only():
    """transformers makes expert weights with torch.empty before registering them: 100,000 experts asked torch for
    1.15 TB (and 600 experts for 14 GB of address space). Under torch.device("meta") nothing is allocated."""
    from advisor.sources.config import spec_from_config

    config = json.loads((HZ.CONFIGS / "Qwen__Qwen1.5-MoE-A2.7B-Chat.json").read_text())
    spec = spec_from_config({**config, "num_experts": 60_000}, model_id="x")
    assert spec.num_experts == 60_000 and spec.total_params > 1e12


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("HuggingFaceTB__SmolLM2-135M-Instruct", {"sliding_window": [None]}),  # recommend: list < int
        ("HuggingFaceTB__SmolLM2-1.7B-Instruct", {"max_position_embeddings": 10**400}),  # OverflowError in pricing
        ("google__gemma-2-2b-it", {"sliding_window": "4k"}),
    ],
    ids=["list-window", "400-digit-context", "string-window"],
)
def test_config_fields_the_build_ignores(name, change):
    """transformers builds these configs, but the fields it never used reached the cost model as they were."""
    from advisor.sources.config import spec_from_config

    config = {**json.loads((HZ.CONFIGS / f"{name}.json").read_text()), **change}
    try:
        spec = spec_from_config(config, model_id=name)
    except ConfigError:  # refusing is fine too; crashing later is not
        return
    HZ.downstream(spec)


def test_per_layer_config_fields_do_not_crash():
    """Found by atheris (benchmarks/atheris_fuzz.py config): a gemma4 config is heterogeneous, and transformers
    raises a RuntimeError (not AttributeError) when a per-layer field such as head_dim is read globally, so
    getattr(config, "head_dim", None) crashed the reader. The largest per-layer value is taken now."""
    from advisor.sources.config import spec_from_config

    config = {
        "model_type": "gemma4", "architectures": ["Gemma2ForCausalLM"], "hidden_size": 2304,
        "intermediate_size": 9216, "num_hidden_layers": 26, "num_key_value_heads": 4, "num_experts_per_tok": 6,
        "torch_dtype": "bfloat16",
    }  # fmt: skip
    spec = spec_from_config(config, model_id="fuzz/gemma4")
    assert spec.head_dim and spec.kv.full_elements + spec.kv.sliding_elements > 0
    HZ.downstream(spec)


@pytest.mark.parametrize(
    "quantization",
    [
        {"quant_method": "gptq", "bits": "four"},  # was ValueError from int()
        {"quant_method": "awq", "bits": 1e400},  # inf: was OverflowError
        {"quant_method": "gptq", "bits": [4]},  # was TypeError
        {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": "x"}}}},
    ],
    ids=["string-bits", "infinite-bits", "list-bits", "ct-string-bits"],
)
def test_quantization_config_regressions(tmp_path, quantization):
    from advisor.sources.local import spec_from_folder

    config = json.loads((HZ.CONFIGS / "Qwen__Qwen2.5-0.5B-Instruct.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
    with pytest.raises(ConfigError, match="quantization_config") as err:
        spec_from_folder(tmp_path)
    assert "\n" not in str(err.value) and tmp_path.name in str(err.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"architectures": {"a": 1}},  # was KeyError 0
        {"architectures": 7, "torch_dtype": ["x"]},  # was TypeError
        {"hidden_size": "wide", "num_attention_heads": 2},  # was ValueError from int()
        {"num_local_experts": "many", "num_experts_per_tok": 2},  # was ValueError
        {"num_attention_heads": 0, "hidden_size": 8},  # was ZeroDivisionError
        {"num_experts_per_tok": 9, "num_local_experts": 4},  # more experts per token than experts
    ],
    ids=["dict-architectures", "int-architectures", "string-hidden", "string-experts", "zero-heads", "k-over-e"],
)
def test_header_count_fallback_regressions(tmp_path, fields):
    """An architecture transformers does not know falls back to the header counts, which read the config by hand."""
    from advisor.sources.local import spec_from_folder

    (tmp_path / "config.json").write_text(json.dumps({**HZ.UNKNOWN_ARCH, **fields}))
    (tmp_path / "model.safetensors").write_bytes(dict(HZ.safetensors_seeds())["llama-ish"])
    spec = spec_from_folder(tmp_path)
    assert spec.total_params > 0 and spec.params is None
    HZ.downstream(spec)


@pytest.mark.parametrize(
    ("offsets", "shape"),
    [
        ([0, 1e400], [2]),
        ([0, 8], [1e400]),
        ([0, 8], [float("nan")]),
        (["0", "x"], [2]),
        ([0, 8], [[2]]),
        ([0, 24], [10**400, 2, 3]),
        ([0, 24], [2**40, 2**40]),
        ([0, 24], [2, 2]),
    ],
    ids=[
        "inf-offset",
        "inf-dim",
        "nan-dim",
        "string-offset",
        "nested-dim",
        "400-digit-dim",
        "dim-overflow",
        "shape-disagrees-with-offsets",
    ],
)
def test_header_dict_regressions(offsets, shape):
    """What a Hub parser hands `add_header`. int(inf) raised OverflowError, which was not caught; and a shape of
    10**400 elements (huggingface_hub's parser accepts it) gave a spec whose counts overflowed floats in the
    cost model."""
    header = {"w": {"dtype": "F32", "shape": shape, "data_offsets": offsets}}
    assert HZ.check_header_dict(header) == "HeaderError"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (struct.pack("<Q", 8 * 2**60) + b"{}", "claims 9223372036854775808 bytes"),  # 8 EB: refused, not read
        (struct.pack("<Q", 200_000) + DEEP.encode()[:200_000], "nested too deeply"),  # was RecursionError
        (struct.pack("<Q", 5002) + b"[" + BIG_INT.encode() + b"]", "4300 digits"),  # was ValueError
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not UTF-8"),
    ],
    ids=["8-exabyte-length", "deep-nesting", "5000-digit-int", "not-utf8"],
)
def test_safetensors_header_regressions(tmp_path, raw, reason):
    from advisor.sources.local import read_local_safetensors_header

    path = tmp_path / "model.safetensors"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=reason) as err:
            read_local_safetensors_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and peak < 4 * len(raw) + (1 << 20)


def _gguf_with_array(item_type: int, items: bytes, count: int) -> bytes:
    key = b"llama.some_array"
    arch = b"general.architecture"
    return (
        b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
        + struct.pack("<Q", len(arch)) + arch + struct.pack("<IQ", 8, 5) + b"llama"
        + struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, item_type, count) + items
    )  # fmt: skip


@pytest.mark.parametrize(("item_type", "width"), [(0, 1), (8, 8)], ids=["u8", "string"])
def test_gguf_million_item_array_is_cheap(tmp_path, item_type, width):
    """GGUFReader parsed arrays item by item: one array of a million bytes took 11 s and 700 MB (25 s and 1.6 GB
    for a million empty strings), and the header allows 16 million. Now: one view, or a walk with struct."""
    from advisor.sources.gguf import spec_from_gguf

    n = 1_000_000
    path = tmp_path / "big-array.gguf"
    path.write_bytes(_gguf_with_array(item_type, bytes(width * n), n))
    tracemalloc.start()
    try:
        spec = spec_from_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spec.architecture == "llama"
    assert peak < 64 << 20  # one view of the array, or a walk with struct: never a Python object per item


def test_gguf_nested_arrays_are_bounded(tmp_path):
    from advisor.sources.gguf import spec_from_gguf

    nested = b""
    for _ in range(20):  # arrays of arrays, 20 deep
        nested = struct.pack("<IQ", 9, 1) + nested
    path = tmp_path / "nested.gguf"
    path.write_bytes(_gguf_with_array(9, nested + struct.pack("<IQ", 0, 0), 1))
    with pytest.raises(HeaderError, match="nested more than 8 deep"):
        spec_from_gguf(path)


def test_gguf_zero_expert_dimension(tmp_path):
    """A fused expert tensor whose expert dimension is 0 divided by zero when pricing the active parameters."""
    import numpy as np

    from advisor.sources.gguf import spec_from_gguf

    def kv(w):
        w.add_expert_count(4)
        w.add_expert_used_count(2)

    tensors = {
        "token_embd.weight": np.zeros((40, 64), np.float16),
        "blk.0.ffn_gate_exps.weight": np.zeros((0, 32, 64), np.float16),
    }
    path = tmp_path / "zero.gguf"
    HZ._write_gguf(path, "qwen2moe", tensors, kv)
    spec = spec_from_gguf(path)
    assert spec.total_params == spec.active_params == 40 * 64


def test_gguf_forged_tensor_offset_prints_nothing(tmp_path, capfd):
    """A tensor offset near 2**64 overflowed numpy's uint64 add, and numpy printed a RuntimeWarning to stderr."""
    from advisor.sources.gguf import spec_from_gguf

    data = bytearray(dict(HZ.gguf_seeds())["dense-tied"])
    fields = HZ.gguf_fields(bytes(data))
    at, width = fields[-1]  # the last tensor's data offset
    data[at : at + width] = (2**64 - 8).to_bytes(8, "little")
    path = tmp_path / "offset.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(HeaderError, match="truncated"):
        spec_from_gguf(path)
    assert capfd.readouterr().err == ""


@pytest.mark.timeout(60)  # a regular expression that backtracks on these would run for hours
def test_label_regressions():
    from advisor.names import parse_size

    for text in ("9" * 5000 + "B", "1" * 20 + "x" + "1" * 20 + "B", "8x0B", "0B-A0B", "1B-A2B"):
        with pytest.raises(NameParseError):
            parse_size(text)
    assert HZ.check_label("-".join(["1.1"] * 20_000) + "B") in ("parsed", "NameParseError")


def test_every_error_is_an_advisor_error():
    """The checks let nothing else through (a guard on the harness itself)."""
    assert HZ.outcome(lambda: (_ for _ in ()).throw(HeaderError("one line"))) == "HeaderError"
    with pytest.raises(HZ.Unexpected):
        HZ.outcome(lambda: (_ for _ in ()).throw(HeaderError("two\nlines")))
    with pytest.raises(KeyError):
        HZ.outcome(lambda: {}["missing"])
    assert issubclass(HZ.Unexpected, AssertionError) and not issubclass(HZ.Unexpected, AdvisorError)
