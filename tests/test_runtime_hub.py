"""bench and chat's model download (runtime.prepare) against the stand-in Hub (tests/hubserver.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hubserver import running_hub

from advisor import runtime
from advisor.errors import NetworkError


@pytest.fixture
def hub_server(monkeypatch):
    yield from running_hub(monkeypatch)


def publish(hub_server, repo_id: str, folder: Path):
    repo = hub_server.add_repo(repo_id)
    for f in folder.iterdir():
        repo.add_file(f.name, f.read_bytes())
    repo.add_file("pytorch_model.bin", b"\x80\x04" + b"\0" * 100)  # a pickle beside the safetensors
    return repo


def test_a_hub_model_is_downloaded_without_its_pickles(hub_server, tiny_model_dir):
    publish(hub_server, "acme/tiny", Path(tiny_model_dir))
    source = runtime.prepare("acme/tiny")
    names = {p.name for p in source.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "pytorch_model.bin" not in names and source.origin == "hub"
    loaded = runtime.load(source, "bf16")
    try:
        assert loaded.weight_bytes > 0
    finally:
        runtime.free(loaded)


def test_a_long_retry_after_is_one_line_not_an_hours_wait(hub_server, tiny_model_dir):
    repo = publish(hub_server, "acme/limited", Path(tiny_model_dir))
    repo.fault("429", "model.safetensors", retry_after="3600")
    start = time.perf_counter()
    with pytest.raises(NetworkError, match=r"rate-limiting downloads \(429, retry after 3,60[01] s\).*HF_TOKEN"):
        runtime.prepare("acme/limited")
    assert time.perf_counter() - start < 20  # it did not sleep the hour
    from huggingface_hub.utils import _http

    assert _http.time is time  # huggingface_hub's own clock is back


def test_no_hub_and_no_cached_copy_is_one_line(hub_server):
    from huggingface_hub.utils import close_session

    hub_server.stop()
    close_session()
    with pytest.raises(NetworkError) as err:
        runtime.prepare("acme/never-downloaded")
    text = str(err.value)
    assert "cannot be reached" in text and "no copy is in the local cache" in text and "HF_ENDPOINT" in text
    assert "LocalEntryNotFoundError" not in text and "\n" not in text
