"""bench and chat's downloads (advisor.artifacts) against the stand-in Hub (tests/hubserver.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hubserver import running_hub

from advisor import artifacts, hf
from advisor.engines import Artifact, LoadOptions, open_engine
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
    folder = artifacts.hub_snapshot("acme/tiny")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "pytorch_model.bin" not in names
    engine = open_engine(Artifact("acme/tiny", folder, "transformers", "hub"), LoadOptions("bf16"))
    try:
        assert engine.weight_bytes > 0
    finally:
        engine.close()


def test_a_long_retry_after_is_one_line_not_an_hours_wait(hub_server, tiny_model_dir):
    repo = publish(hub_server, "acme/limited", Path(tiny_model_dir))
    repo.fault("429", "model.safetensors", retry_after="3600")
    start = time.perf_counter()
    with pytest.raises(NetworkError, match=r"rate-limiting downloads \(429, retry after 3,60[01] s\).*HF_TOKEN"):
        artifacts.hub_snapshot("acme/limited")
    assert time.perf_counter() - start < 20  # it did not sleep the hour
    from huggingface_hub.utils import _http

    assert _http.time is time  # huggingface_hub's own clock is back


def test_no_hub_and_no_cached_copy_is_one_line(hub_server):
    from huggingface_hub.utils import close_session

    hub_server.stop()
    close_session()
    with pytest.raises(NetworkError) as err:
        artifacts.hub_snapshot("acme/never-downloaded")
    text = str(err.value)
    assert "cannot be reached" in text and "no copy is in the local cache" in text and "HF_ENDPOINT" in text
    assert "LocalEntryNotFoundError" not in text and "\n" not in text


def test_huggingface_hub_still_sleeps_where_the_retry_guard_bounds_it():
    # The guard swaps the clock huggingface_hub's download retries sleep with; if a new version stops sleeping
    # there, this fails loudly (instead of a test hanging for hours on a 429's Retry-After).
    hook = hf.retry_sleep_hook()
    assert hook is not None, "huggingface_hub no longer sleeps through utils._http.time: update advisor.hf"
    module, attr = hook
    assert getattr(module, attr) is time


def test_the_retry_guard_nests_and_threads_restore_the_real_clock():
    import threading

    from huggingface_hub.utils import _http

    seen = []

    def worker():
        with hf.bounded_retry_waits(5):
            seen.append(type(_http.time).__name__)
            time.sleep(0.02)

    with hf.bounded_retry_waits(30):
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(hf.RateLimited):
            _http.time.sleep(10)  # the tightest limit in force applies while guards overlap
        assert _http.time is not time
    assert _http.time is time and seen == ["_GuardedClock"] * 3
