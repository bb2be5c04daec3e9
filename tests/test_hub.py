"""advisor.sources.hub against the stand-in Hub (tests/hubserver.py): metadata only, errors, caching."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hubserver import catalog_config, catalog_tensors, running_hub

from advisor.errors import (
    AdvisorError,
    GatedModelError,
    HeaderError,
    ModelNotFoundError,
    NetworkError,
    RevisionNotFoundError,
)
from advisor.sources.hub import gguf_specs_from_hub, spec_from_hub


@pytest.fixture
def hub_server(monkeypatch):
    """The stand-in Hub (tests/hubserver.py), running for this test."""
    yield from running_hub(monkeypatch)


SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QWEN7 = "Qwen/Qwen2.5-7B"
SECRET = "hf_SeCrEtToKeN0123456789abcdef"

# Fields a Hub spec adds on top of what spec_from_config knows.
HUB_ONLY = (
    "checkpoint_bytes", "checkpoint_params_by_dtype", "checkpoint_bytes_by_dtype", "files", "revision", "gated",
    "warnings", "label", "quantization", "loadable_precisions",
)  # fmt: skip


def _strip(spec):
    blank = {
        f.name: f.default
        for f in dataclasses.fields(spec)
        if f.name in HUB_ONLY and f.default is not dataclasses.MISSING
    }
    blank.update(
        {
            f.name: f.default_factory()
            for f in dataclasses.fields(spec)
            if f.name in HUB_ONLY and f.default_factory is not dataclasses.MISSING
        }
    )
    return dataclasses.replace(spec, **blank)


def _one_line(exc: BaseException, repo_id: str) -> str:
    text = str(exc)
    assert "\n" not in text
    assert repo_id in text
    return text


def _small_repo(server, repo_id: str = SMOL, **kwargs):
    return server.add_repo(repo_id, config=catalog_config(SMOL), tensors=catalog_tensors(SMOL), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The spec


@pytest.mark.parametrize("catalog_id", [SMOL, "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat"])
def test_spec_equals_catalog_config_spec(hub_server, catalog_id):
    from advisor.sources.config import spec_from_config

    config = catalog_config(catalog_id)
    hub_server.add_repo(catalog_id, config=config, tensors=catalog_tensors(catalog_id), shards=2)
    spec = spec_from_hub(catalog_id)
    expected = spec_from_config(config, model_id=catalog_id, source="hub")

    assert _strip(spec) == _strip(expected)
    assert spec.source == "hub" and spec.exact
    # The headers were written from the same model build: they hold exactly its parameters.
    assert sum(spec.checkpoint_params_by_dtype.values()) == expected.total_params
    assert spec.checkpoint_params_by_dtype == {"BF16": expected.total_params}
    assert spec.checkpoint_bytes_by_dtype == {"BF16": 2 * expected.total_params}
    assert spec.revision == hub_server.repos[catalog_id].sha
    assert spec.gated is False
    assert set(spec.files) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert spec.checkpoint_bytes == sum(spec.files.values())
    assert not any("safetensors headers" in w for w in spec.warnings)


def test_multi_gb_repo_moves_under_1mb(hub_server):
    hub_server.add_repo(QWEN7, config=QWEN7, tensors=catalog_tensors(QWEN7), shards=4)
    spec = spec_from_hub(QWEN7)

    assert spec.checkpoint_bytes > 15e9  # four shards of ~3.8 GB each...
    assert len(spec.files) == 4 and all(size > 3.5e9 for size in spec.files.values())
    assert spec.total_params == sum(spec.checkpoint_params_by_dtype.values()) == 7_615_616_512
    assert hub_server.total_bytes < 1_000_000  # ...of which under 1 MB crossed the wire
    served = hub_server.file_bytes(QWEN7)
    assert all(served[name] <= 100_001 for name in spec.files)  # one 100 kB range per shard header
    ranges = [r for r in hub_server.requests if r["path"].endswith(".safetensors") and r["method"] == "GET"]
    assert ranges and all(r["range"] for r in ranges)  # never a whole-file GET
    assert not hub_server.violations


def test_recommend_on_multi_gb_repo_moves_under_1mb(hub_server):
    """The whole path a user takes: resolve the id (not in the catalog), then price it."""
    from advisor.recommend import recommend
    from advisor.sources import resolve
    from advisor.spec import Device, Hardware

    repo_id = "acme/Qwen2.5-7B-copy"
    hub_server.add_repo(repo_id, config=QWEN7, tensors=catalog_tensors(QWEN7), shards=4)
    spec = resolve(repo_id)
    cpu = Device(kind="cpu", name="test cpu", memory_bytes=64 * 10**9, bandwidth_gbps=50.0)
    rec = recommend(spec, Hardware(devices=(cpu,), source="flags", ram_total_bytes=64 * 10**9))
    assert spec.source == "hub" and spec.checkpoint_bytes > 15e9
    assert rec.options
    assert hub_server.total_bytes < 1_000_000


def test_second_call_needs_no_network(hub_server):
    _small_repo(hub_server)
    first = spec_from_hub(SMOL)
    hub_server.stop()
    hub_server.reset_counters()
    second = spec_from_hub(SMOL)
    assert second == first
    assert hub_server.requests == []
    cached = list((Path(os.environ["ADVISOR_CACHE_DIR"]) / "hub").rglob("*.json"))
    assert cached  # keyed by repo and revision (the branch and the resolved commit)
    assert {p.stem for p in cached} >= {"main", hub_server.repos[SMOL].sha}


def test_stale_cache_is_the_fallback_when_unreachable(hub_server, monkeypatch):
    import advisor.sources.hub as hub

    _small_repo(hub_server)
    first = spec_from_hub(SMOL)
    hub_server.stop()
    monkeypatch.setattr(hub, "CACHE_TTL_S", -1)  # the cache is stale: the Hub is asked first, and is down
    again = spec_from_hub(SMOL)
    assert again.total_params == first.total_params
    assert any("unreachable" in w for w in again.warnings)


def test_offline_mode_uses_cache_or_says_why(hub_server, monkeypatch):
    _small_repo(hub_server)
    spec_from_hub(SMOL)
    hub_server.reset_counters()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert spec_from_hub(SMOL, refresh=True).total_params > 0
    assert hub_server.requests == []
    with pytest.raises(NetworkError) as err:
        spec_from_hub("nobody/uncached-model")
    assert "HF_HUB_OFFLINE" in _one_line(err.value, "nobody/uncached-model")


def test_falls_back_to_the_huggingface_cache(hub_server):
    from huggingface_hub import hf_hub_download

    _small_repo(hub_server)
    hf_hub_download(SMOL, "config.json", endpoint=hub_server.url, cache_dir=os.environ["HF_HUB_CACHE"])
    hub_server.stop()
    spec = spec_from_hub(SMOL)  # advisor's own cache is empty
    assert spec.total_params > 100e6
    assert any("Hugging Face cache" in w for w in spec.warnings)


def test_revision_is_resolved_and_cached_separately(hub_server):
    repo = _small_repo(hub_server)
    repo.revisions["v1"] = repo.sha
    spec = spec_from_hub(SMOL, revision="v1")
    assert spec.revision == repo.sha
    assert any("/revision/v1" in r["path"] for r in hub_server.requests)


# ---------------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("401", GatedModelError),
        ("403", GatedModelError),
        ("gated401", GatedModelError),
        ("gated403", GatedModelError),
        ("404", ModelNotFoundError),
        ("repo404", ModelNotFoundError),
        ("revision404", RevisionNotFoundError),
        ("entry404", ModelNotFoundError),
        ("500", NetworkError),
        ("503", NetworkError),
    ],
)
def test_http_errors_map_to_advisor_errors(hub_server, fault, error):
    repo = _small_repo(hub_server)
    repo.fault(fault)
    with pytest.raises(error) as err:
        spec_from_hub(SMOL)
    _one_line(err.value, SMOL)
    assert err.value.__cause__ is None  # no library traceback chained under the one-line message
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_missing_repo(hub_server):
    with pytest.raises(ModelNotFoundError) as err:
        spec_from_hub("nobody/no-such-model")
    assert "check the id" in _one_line(err.value, "nobody/no-such-model")


def test_invalid_repo_id(hub_server):
    with pytest.raises(ModelNotFoundError) as err:
        spec_from_hub("a/b/c")
    assert "not a valid Hub id" in _one_line(err.value, "a/b/c")
    assert hub_server.requests == []


def test_missing_config_file(hub_server):
    repo = _small_repo(hub_server)
    repo.fault("entry404", "config.json")
    with pytest.raises(ModelNotFoundError) as err:
        spec_from_hub(SMOL)
    _one_line(err.value, SMOL)


def test_missing_revision(hub_server):
    _small_repo(hub_server)
    with pytest.raises(RevisionNotFoundError) as err:
        spec_from_hub(SMOL, revision="no-such-branch")
    assert "no-such-branch" in _one_line(err.value, SMOL)


def test_gated_repo_without_token(hub_server):
    _small_repo(hub_server, gated="manual", tokens={SECRET})
    with pytest.raises(GatedModelError) as err:
        spec_from_hub(SMOL)
    assert str(err.value) == (
        f"Model '{SMOL}' is gated or private: set HF_TOKEN after accepting its licence on its Hub page."
    )


def test_gated_repo_with_token(hub_server, monkeypatch):
    _small_repo(hub_server, gated="manual", tokens={SECRET})
    monkeypatch.setenv("HF_TOKEN", SECRET)
    spec = spec_from_hub(SMOL)
    assert spec.gated is True and spec.total_params > 0


def test_timeout(hub_server, monkeypatch):
    monkeypatch.setenv("ADVISOR_HUB_TIMEOUT", "0.5")
    repo = _small_repo(hub_server)
    repo.fault("slow", "api", delay=3)
    with pytest.raises(NetworkError) as err:
        spec_from_hub(SMOL)
    assert "0.5s" in _one_line(err.value, SMOL)


def test_connection_refused():
    # conftest points HF_ENDPOINT at the discard port: refused at once
    with pytest.raises(NetworkError) as err:
        spec_from_hub(SMOL)
    _one_line(err.value, SMOL)


@pytest.mark.parametrize("fault", ["truncate", "bad_length", "drop"])
def test_cut_transfers_are_network_errors(hub_server, fault):
    repo = _small_repo(hub_server)
    repo.fault(fault, "model.safetensors")
    with pytest.raises(NetworkError) as err:
        spec_from_hub(SMOL)
    _one_line(err.value, SMOL)


@pytest.mark.parametrize("big", [True, False])
def test_header_claiming_past_eof_is_a_header_error(hub_server, big):
    if big:
        repo = _small_repo(hub_server)
    else:  # under huggingface_hub's 25 MB header limit: it fetches the claimed range, gets the file's end
        repo = hub_server.add_repo(SMOL, config=catalog_config(SMOL), tensors={"w": ("F32", [1000, 1000])})
    repo.fault("header_past_eof", "model.safetensors")
    with pytest.raises(HeaderError) as err:
        spec_from_hub(SMOL)
    assert "model.safetensors" in _one_line(err.value, SMOL)


def test_header_tensors_past_eof_is_a_header_error(hub_server):
    repo = _small_repo(hub_server)
    shard = repo.files["model.safetensors"]
    shard.size -= 100  # the Hub lists a file shorter than its header says
    with pytest.raises(HeaderError) as err:
        spec_from_hub(SMOL)
    assert "truncated" in str(err.value)


def test_token_never_stored_or_shown(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    _small_repo(hub_server, private=True, tokens={SECRET})
    gated = hub_server.add_repo("acme/gated", config=catalog_config(SMOL), gated="manual", tokens={"other"})
    hub_server.add_repo("acme/down", config=catalog_config(SMOL))
    spec = spec_from_hub(SMOL)
    assert spec.total_params > 0
    assert any(r["token"] == SECRET for r in hub_server.requests)  # it was sent...

    messages = []
    for repo_id, fault in (("acme/gated", None), (SMOL, "401"), ("acme/down", "500")):
        if fault:
            hub_server.repos[repo_id].fault(fault)
        with pytest.raises(AdvisorError) as err:
            spec_from_hub(repo_id, refresh=True)
        messages.append(str(err.value))
        messages.append(repr(err.value))
    assert gated.repo_id in messages[0] and "no access" in messages[0]
    assert "refused the token" in messages[2]
    assert all(SECRET not in m for m in messages)  # ...never shown
    for root in (os.environ["ADVISOR_CACHE_DIR"], os.environ["HF_HOME"]):
        for path in Path(root).rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path  # ...never stored
    assert spec.warnings == spec_from_hub(SMOL).warnings
    assert SECRET not in repr(spec.to_json())


# ---------------------------------------------------------------------------------------------------------------
# Repos that are not plain transformers checkpoints


def test_unknown_architecture_falls_back_to_header_counts(hub_server):
    config = {
        "model_type": "acme_lm",
        "architectures": ["AcmeForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"},
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 32000,
        "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
    }
    tensors = {"model.embed_tokens.weight": ("BF16", [32000, 512])}
    for i in range(4):
        tensors[f"model.layers.{i}.attn.qkv.weight"] = ("BF16", [768, 512])
        tensors[f"model.layers.{i}.mlp.weight"] = ("BF16", [4096, 512])
    hub_server.add_repo("acme/acme-lm", config=config, tensors=tensors)
    spec = spec_from_hub("acme/acme-lm")
    total = 32000 * 512 + 4 * (768 * 512 + 4096 * 512)
    assert spec.exact and spec.total_params == spec.active_params == total
    assert spec.params is None  # no layer breakdown...
    assert any("breakdown is missing" in w for w in spec.warnings)  # ...and it says so
    assert spec.num_layers == 4 and spec.num_kv_heads == 2 and spec.head_dim == 64
    assert spec.kv is not None and spec.kv.full_elements == 2 * 4 * 2 * 64


def test_gptq_repo(hub_server):
    config = catalog_config("Qwen/Qwen2.5-0.5B-Instruct")
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}
    tensors = {
        "model.embed_tokens.weight": ("F16", [151936, 896]),
        "model.layers.0.mlp.down_proj.qweight": ("I32", [4864 // 8, 896]),
        "model.layers.0.mlp.down_proj.scales": ("F16", [4864 // 128, 896]),
        "model.layers.0.mlp.down_proj.qzeros": ("I32", [4864 // 128, 896 // 8]),
        "model.layers.0.mlp.down_proj.g_idx": ("I32", [4864]),
    }
    hub_server.add_repo("acme/Qwen2.5-0.5B-GPTQ", config=config, tensors=tensors)
    spec = spec_from_hub("acme/Qwen2.5-0.5B-GPTQ")
    assert spec.quantization == "gptq 4-bit (group 128)"
    assert spec.loadable_precisions == ("gptq-int4",)
    assert "I32" in spec.checkpoint_params_by_dtype
    assert any("8 int4" in w for w in spec.warnings)


def test_list_repo_files_and_tree(hub_server):
    from huggingface_hub import HfApi

    _small_repo(hub_server)
    files = HfApi(endpoint=hub_server.url).list_repo_files(SMOL)
    assert set(files) == {".gitattributes", "config.json", "model.safetensors"}


def test_gguf_repo(hub_server, smollm_gguf):
    from advisor.sources.gguf import spec_from_gguf

    repo = hub_server.add_repo("acme/SmolLM2-135M-GGUF", library_name="gguf")
    repo.add_file(smollm_gguf.name, path=smollm_gguf)
    repo.add_file("SmolLM2-135M-Instruct.Q8_0.gguf", path=smollm_gguf)  # a second quant (same bytes)
    local = spec_from_gguf(smollm_gguf)

    specs = gguf_specs_from_hub("acme/SmolLM2-135M-GGUF")
    assert set(specs) == {smollm_gguf.name, "SmolLM2-135M-Instruct.Q8_0.gguf"}
    spec = specs[smollm_gguf.name]
    assert spec.total_params == local.total_params
    assert spec.checkpoint_params_by_dtype == local.checkpoint_params_by_dtype
    assert spec.files == {smollm_gguf.name: smollm_gguf.stat().st_size}
    assert spec.revision == repo.sha
    served = hub_server.file_bytes("acme/SmolLM2-135M-GGUF")
    assert all(n < smollm_gguf.stat().st_size for n in served.values())  # a prefix, not the file

    one = spec_from_hub("acme/SmolLM2-135M-GGUF")  # no config.json: described by one GGUF
    assert one.total_params == local.total_params
    assert set(one.files) == set(specs)


def test_gguf_reader_caps_a_server_that_ignores_range(hub_server, smollm_gguf):
    repo = hub_server.add_repo("acme/gguf-norange", library_name="gguf")
    repo.add_file(smollm_gguf.name, path=smollm_gguf)
    repo.fault("ignore_range", smollm_gguf.name)
    specs = gguf_specs_from_hub("acme/gguf-norange")
    assert specs[smollm_gguf.name].total_params > 100e6


def test_gguf_errors(hub_server):
    with pytest.raises(ModelNotFoundError):
        gguf_specs_from_hub("nobody/nothing")
    hub_server.stop()
    with pytest.raises(NetworkError):
        gguf_specs_from_hub("nobody/nothing")


@pytest.mark.parametrize("private", [False, True], ids=["404", "401-without-token"])
def test_a_typo_on_the_hub_names_the_catalog_id_it_resembles(hub_server, private):
    # The Hub answers 404 for a repository that does not exist, and 401 without a token (it does not say whether a
    # private one exists): both get the catalog id the typo resembles, and keep their error class.
    from advisor.sources import resolve

    typo = "meta-llama/Llama-3.1-8b-instrct"
    if private:
        _small_repo(hub_server, typo, private=True, tokens={SECRET})
    with pytest.raises(GatedModelError if private else ModelNotFoundError) as err:
        resolve(typo)
    assert _one_line(err.value, typo).endswith("Did you mean 'meta-llama/Llama-3.1-8B-Instruct'?")


def test_no_suggestion_repeats_what_was_typed(hub_server):
    from advisor.sources import resolve

    # a catalog id asked at a revision skips the catalog and fails on the Hub: no "did you mean" itself
    with pytest.raises(ModelNotFoundError) as err:
        resolve("meta-llama/Llama-3.1-8B-Instruct", revision="main")
    assert "Did you mean 'meta-llama/Llama-3.1-8B-Instruct'" not in str(err.value)
