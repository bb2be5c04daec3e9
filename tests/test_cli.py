"""The CLI end to end: offline answers, JSON shape, explained picks, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from advisor.cli import cli, main

pytestmark = pytest.mark.usefixtures("seeded_hw")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh process, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def json_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_recommend_catalog_json_shape():
    data = json_of(run("recommend", "meta-llama/Meta-Llama-3-8B-Instruct", "--json"))
    assert data["model"] | {} and data["model"]["id"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert data["model"]["source"] == "catalog" and data["model"]["exact"] is True
    assert data["model"]["total_params"] == 8_030_261_248
    devices = data["hardware"]["devices"]
    assert devices and {"kind", "name", "memory_bytes", "bandwidth_gbps"} <= set(devices[0])
    precisions = {o["precision"] for o in data["options"]}
    assert {"fp32", "bf16", "fp16", "int8", "int4", "q8_0", "q4_k_m"} <= precisions
    for opt in data["options"]:
        assert {
            "precision",
            "weights_bytes",
            "kv_cache_bytes",
            "total_bytes",
            "fits",
            "max_context",
            "placement",
            "decode_tok_s",
            "prefill_tok_s",
            "ttft_s",
            "decode_tok_s_low",
            "decode_tok_s_high",
            "basis",
        } <= set(opt)
        assert opt["total_bytes"] == opt["weights_bytes"] + opt["kv_cache_bytes"] + opt["overhead_bytes"]
        assert opt["decode_tok_s_low"] <= opt["decode_tok_s"] <= opt["decode_tok_s_high"]
    assert "warnings" in data and "recommended" in data


def test_recommend_rtx4090_picks_16_bit_with_reason():
    data = json_of(run("recommend", "meta-llama/Meta-Llama-3-8B-Instruct", "--device", "RTX 4090", "--json"))
    gpu = data["hardware"]["devices"][0]
    # "24GB" is 24 GiB, of which CUDA reports ~23.5-23.7 GiB as total.
    assert gpu["kind"] == "cuda" and 23 * 2**30 < gpu["memory_bytes"] < 24 * 2**30 and gpu["bandwidth_gbps"] == 1008
    rec = data["recommended"]
    # Full quality fits in 24 GB: bf16 weights, in transformers or as a BF16 GGUF in llama.cpp (the faster one).
    assert rec["precision"] in ("bf16", "gguf-bf16") and rec["placement"] == "cuda:0" and rec["fits"]
    assert rec["quality_rank"] == 100
    fp32 = next(o for o in data["options"] if o["precision"] == "fp32")
    assert "cpu" in fp32["placement"]  # 32 GB of fp32 weights spill to the host
    assert 10 < rec["decode_tok_s"] < 100
    assert "highest-quality" in data["reason"]


def test_recommend_8x7b_explains_shared_attention():
    result = run("recommend", "8x7B", "--json")
    data = json_of(result)
    assert data["model"]["total_params"] == 46_702_792_704
    assert any("46.7B" in w and "56B" in w for w in data["warnings"])


def test_recommend_141b_a35b_label():
    data = json_of(run("recommend", "141B-A35B", "--json"))
    assert data["model"]["total_params"] == 141_000_000_000
    assert data["model"]["active_params"] == 35_000_000_000
    assert data["model"]["exact"] is False
    assert any("size label" in w for w in data["warnings"])


def test_recommend_folder_with_only_config(tmp_path):
    from advisor.sources.catalog import config_path

    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(config_path("Qwen/Qwen2.5-0.5B-Instruct").read_text())
    data = json_of(run("recommend", str(folder), "--json"))
    assert data["model"]["total_params"] == 494_032_768 and data["model"]["exact"]


def test_table_output_names_recommendation():
    result = run("recommend", "Qwen/Qwen2.5-0.5B-Instruct", "--memory-gb", "64", "--bandwidth-gbps", "400")
    assert result.exit_code == 0
    assert "Recommended:" in result.output and "Why:" in result.output and "basis:" in result.output


def qwen7_on_64gb(bandwidth_gbps: int, *extra: str) -> dict:
    """recommend Qwen2.5-7B-Instruct on a hypothetical 64 GB machine of the given bandwidth, as JSON."""
    args = ("--memory-gb", "64", "--bandwidth-gbps", str(bandwidth_gbps), "--json", *extra)
    return json_of(run("recommend", "Qwen/Qwen2.5-7B-Instruct", *args))


def test_hypothetical_bandwidth_changes_speed():
    slow, fast = qwen7_on_64gb(100), qwen7_on_64gb(400)
    s = {o["precision"]: o["decode_tok_s"] for o in slow["options"]}
    f = {o["precision"]: o["decode_tok_s"] for o in fast["options"]}
    assert 2.5 < f["bf16"] / s["bf16"] < 4.0  # bandwidth-bound, less the fixed per-layer cost


def test_mixtral_on_24gb_shows_offload():
    data = json_of(run("recommend", "mistralai/Mixtral-8x7B-Instruct-v0.1", "--device", "RTX 4090", "--json"))
    placements = {o["precision"]: o["placement"] for o in data["options"]}
    assert "cpu" in placements["bf16"] and "layers on GPU" in placements["bf16"]
    assert any(o["fits"] and "cpu" in o["placement"] for o in data["options"])


def test_assistant_gives_speedup():
    data = json_of(
        run(
            "recommend",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "--device",
            "RTX 4090",
            "--assistant",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "--json",
        )
    )
    assert data["assisted"]["speedup"] > 0 and "tokens_per_target_pass" in data["assisted"]


def test_top_ranks_catalog():
    data = json_of(run("recommend", "--top", "3", "--memory-gb", "32", "--bandwidth-gbps", "200", "--json"))
    models = data["models"]
    assert 1 <= len(models) <= 3
    assert all(m["best"]["fits"] for m in models)


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["recommend", "no-such-org/no-such-model-xyz"], "no-such-org/no-such-model-xyz", 1),  # offline, not in catalog
        (["recommend", "8xB"], "8xB", 1),  # garbage label
        (["recommend", "Meta-Llama-3-8B-Instruct", "--device", "RTX 9999"], "RTX 9999", 2),  # unknown device
        (["recommend", "8B", "--device", "H100"], "ambiguous", 2),  # two table rows match
        (["recommend", "8B", "--precision", "int3"], "int3", 2),  # unknown precision
        (["recommend", "8B", "--context", "0"], "context", 2),  # out of range
    ],
    ids=["unknown-id", "garbage-label", "unknown-device", "ambiguous-device", "bad-precision", "bad-context"],
)
def test_bad_input_one_line_no_traceback(args, needle, code):
    proc = run_main(*args, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert needle in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 4  # click usage errors print usage + hint + error; ours print one line


def test_malformed_config_folder(tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    proc = run_main("recommend", str(tmp_path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not valid JSON" in proc.stderr and str(tmp_path) in proc.stderr


def test_debug_variable_shows_traceback():
    proc = run_main("recommend", "8xB", env={"ADVISOR_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_and_catalog_recommend_do_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from advisor.cli import main\n"
        "buf = io.StringIO()\n"
        "try:\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        main(['recommend', 'meta-llama/Meta-Llama-3-8B-Instruct', '--json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def test_main_exits_zero_on_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "recommend" in capsys.readouterr().out


def test_too_big_gives_scale_out_plan():
    data = json_of(run("recommend", "meta-llama/Llama-3.1-405B-Instruct", "--device", "H100 SXM5", "--json"))
    assert data["recommended"] is None
    plans = {p["precision"]: p for p in data["scale_out"]["plans"]}
    assert plans["bf16"]["gpus"] > plans["fp8"]["gpus"] >= plans["awq"]["gpus"]
    assert plans["bf16"]["nodes"] == 2  # 810 GB of bf16 weights: two nodes of 8, pipeline across them
    for p in plans.values():
        # Tensor parallel size must divide the 128 attention and 8 KV heads.
        assert 128 % p["tensor_parallel"] == 0 and 8 % p["tensor_parallel"] == 0
        assert p["tensor_parallel"] * p["pipeline_parallel"] == p["gpus"]
        assert p["weights_bytes_per_gpu"] + p["kv_cache_bytes_per_gpu"] <= 80 * 2**30
        assert p["kv_cache_tokens"] >= 4096
        assert p["command"].startswith("vllm serve")


def test_plot_writes_png(tmp_path):
    target = tmp_path / "plot.png"
    result = run("recommend", "Qwen/Qwen2.5-0.5B-Instruct", "--plot", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_min_tok_s_changes_pick():
    relaxed = qwen7_on_64gb(100, "--min-tok-s", "1")
    strict = qwen7_on_64gb(100, "--min-tok-s", "15")
    # At 100 GB/s bf16 (15 GB) runs ~5 tok/s: a 15 tok/s floor forces a smaller format.
    assert relaxed["recommended"]["precision"] in ("fp32", "bf16")
    assert strict["recommended"]["quality_rank"] < relaxed["recommended"]["quality_rank"]
    assert strict["recommended"]["decode_tok_s"] >= 15 or "no option reaches" in strict["reason"]


@pytest.mark.parametrize(
    "args",
    [
        ["recommend", "./no-such-model.gguf"],
        ["bench", "./no-such-model.gguf"],
        ["chat", "./no-such-model.gguf", "-m", "hi"],
        ["recommend", "8xB", "--assistant", "8B"],
        ["recommend", "8B", "--assistant", "./no-such-draft.gguf"],
        ["chat", "--assistant", "./no-such-draft.gguf", "-m", "hi"],
    ],
    ids=["recommend", "bench", "chat", "recommend-label", "recommend-assistant", "chat-assistant"],
)
def test_a_bad_model_is_told_before_the_hardware_is_probed(args, monkeypatch, capsys):
    """On a fresh cache the first command probes the machine for a minute or two: a misspelled model must be told
    at once, not after that."""
    from advisor import hardware

    def no_probe(*_a, **_k):
        raise AssertionError("the hardware was probed before the model was read")

    monkeypatch.setattr(hardware, "load_or_probe", no_probe)
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code in (1, 2) and "probed" not in err, err
    assert err.startswith("advisor: ") and ("no-such" in err or "8xB" in err), err


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("meta-llama/Llama-3.1-8b-instrct", "meta-llama/Llama-3.1-8B-Instruct"),  # Hub form, offline
        ("Llama-3.1-8B-Instrct", "meta-llama/Llama-3.1-8B-Instruct"),  # no organisation
        ("mistralai/Mixtral-8x7B-Instruct-v0.2", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ],
)
def test_a_misspelled_model_gets_the_catalog_id_it_resembles(typed, meant):
    proc = run_main("recommend", typed, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and typed in line
    # the one it resembles, not its whole family (70B, 405B)
    assert line.endswith(f"Did you mean '{meant}'?"), line


def test_an_unlike_name_gets_no_suggestion():
    from advisor.sources import catalog

    assert catalog.close_ids("no-such-org/no-such-model-xyz") == []
    assert catalog.close_ids("foo/bar") == []
