"""Coverage-guided fuzzing of advisor's readers with atheris (libFuzzer for Python), seeded with the real seeds.

    pip install atheris                       # not a dependency: only this script uses it
    python benchmarks/atheris_fuzz.py gguf -max_total_time=120
    python benchmarks/atheris_fuzz.py safetensors -runs=20000
    python benchmarks/atheris_fuzz.py config -max_total_time=300 -rss_limit_mb=2048

Targets: gguf (spec_from_gguf on a file, then the same bytes as a Hub prefix), safetensors (a file alone in a
folder: read_local_safetensors_header + spec_from_folder), config (config.json through both loaders and the
meta-device build), label (parse_size and find_size_in_id). The hypothesis suite (tests/test_fuzz_readers.py,
benchmarks/hardening_report.py) mutates structure it knows about; atheris follows the branches the bytes reach.
Any exception that is not an AdvisorError with a one-line message is a crash: libFuzzer stops and writes the
input to ./crash-<sha1> (replay it with `python benchmarks/atheris_fuzz.py <target> ./crash-<sha1>`).
Arguments after the target go to libFuzzer (-runs, -max_total_time, -rss_limit_mb, -timeout, corpus folders).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGETS = ("gguf", "safetensors", "config", "label")


def _seed_corpus(target: str, folder: Path) -> None:
    import hardening as HZ

    seeds: list[tuple[str, bytes]] = []
    if target == "gguf":
        seeds = list(HZ.gguf_seeds())
        smol = HZ.smollm_seed()
        if smol is not None:
            seeds.append(("smollm2-prefix", smol[0][:2_200_000]))
    elif target == "safetensors":
        seeds = list(HZ.safetensors_seeds())
    elif target == "config":
        seeds = [(name, text.encode()) for name, text in HZ.config_seeds(all_configs=False)]
    else:
        seeds = [(f"label-{i}", s.encode("utf-8", "replace")) for i, s in enumerate(HZ.label_seeds())]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds:
        (folder / name).write_bytes(data)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    target = sys.argv.pop(1)
    import atheris

    with atheris.instrument_imports():
        import hardening as HZ

        from advisor import names  # noqa: F401
        from advisor.sources import config, gguf, local, quantized  # noqa: F401

    scratch = Path(tempfile.mkdtemp(prefix=f"advisor-atheris-{target}-"))
    os.environ.setdefault("ADVISOR_CACHE_DIR", str(scratch / "cache"))
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
    if not any(not a.startswith("-") for a in sys.argv[1:]):  # no corpus given: start from the real seeds
        corpus = scratch / "corpus"
        _seed_corpus(target, corpus)
        sys.argv.append(str(corpus))

    def one(data: bytes) -> None:
        if target == "gguf":
            HZ.check_gguf(("fuzz", data, None))
            if len(data) >= 24:
                HZ.check_gguf(("fuzz", data, len(data) + 4096))
        elif target == "safetensors":
            HZ.check_safetensors(("fuzz", data, None))
        elif target == "config":
            HZ.check_config(("fuzz", data))
        else:
            HZ.check_label(data.decode("utf-8", "replace"))

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
