"""Nothing from a model repository runs, nothing pickled is loaded, and HF_TOKEN never shows.

* Remote code: a folder (or Hub repo) whose config.json has an `auto_map` pointing at `modeling_evil.py`, which
  would write a marker file on import. `recommend` (and `bench`) without --trust-remote-code must not import it.
* Pickles: a folder with `pytorch_model.bin` holding a pickle whose `__reduce__` writes a marker. `recommend`
  lists it by size only; `bench --no-record` refuses with a line naming --allow-pickle.
* HF_TOKEN: a recognisable fake token, sent to the stand-in Hub through every path (success, gated, 401, 404,
  429, 500, GGUF ranges, bench downloads, a debug traceback): it must not appear in stdout, stderr, or any file
  under the cache directories.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hubserver import catalog_config, catalog_tensors, running_hub, write_fake_safetensors

from advisor.errors import UnsupportedArchitectureError

pytestmark = pytest.mark.usefixtures("seeded_hw")

TOKEN = "hf_FaKeToKeN4AdvisorSecurityTests9876543210"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("repository code ran")
raise SystemExit("repository code ran")
"""


@pytest.fixture
def hub_server(monkeypatch):
    yield from running_hub(monkeypatch)


def run_advisor(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "200", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "advisor", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )


# ---------------------------------------------------------------------------------------------------------------
# Remote code


def _evil_folder(root: Path, *, model_type: str = "evil_lm", weights: bool = False) -> tuple[Path, Path]:
    folder = root / f"evil-{model_type}-{'w' if weights else 'nw'}"
    folder.mkdir()
    marker = root / f"MARKER-{folder.name}"
    config = {
        **catalog_config(SMOL),
        "model_type": model_type,
        "architectures": ["EvilForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("modeling_evil.py", "configuration_evil.py"):
        (folder / module).write_text(EVIL_MODULE.format(marker=str(marker)))
    if weights:
        write_fake_safetensors(folder / "model.safetensors", {"model.embed_tokens.weight": ("BF16", [49152, 576])})
    return folder, marker


def test_recommend_never_imports_repository_code(tmp_path):
    unknown, marker_a = _evil_folder(tmp_path)
    proc = run_advisor("recommend", str(unknown))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--trust-remote-code" in proc.stderr and proc.stderr.count("\n") == 1
    assert not marker_a.exists()

    with_weights, marker_b = _evil_folder(tmp_path, weights=True)  # falls back to the header counts
    proc = run_advisor("recommend", str(with_weights), "--json")
    assert proc.returncode == 0, proc.stderr
    assert any("--trust-remote-code" in w for w in json.loads(proc.stdout)["warnings"])
    assert not marker_b.exists()

    known, marker_c = _evil_folder(tmp_path, model_type="llama")  # auto_map beside a type transformers knows
    proc = run_advisor("recommend", str(known), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["total_params"] > 100e6
    assert not marker_c.exists()


def test_bench_never_imports_repository_code(tmp_path):
    folder, marker = _evil_folder(tmp_path)
    proc = run_advisor("bench", str(folder), "--no-record")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--trust-remote-code" in proc.stderr
    assert not marker.exists()


def test_in_process_readers_refuse_remote_code(tmp_path):
    from advisor.sources.config import load_config_file, spec_from_config
    from advisor.sources.local import spec_from_folder

    folder, marker = _evil_folder(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="--trust-remote-code"):
        spec_from_folder(folder)
    with pytest.raises(UnsupportedArchitectureError, match="--trust-remote-code"):
        spec_from_config(load_config_file(folder / "config.json"), model_id="evil")
    assert not marker.exists()
    assert "modeling_evil" not in sys.modules and "configuration_evil" not in sys.modules


def test_hub_never_fetches_repository_code(hub_server, tmp_path):
    from advisor.sources.hub import spec_from_hub

    folder, marker = _evil_folder(tmp_path, weights=True)
    repo = hub_server.add_repo(
        "acme/evil",
        config=json.loads((folder / "config.json").read_text()),
        tensors={"model.embed_tokens.weight": ("BF16", [49152, 576])},
    )
    for module in ("modeling_evil.py", "configuration_evil.py"):
        repo.add_file(module, (folder / module).read_bytes(), lfs=False)
    spec = spec_from_hub("acme/evil")
    assert spec.total_params == 49152 * 576
    assert not [r for r in hub_server.requests if r["path"].endswith(".py")]
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Pickles


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _pickle_folder(root: Path, *, config: bool = True) -> tuple[Path, Path]:
    folder = root / ("pickled" if config else "pickle-only")
    folder.mkdir()
    marker = root / f"UNPICKLED-{folder.name}"
    if config:
        (folder / "config.json").write_text(json.dumps(catalog_config(SMOL)))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Marker(marker)}))
    (folder / "training_args.bin").write_bytes(pickle.dumps(_Marker(marker)))
    return folder, marker


def test_recommend_lists_pickles_by_size_only(tmp_path):
    folder, marker = _pickle_folder(tmp_path)
    proc = run_advisor("recommend", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert any("never" in w and "pytorch_model.bin" in w for w in data["warnings"])
    assert not marker.exists()


def test_bench_refuses_pickles_naming_the_flag(tmp_path):
    folder, marker = _pickle_folder(tmp_path)
    proc = run_advisor("bench", str(folder), "--no-record")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("advisor:")]  # after progress lines
    assert len(errors) == 1 and "--allow-pickle" in errors[0] and str(folder) in errors[0]
    assert not marker.exists()


def test_folder_with_only_a_pickle(tmp_path):
    folder, marker = _pickle_folder(tmp_path, config=False)
    proc = run_advisor("recommend", str(folder))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not marker.exists()
    proc = run_advisor("bench", str(folder), "--no-record")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not marker.exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("advisor:")]
    assert len(errors) == 1 and "pickled weights" in errors[0] and "--allow-pickle" in errors[0]


def test_hub_never_downloads_pickles(hub_server):
    from advisor.sources.hub import spec_from_hub

    repo = hub_server.add_repo("acme/pickled", config=catalog_config(SMOL))
    repo.add_file("pytorch_model.bin", b"\x80\x04" + b"\0" * 1000, size=500_000_000)
    spec = spec_from_hub("acme/pickled")
    assert spec.files == {"pytorch_model.bin": 500_000_000}
    assert hub_server.file_bytes("acme/pickled").get("pytorch_model.bin", 0) == 0


# ---------------------------------------------------------------------------------------------------------------
# HF_TOKEN


def test_token_never_in_output_or_files(hub_server, tmp_path, smollm_gguf):
    hub_server.add_repo("acme/public", config=catalog_config(SMOL), tensors=catalog_tensors(SMOL), tokens={TOKEN})
    hub_server.add_repo("acme/gated", config=catalog_config(SMOL), gated="manual", tokens={"someone-else"})
    hub_server.add_repo("acme/private", config=catalog_config(SMOL), private=True, tokens={"someone-else"})
    for name, fault in (("acme/down", "500"), ("acme/limited", "429"), ("acme/revoked", "401")):
        hub_server.add_repo(name, config=catalog_config(SMOL)).fault(fault)
    gguf = hub_server.add_repo("acme/gguf", library_name="gguf")
    gguf.add_file(smollm_gguf.name, path=smollm_gguf)
    stall = hub_server.add_repo("acme/stall", config=catalog_config(SMOL), tensors=catalog_tensors(SMOL))
    stall.fault("stall", "model.safetensors", delay=3, keep=10)

    env = {
        "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub_server.url, "ADVISOR_HUB_TIMEOUT": "1",
        "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"], "HF_HOME": os.environ["HF_HOME"],
    }  # fmt: skip
    runs = [
        ("recommend", "acme/public", "--json"),
        ("recommend", "acme/public"),  # again, from the metadata cache
        ("recommend", "acme/gated"),
        ("recommend", "acme/private"),
        ("recommend", "acme/down"),
        ("recommend", "acme/limited"),
        ("recommend", "acme/revoked"),
        ("recommend", "acme/missing"),
        ("recommend", "acme/stall"),
        ("recommend", "acme/gguf", "--json"),
        ("recommend", "acme/public", "--revision", "no-such-branch"),
        ("bench", "acme/missing", "--no-record"),
        ("bench", "acme/gated", "--no-record"),
        ("bench", "acme/revoked", "--no-record"),
    ]

    def one(args):
        proc = run_advisor(*args, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return args, proc.returncode, proc.stdout + proc.stderr

    outputs = [one(runs[0])]  # the first fills the metadata cache the second reads
    with ThreadPoolExecutor(max_workers=3) as pool:
        outputs += list(pool.map(one, runs[1:]))
    debug = run_advisor("recommend", "acme/revoked", env={**env, "ADVISOR_DEBUG": "1"}, cwd=tmp_path)
    outputs.append((("debug",), debug.returncode, debug.stdout + debug.stderr))

    assert any(r["token"] == TOKEN for r in hub_server.requests)  # the token was really sent...
    assert outputs[0][1] == 0 and outputs[9][1] == 0
    assert all(code != 0 for args, code, _ in outputs[2:9])
    for args, _, text in outputs:
        assert TOKEN not in text, args  # ...and never shown
        assert TOKEN[3:20] not in text, args
    roots = [Path(os.environ["ADVISOR_CACHE_DIR"]), Path(os.environ["HF_HOME"]), tmp_path]
    files = [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]
    assert files  # the caches were written...
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path  # ...without the token
