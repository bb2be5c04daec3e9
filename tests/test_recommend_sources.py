"""recommend over the sources: a Hub repo of several GGUF quantizations prices each file, a GGUF file is
priced as it is, and transformers options from a GGUF keep the file's quality."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hubserver import running_hub

from advisor.cli import cli

pytestmark = pytest.mark.usefixtures("seeded_hw")


@pytest.fixture
def hub_server(monkeypatch):
    yield from running_hub(monkeypatch)


def recommend_json(*args):
    result = CliRunner().invoke(cli, ["recommend", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_gguf_repo_prices_every_quantization(hub_server, smollm_gguf):
    repo = hub_server.add_repo("acme/SmolLM2-135M-Instruct-GGUF", library_name="gguf")
    repo.add_file(smollm_gguf.name, path=smollm_gguf)
    q2_size = 60_000_000
    # A second quantization: only its size is used (the repo is described by the larger Q4_1 file's header).
    repo.add_file("SmolLM2-135M-Instruct.Q2_K.gguf", b"GGUF", size=q2_size)
    data = recommend_json("acme/SmolLM2-135M-Instruct-GGUF")
    options = {o["precision"]: o for o in data["options"]}
    # The file whose header was read: its real tensor bytes.
    assert options["gguf-file"]["weights_bytes"] == 96_576_768
    # The other quantization: its size less a header as large as the one read (1,785,664 bytes).
    header = smollm_gguf.stat().st_size - 96_576_768
    q2 = options["gguf:SmolLM2-135M-Instruct.Q2_K.gguf"]
    assert q2["weights_bytes"] == q2_size - header
    assert q2["runtime"] == "llama.cpp" and q2["quality_rank"] < options["gguf-file"]["quality_rank"]
    # Only metadata crossed the wire: no file was served whole.
    served = hub_server.file_bytes("acme/SmolLM2-135M-Instruct-GGUF")
    assert sum(served.values()) < smollm_gguf.stat().st_size


def test_gguf_file_quality_caps_transformers_options(smollm_gguf):
    data = recommend_json(str(smollm_gguf))
    assert data["model"]["total_params"] == 134_515_008
    options = {o["precision"]: o for o in data["options"]}
    file_rank = options["gguf-file"]["quality_rank"]
    # Dequantizing Q4_1 weights to fp32 cannot restore what Q4_1 rounded away.
    assert options["fp32"]["quality_rank"] <= file_rank
    assert any("dequantized" in n for n in options["fp32"]["notes"])
    bytes_by_type = data["model"]["spec"]["checkpoint_bytes_by_dtype"]
    assert bytes_by_type == {"Q4_1": 66_355_200, "Q8_0": 30_081_024, "F32": 140_544}


def test_cached_lists_each_model_with_its_fit(hub_server):
    import os

    from huggingface_hub import hf_hub_download

    hub_server.add_repo("HuggingFaceTB/SmolLM2-135M-Instruct", config="HuggingFaceTB/SmolLM2-135M-Instruct")
    broken = hub_server.add_repo("acme/broken")
    broken.add_file("config.json", b"{broken", lfs=False)
    for repo_id in ("HuggingFaceTB/SmolLM2-135M-Instruct", "acme/broken"):
        hf_hub_download(repo_id, "config.json", endpoint=hub_server.url, cache_dir=os.environ["HF_HUB_CACHE"])
    hub_server.stop()  # listing the cache needs no network
    data = recommend_json("--cached")
    rows = {m["model"]: m for m in data["models"]}
    smol = rows["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert smol["total_params"] == 134_515_008 and smol["best"]["fits"]
    assert rows["acme/broken"]["best"] is None
    assert "not valid JSON" in rows["acme/broken"]["error"]
