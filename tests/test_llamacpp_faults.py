"""llama.cpp bad input: each case is one line and a non-zero exit, never a traceback or a native crash of the
user's process (corrupt or truncated GGUF, an architecture llama.cpp does not know, a broken build, a context
longer than the model's, a cache type the build cannot run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.engines import llamacpp

pytestmark = pytest.mark.usefixtures("seeded_hw")


def run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=full, timeout=300
    )


def one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("advisor:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def needs_llama():
    if not llamacpp.usable():
        pytest.skip(llamacpp.unavailable_reason())


def _rewrite_arch(source: Path, target: Path, arch: str) -> Path:
    """A copy of a llama GGUF that claims another architecture (its keys renamed to match)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(str(source))
    writer = GGUFWriter(str(target), arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        name = field.name.replace("llama.", f"{arch}.", 1) if field.name.startswith("llama.") else field.name
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def test_an_architecture_llama_cpp_does_not_know_is_one_line(needs_llama, tiny_gguf, tmp_path):
    odd = _rewrite_arch(tiny_gguf, tmp_path / "mystery.gguf", "mystery")
    line = one_line_failure(run_main("chat", str(odd), "-m", "hi", "--runtime", "llama.cpp"))
    assert "mystery" in line


def test_a_corrupt_header_is_one_line(tmp_path, smollm_gguf):
    data = bytearray(smollm_gguf.read_bytes()[:4096])
    data[8:16] = (2**63 - 1).to_bytes(8, "little")  # an absurd tensor count
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(bytes(data))
    for command in (["chat", str(bad), "-m", "hi"], ["bench", str(bad), "--no-record"], ["recommend", str(bad)]):
        one_line_failure(run_main(*command), "corrupt.gguf")


def test_a_truncated_gguf_is_one_line_before_any_load(tmp_path, smollm_gguf):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(smollm_gguf.read_bytes()[:3_000_000])
    one_line_failure(run_main("chat", str(bad), "-m", "hi"), "truncated", "re-download")


def test_a_context_longer_than_the_model_is_one_line(needs_llama):
    one_line_failure(run_main("chat", "--max-context", "100000", "-m", "hi", "--runtime", "llama.cpp"), "8,192")


def test_a_broken_build_is_found_in_a_child_and_named_in_one_line(tmp_path):
    # llama-cpp-python loads its library from LLAMA_CPP_LIB_PATH when set: a file that is not a library.
    libdir = tmp_path / "lib"
    libdir.mkdir()
    for name in ("libllama.so", "libggml.so", "libggml-base.so"):
        (libdir / name).write_bytes(b"\x7fELF not really a library")
    env = {"LLAMA_CPP_LIB_PATH": str(libdir), "ADVISOR_CACHE_DIR": str(tmp_path / "cache")}
    line = one_line_failure(run_main("chat", "-m", "hi", "--runtime", "llama.cpp", env=env), "llama.cpp")
    assert "runtime transformers" in line or "setup.sh" in line
    # advisor itself goes on: the transformers options are still priced
    proc = run_main("recommend", "--json", env=env)
    assert proc.returncode == 0, proc.stderr


def test_crash_reasons_name_the_fix():
    import signal

    assert "rebuild" in llamacpp.crash_reason(-signal.SIGILL, "") and "SIGILL" in llamacpp.crash_reason(-4, "")
    assert "SIGSEGV" in llamacpp.crash_reason(-signal.SIGSEGV, "")
    assert "boom" in llamacpp.crash_reason(1, "warming up\nRuntimeError: boom\n")


def test_a_kv_cache_type_the_build_refuses_is_one_line(needs_llama, tiny_gguf):
    # q4_0 keys need flash attention in llama.cpp; forcing it off is refused by llama.cpp itself.
    proc = run_main(
        "bench", str(tiny_gguf), "--kv-cache-type", "q4_0", "--no-flash-attn", "--no-record", "--repeats", "1",
        "--prompt-lengths", "8", "--depths", "8",
    )  # fmt: skip
    if proc.returncode == 0:
        assert "Traceback" not in proc.stderr
    else:
        one_line_failure(proc)
