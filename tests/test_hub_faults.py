"""Injected faults against the stand-in Hub (tests/hubserver.py), each in three situations.

tests/test_hub.py covers the HTTP status mapping and single faults; this module runs every fault of
`hardening.HUB_FAULTS` (connection refused, reset mid-body, stalls and slow answers past ADVISOR_HUB_TIMEOUT,
429 with Retry-After, 5xx, a Content-Length longer than the body, a body cut short, an answer that is not JSON,
a safetensors header claiming a length past the file's end, and the same on GGUF range requests) when:

* nothing is cached: one NetworkError line naming the repo (a HeaderError for a corrupt file);
* advisor's metadata cache holds an older answer: that answer, with a warning;
* a catalog model is asked at a revision: the catalog's answer, with a warning.

Every run must end within `FAULT_LIMIT_S` (huggingface_hub's downloads sleep Retry-After, an hour here, before
retrying a 429: advisor must not). Also here: mutated safetensors files served by the stand-in, and damaged
entries in advisor's own metadata cache.
"""

from __future__ import annotations

import json
import os

import hardening as HZ
import pytest
from hubserver import running_hub
from hypothesis import given

from advisor.errors import AdvisorError, NetworkError


@pytest.fixture
def hub_server(monkeypatch):
    yield from running_hub(monkeypatch)


@pytest.mark.parametrize("situation", HZ.SITUATIONS)
@pytest.mark.parametrize("fault", HZ.HUB_FAULTS, ids=[f.name for f in HZ.HUB_FAULTS])
def test_fault(hub_server, fault, situation):
    result = HZ.run_hub_fault(hub_server, fault, situation)
    assert result  # run_hub_fault raises on any breach of the contract


def test_429_message_says_when_to_retry(hub_server, monkeypatch):
    from advisor.sources.hub import spec_from_hub

    HZ.add_fault_repos(hub_server)
    hub_server.repos[HZ.HUB_REPO].fault("429", "api", retry_after="120")
    with pytest.raises(NetworkError) as err:
        spec_from_hub(HZ.HUB_REPO)
    text = str(err.value)
    assert "rate-limiting" in text and "retry after 120 s" in text and "HF_TOKEN" in text
    hub_server.repos[HZ.HUB_REPO].fault("429", "api", retry_after="Wed, 21 Oct 2065 07:28:00 GMT")
    with pytest.raises(NetworkError, match="retry after Wed, 21 Oct 2065"):
        spec_from_hub(HZ.HUB_REPO)


def test_fault_then_recovery_refetches(hub_server):
    """A fault leaves nothing behind: once the Hub answers again, the fresh answer is fetched and cached."""
    from advisor.sources.hub import spec_from_hub

    HZ.add_fault_repos(hub_server)
    repo = hub_server.repos[HZ.HUB_REPO]
    repo.fault("reset", "model.safetensors", keep=100)
    with pytest.raises(NetworkError):
        spec_from_hub(HZ.HUB_REPO)
    repo.faults.clear()
    spec = spec_from_hub(HZ.HUB_REPO)
    assert spec.total_params > 100e6 and not any("unreachable" in w for w in spec.warnings)


@pytest.mark.parametrize(
    "damage",
    [
        b"[" * 100_000,  # json.loads raised RecursionError, which _read_cache did not catch
        b'{"format": 1, "repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "header": {"params_by_dtype": 5}}',
        b'{"format": 1, "repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf_spec": {"nonsense": 1}}',
        b'{"format": 1, "repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "sha": 7, "fetched_at": "x"}',
        b"\xff\xfe garbage",
    ],
    ids=["deep-nesting", "header-not-a-table", "gguf-spec-garbage", "wrong-types", "not-utf8"],
)
def test_damaged_metadata_cache_is_refetched(hub_server, damage):
    from advisor.sources.hub import _cache_path, spec_from_hub

    HZ.add_fault_repos(hub_server)
    good = spec_from_hub(HZ.HUB_REPO)
    path = _cache_path(HZ.HUB_REPO, "main")
    path.write_bytes(damage)
    again = spec_from_hub(HZ.HUB_REPO)  # the damaged entry is ignored and rewritten
    assert again.total_params == good.total_params
    assert json.loads(path.read_text())["repo_id"] == HZ.HUB_REPO
    path.write_bytes(damage)
    hub_server.stop()
    with pytest.raises(NetworkError, match="nothing about it is cached"):  # a damaged entry is no fallback
        spec_from_hub(HZ.HUB_REPO, revision="main")


def test_fuzz_safetensors_served_by_the_hub(hub_server):
    """Mutated safetensors files, served whole by the stand-in: huggingface_hub's parser sees them first."""

    @HZ.fuzz_settings(40)
    @given(HZ.safetensors_strategy())
    def run(case):
        HZ.check_hub_safetensors(hub_server, case)

    run()
    assert not hub_server.violations


@pytest.mark.timeout(120)  # a client that ignored the 0.3 s setting would wait out the 600 s stall and fail here
def test_timeout_setting_is_respected_by_config_downloads(hub_server, monkeypatch):
    """config.json used to go through hf_hub_download, whose GET ignores ADVISOR_HUB_TIMEOUT (10 s default)."""
    from advisor.sources.hub import spec_from_hub

    HZ.add_fault_repos(hub_server)
    hub_server.repos[HZ.HUB_REPO].fault("stall", "config.json", delay=600, keep=5)
    monkeypatch.setenv("ADVISOR_HUB_TIMEOUT", "0.3")
    with pytest.raises(NetworkError, match=r"0\.3s"):
        spec_from_hub(HZ.HUB_REPO)


def test_oversized_config_is_refused_without_reading_it_all(hub_server, monkeypatch):
    from advisor import fileio
    from advisor.sources.hub import spec_from_hub

    monkeypatch.setattr("advisor.sources.hub.MAX_CONFIG_BYTES", 1 << 20)
    repo = hub_server.add_repo("acme/huge-config")
    repo.add_file("config.json", b'{"model_type": "llama", "pad": "' + b"x" * (3 << 20) + b'"}', lfs=False)
    with pytest.raises(AdvisorError, match=r"'config\.json' is over 1 MiB: not a config file"):
        spec_from_hub("acme/huge-config")
    assert fileio.MAX_CONFIG_BYTES == 64 << 20


@pytest.mark.parametrize("extra", [0, 1])
def test_config_at_the_cap_is_read_and_one_byte_over_is_refused(hub_server, monkeypatch, extra):
    """The cap is on bytes received: a body that happened to arrive in chunks adding up to exactly the cap was
    once cut there and reported as broken JSON (CI saw it);
    a body of exactly the cap is a file, one byte more is not."""
    import importlib

    from huggingface_hub.utils import get_session

    from advisor.sources.hub import spec_from_hub

    http = importlib.import_module(type(get_session()).__module__.split(".")[0])  # httpx, or httpx2 in hf_hub 2.x
    whole = http.Response.iter_bytes  # chunks of 64 KiB, so that one of them ends exactly at the cap
    monkeypatch.setattr(http.Response, "iter_bytes", lambda self, chunk_size=None: whole(self, 1 << 16))
    limit = 1 << 20
    monkeypatch.setattr("advisor.sources.hub.MAX_CONFIG_BYTES", limit)
    head = b'{"model_type": "llama", "pad": "'
    body = head + b"x" * (limit - len(head) - 2 + extra) + b'"}'
    assert len(body) == limit + extra
    repo = hub_server.add_repo(f"acme/cap-{extra}")
    repo.add_file("config.json", body, lfs=False)
    if extra:
        with pytest.raises(AdvisorError, match=r"is over 1 MiB: not a config file"):
            spec_from_hub(f"acme/cap-{extra}")
    else:  # read whole and parsed: llama's defaults size the rest
        assert spec_from_hub(f"acme/cap-{extra}").architecture


def test_token_is_not_in_fault_messages(hub_server, monkeypatch):
    """Every fault's message, with HF_TOKEN set (the CLI-level check is in test_security.py)."""
    secret = "hf_FaultFuzzSecret0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", secret)
    HZ.add_fault_repos(hub_server)
    for fault in HZ.HUB_FAULTS:
        result = HZ.run_hub_fault(hub_server, fault, "cold")
        assert secret not in result
    assert any(r["token"] == secret for r in hub_server.requests)
    cache = os.environ["ADVISOR_CACHE_DIR"]
    for root, _, files in os.walk(cache):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                assert secret.encode() not in fh.read()


def _served_header(header: str) -> bytes:
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw + bytes(32)


@pytest.mark.parametrize(
    "header",
    [
        '{"w": {"dtype": "F16", "shape": 4095, "data_offsets": [0, 8]}}',  # advisor's list(t.shape): TypeError
        '{"w": {"dtype": "F32", "shape": [[[2]]], "data_offsets": [0, 8]}}',  # huggingface_hub's own TypeError
        '{"__metadata__": {"a": ' + "[" * 995 + "]" * 995 + '}, "w": {"dtype": "F32", "shape": [2], '
        '"data_offsets": [0, 8]}}',  # 995 deep: json's RecursionError
        '{"w": {"dtype": "F32", "shape": [' + "9" * 400 + '], "data_offsets": [0, 8]}}',  # overflowed floats later
    ],
    ids=["int-shape", "nested-shape", "deep-metadata", "400-digit-dim"],
)
def test_corrupt_header_on_the_hub_is_a_header_error(hub_server, header):
    """A corrupt file is an answer, not an outage: HeaderError naming the shard, whatever is cached."""
    from advisor.errors import HeaderError
    from advisor.sources.hub import spec_from_hub

    repo = hub_server.add_repo("acme/corrupt")
    repo.add_file("model.safetensors", _served_header(header), lfs=True)
    with pytest.raises(HeaderError) as err:
        spec_from_hub("acme/corrupt")
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_empty_safetensors_on_the_hub_is_a_header_error(hub_server):
    """Found by the hub fuzz: a range request on an empty file is refused (416), which read as an outage."""
    from advisor.errors import HeaderError
    from advisor.sources.hub import spec_from_hub

    hub_server.add_repo("acme/empty").add_file("model.safetensors", b"", lfs=True)
    with pytest.raises(HeaderError, match="0 bytes, too short"):
        spec_from_hub("acme/empty")
