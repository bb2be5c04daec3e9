"""Hardening, round two: each fault found by trying to break advisor as a hostile repository or a busy user
would, with the test that failed before the fix (see the issue's numbered list; `benchmarks/hardening_report.py`
counts these cases).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubserver import catalog_config, running_hub

from advisor.errors import ConfigError, HeaderError
from advisor.paths import cache_dir

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ESC = "\x1b"


@pytest.fixture
def hub_server(monkeypatch):
    yield from running_hub(monkeypatch)


def run_advisor(*args: str, env: dict | None = None, stdin=subprocess.DEVNULL, timeout: float = 300):
    full = {**os.environ, "COLUMNS": "200", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=full, stdin=stdin,
        timeout=timeout,
    )  # fmt: skip


_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "sys.stderr.write(f'\\nPEAK-RSS-KIB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(code)\n"
)


def run_measured(*args: str, env: dict | None = None):
    """`advisor ARGS` in a fresh wrapper process, whose children are only that command: (the finished process
    with the wrapper's line taken out of stderr, the command's peak resident bytes)."""
    full = {**os.environ, "COLUMNS": "200", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "advisor", *args],
                          capture_output=True, text=True, env=full, stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    lines = proc.stderr.rstrip("\n").splitlines()
    peak = int(lines[-1].split()[-1]) * 1024
    proc.stderr = "\n".join(lines[:-1]).rstrip("\n") + "\n"
    return proc, peak


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("advisor:")]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# 1. A config can no longer bypass the layer cap


def _bart(layers: int) -> dict:
    return {**catalog_config(SMOL), "model_type": "bart", "decoder_layers": layers, "encoder_layers": 1}


def test_any_key_that_sizes_a_stack_of_layers_is_capped(tmp_path, monkeypatch):
    from advisor.sources import config as C

    def no_build(*args, **kwargs):
        raise AssertionError("the absurd config reached the meta-device build")

    monkeypatch.setattr(C, "build_config", no_build)
    for key, value in (("decoder_layers", 100_000), ("num_blocks", 50_000), ("n_routed_experts", 10**7),
                       ("num_attention_heads", 10**6)):  # fmt: skip
        config = {**_bart(12), key: value}
        with pytest.raises(ConfigError, match=f"claims {key}"):
            C.spec_from_config(config, model_id="b")
    nested = {**catalog_config(SMOL), "ffn_config": {"moe_num_experts": 10**8}}
    with pytest.raises(ConfigError, match="moe_num_experts"):
        C.spec_from_config(nested, model_id="dbrx-like")


def test_the_bart_repro_is_one_line_locally_and_from_the_hub(tmp_path, hub_server, seeded_hw):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_bart(100_000)))
    proc, peak = run_measured("recommend", str(folder), env={"ADVISOR_CACHE_DIR": str(cache_dir())})
    assert "decoder_layers = 100,000" in one_error_line(proc)
    assert peak < 1_000 * 2**20  # refused before building: no 2 GB of meta-device layers

    from advisor.sources.hub import spec_from_hub

    hub_server.add_repo("acme/bart-bomb", config=_bart(100_000))
    with pytest.raises(ConfigError, match="decoder_layers = 100,000"):
        spec_from_hub("acme/bart-bomb")


def test_a_build_that_registers_too_many_modules_is_stopped(monkeypatch):
    """Whatever key an unknown architecture sizes itself with, the build itself has a budget."""
    from advisor.sources import config as C

    monkeypatch.setattr(C, "MAX_BUILD_MODULES", 40)
    monkeypatch.setattr(C, "_cached_spec", lambda key: None)
    with pytest.raises(ConfigError, match="builds more than 40 modules"):
        C.spec_from_config(catalog_config(SMOL), model_id="smol")
    monkeypatch.setattr(C, "MAX_BUILD_MODULES", 200_000)
    spec = C.spec_from_config(catalog_config(SMOL), model_id="smol")  # the hook is gone and the lock free
    assert spec.total_params == 134_515_008


# ---------------------------------------------------------------------------------------------------------------
# 2. Two benches at once


def test_two_benches_at_once_share_the_cache_and_both_record(tmp_path, tiny_gguf, seeded_hw):
    """Both convert the same GGUF (one builds, the other waits and uses it) and both land in the store."""
    from advisor import calibration

    env = {"ADVISOR_CACHE_DIR": str(cache_dir()), "ADVISOR_MAX_CPU_CONTENTION": "1"}
    args = ["bench", str(tiny_gguf), "--runtime", "transformers", "-p", "fp32", "--new-tokens", "4", "--repeats",
            "1", "--depths", "16", "--prompt-lengths", "8"]  # fmt: skip
    full = {**os.environ, "COLUMNS": "200", **env}
    command = [sys.executable, "-m", "advisor", *args]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full,
                         stdin=subprocess.DEVNULL)
        for _ in range(2)
    ]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    converted = [p for p in (cache_dir() / "converted").iterdir() if not p.name.endswith(".lock")]
    assert len(converted) == 1 and not [p for p in converted if "partial" in p.name]
    assert len({r.id for r in calibration.runs(seeded_hw.fingerprint)}) == 2  # one decode depth each


def test_an_interrupted_conversion_leaves_nothing_behind(tiny_gguf, monkeypatch):
    from advisor import artifacts

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        artifacts.convert_gguf(tiny_gguf)
    left = [p.name for p in (cache_dir() / "converted").iterdir() if not p.name.endswith(".lock")]
    assert left == []


# ---------------------------------------------------------------------------------------------------------------
# 3. Terminal escapes and rich markup in what advisor echoes


def test_escapes_and_markup_from_a_config_are_printed_inert(tmp_path):
    folder = tmp_path / "[bold red]evil"
    folder.mkdir()
    evil_type = "evil" + ESC + "]0;PWNED\x07" + ESC + "[2J"
    (folder / "config.json").write_text(json.dumps({**catalog_config(SMOL), "model_type": evil_type}))
    proc = run_advisor("recommend", str(folder))
    assert ESC not in proc.stdout + proc.stderr and "\x07" not in proc.stderr
    line = one_error_line(proc)
    assert "architecture 'evil'" in line  # named, with the escape sequences (and the title they set) removed
    config = {**catalog_config(SMOL)}
    (folder / "config.json").write_text(json.dumps(config))
    shown = run_advisor("recommend", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "[bold red]evil" in shown.stdout  # markup in a name is text, not style


def test_escapes_in_the_model_argument_and_option_values_are_stripped():
    for args in (["recommend", "evil" + ESC + "]0;T\x07/x"], ["recommend", "8B", "--precision", ESC + "[2Jq9"],
                 ["recommend", "8B", "--runtime", ESC + "[31mvllm"]):  # fmt: skip
        proc = run_advisor(*args)
        assert proc.returncode != 0 and ESC not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# 4. Reads with no size limit


def test_a_huge_hardware_profile_is_not_read(tmp_path):
    import tracemalloc

    from advisor import hardware as H

    path = cache_dir() / "hardware.json"
    with open(path, "wb") as fh:
        fh.truncate(2 * 2**30)  # 2 GB of holes: reading it took 4.2 GB and 15 s
    tracemalloc.start()
    try:
        hw, _schema, warning = H._read_cache(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hw is None and "hardware.json.corrupt-" in warning and peak < 1 << 20  # refused by its size, unread
    assert any(p.name.startswith("hardware.json.corrupt-") for p in cache_dir().iterdir())  # set aside, not lost
    with open(path, "wb") as fh:
        fh.truncate(2 * 2**30)
    proc = run_advisor("recommend", "8B", "--json", env={"ADVISOR_CACHE_DIR": str(cache_dir())})
    assert proc.returncode == 0, proc.stderr[-1500:]  # measured again, and answered


def test_a_huge_message_is_refused_before_it_is_tokenized(tmp_path, monkeypatch):
    from advisor import chat as C

    class Counting:
        calls = 0

        def count(self, messages):
            Counting.calls += 1
            return sum(len(m["content"]) for m in messages)

    import io

    session = C.ChatSession(Counting(), C.Settings(max_context=4096), out=io.StringIO(), err=io.StringIO())
    session.messages = [{"role": "user", "content": "x" * 5_000_000}]
    with pytest.raises(C.ChatError, match="far more than a 4096-token context"):
        session._fit()
    assert Counting.calls == 0


def test_a_messages_file_over_the_cap_is_refused_without_reading_it_all(tmp_path):
    from advisor import chat as C
    from advisor.errors import UsageError

    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(C.MAX_MESSAGES_BYTES * 4)
    with pytest.raises(UsageError, match="over 16 MiB"):
        C.load_messages(path)


# ---------------------------------------------------------------------------------------------------------------
# 5. Names too long for the filesystem


def test_a_name_too_long_for_the_filesystem_is_one_short_line():
    for name in ("a" * 300, "a" * 300 + "/b", "x" * 5000):
        line = one_error_line(run_advisor("recommend", name))
        assert len(line) < 400 and "File name too long" not in line and "unexpected" not in line


# ---------------------------------------------------------------------------------------------------------------
# 6. The disk probe's test file


def _probe_files(directory: Path) -> list[Path]:
    from advisor.hardware import DISK_PROBE_PREFIX

    return list(directory.glob(f"{DISK_PROBE_PREFIX}*.tmp"))


def test_a_killed_disk_probe_deletes_its_test_file(tmp_path):
    hub_cache = tmp_path / "hub"
    hub_cache.mkdir()
    env = {**os.environ, "ADVISOR_CACHE_DIR": str(cache_dir()), "HF_HUB_CACHE": str(hub_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "advisor", "hw", "--refresh"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _probe_files(hub_cache) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert _probe_files(hub_cache), "the probe never wrote its test file"
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _probe_files(hub_cache) == []


def test_a_probe_file_left_by_a_dead_process_is_removed_at_the_next_start(tmp_path):
    from advisor import hardware as H

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{H.DISK_PROBE_PREFIX}{dead.pid}-abc.tmp"
    stale.write_bytes(b"x" * 1024)
    mine = tmp_path / f"{H.DISK_PROBE_PREFIX}{os.getpid()}-def.tmp"  # a live process's file stays
    mine.write_bytes(b"y")
    H._remove_stale_probe_files(tmp_path)
    assert not stale.exists() and mine.exists()


# ---------------------------------------------------------------------------------------------------------------
# 8. A damaged converted model is rebuilt


def test_a_truncated_converted_model_is_rebuilt(tiny_gguf):
    from advisor import artifacts

    folder = artifacts.convert_gguf(tiny_gguf)
    weights = folder / "model.safetensors"
    good = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.truncate(good // 2)
    again = artifacts.convert_gguf(tiny_gguf)
    assert again == folder and (again / "model.safetensors").stat().st_size == good
    assert artifacts.safetensors_ok(again / "model.safetensors")


# ---------------------------------------------------------------------------------------------------------------
# 9. FIFOs are refused, never waited on


@pytest.mark.timeout(60)  # a blocking open would hang here
def test_a_fifo_given_as_a_gguf_file_is_refused(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    from advisor.sources.gguf import spec_from_gguf

    with pytest.raises(HeaderError, match=r"(not a regular file|FIFO)"):
        spec_from_gguf(fifo)
    line = one_error_line(run_advisor("recommend", str(fifo), timeout=60))
    assert "FIFO" in line or "regular file" in line


@pytest.mark.timeout(60)
def test_fifos_in_a_model_folder_or_the_hub_cache_are_refused(tmp_path):
    from advisor.sources.local import spec_from_folder

    folder = tmp_path / "snapshot"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(Exception) as err:
        spec_from_folder(folder)
    assert "Traceback" not in str(err.value)
    state = cache_dir() / "hub" / "acme--m"
    state.mkdir(parents=True)
    os.mkfifo(state / "main.json")
    from advisor.sources import hub

    assert hub._read_cache("acme/m", "main") is None  # an unusable cache entry is as if absent


# ---------------------------------------------------------------------------------------------------------------
# Minor


def test_disabled_progress_bars_add_no_warnings():
    code = "import warnings; warnings.simplefilter('always')\nfrom advisor.hf import quiet\nwith quiet():\n    pass\n"
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "UserWarning" not in proc.stderr and proc.stderr.strip() == ""
