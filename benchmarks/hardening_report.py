"""The hardening suite with a bigger budget, outside pytest: inputs fuzzed per reader, fault cases run, outcomes.

    python benchmarks/hardening_report.py               # ~4 min on a 2-core box
    python benchmarks/hardening_report.py --scale 0.1   # a quick look
    python benchmarks/hardening_report.py --scale 4 --seed 7 --json report.json

The generators are tests/hardening.py's (the same the pytest suite runs with a small budget): mutated real seeds
(catalog configs, safetensors files from the safetensors library, GGUF files from gguf.GGUFWriter, the first MB
of the embedded SmolLM2 GGUF), faults injected into the stand-in Hub (tests/hubserver.py), and damage to the
calibration store and the hardware profile. Every input must parse or raise advisor's own one-line error; every
fault must end in a clear error or, where a cached or catalog answer exists, that answer with a warning.

Exit status 1 if anything broke that contract.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import hardening as HZ  # noqa: E402

# Inputs per reader at --scale 1: about 20x the pytest budget.
BUDGET = {
    "size labels (names.parse_size, find_size_in_id)": 20_000,
    "config.json (load_config_file, spec_from_folder, spec_from_config)": 1_500,
    "safetensors files (read_local_safetensors_header, spec_from_folder)": 5_000,
    "safetensors header dicts (header_tensors, add_header)": 5_000,
    "GGUF (spec_from_gguf, spec_from_gguf_prefix, growing-prefix reader)": 4_000,
    "hardware.json (load_or_probe)": 2_000,
    "safetensors served by the stand-in Hub (spec_from_hub)": 300,
}


def _campaigns(scale: float, seed: int | None, server) -> list[HZ.Tally]:
    strategies = [
        (HZ.label_strategy(), HZ.check_label),
        (HZ.config_strategy(all_configs=True), HZ.check_config),
        (HZ.safetensors_strategy(), HZ.check_safetensors),
        (HZ.header_dict_strategy(), HZ.check_header_dict),
        (HZ.gguf_strategy(), HZ.check_gguf),
        (HZ.hardware_json_strategy(), HZ.check_hardware_json),
        (HZ.safetensors_strategy(), lambda case: HZ.check_hub_safetensors(server, case)),
    ]
    tallies = []
    for (name, budget), (strategy, check) in zip(BUDGET.items(), strategies, strict=True):
        n = max(1, int(budget * scale))
        print(f"  fuzzing {name}: {n:,} inputs ...", file=sys.stderr, flush=True)
        tallies.append(HZ.run_campaign(name, strategy, check, n, seed=seed))
    return tallies


def _faults(server, writers: int) -> list[tuple[str, str, str, bool]]:
    """(group, case, outcome, ok) for every Hub fault in every situation, then every state fault."""
    rows = []
    for fault in HZ.HUB_FAULTS:
        for situation in HZ.SITUATIONS:
            try:
                outcome, ok = HZ.run_hub_fault(server, fault, situation), True
            except Exception as exc:
                outcome, ok = f"BROKEN: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", False
            if outcome != "n/a":  # GGUF repos are not in the catalog
                rows.append(("hub", f"{fault.name} [{situation}]", outcome, ok))
    for name, case in HZ.state_fault_cases(writers):
        try:
            outcome, ok = case(), True
        except Exception as exc:
            outcome, ok = f"BROKEN: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", False
        rows.append(("state", name, outcome, ok))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every fuzz budget (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, repeatable)")
    parser.add_argument("--writers", type=int, default=200, help="records per process in the two-writer case")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON here")
    args = parser.parse_args()

    import pytest  # only for its MonkeyPatch, which the stand-in Hub's helper takes
    from hubserver import running_hub

    start = time.perf_counter()
    with HZ.isolated_env(), pytest.MonkeyPatch.context() as patch:
        hub = running_hub(patch)
        server = next(hub)
        try:
            tallies = _campaigns(args.scale, args.seed, server)
            print("  injecting faults ...", file=sys.stderr, flush=True)
            faults = _faults(server, args.writers)
        finally:
            hub.close()
    elapsed = time.perf_counter() - start

    broken = sum(len(t.failures) for t in tallies) + sum(not ok for *_, ok in faults)
    print(f"\nFuzzing ({sum(t.inputs for t in tallies):,} inputs in {sum(t.seconds for t in tallies):.0f} s)\n")
    print(f"  {'reader':<70} {'inputs':>8} {'parsed':>8}  {'advisor errors':<44} {'unexpected':>10}")
    for t in tallies:
        errors = Counter({k: v for k, v in t.outcomes.items() if k != "parsed"})
        shown = ", ".join(f"{k} {v:,}" for k, v in errors.most_common()) or "-"
        print(f"  {t.name:<70} {t.inputs:>8,} {t.outcomes.get('parsed', 0):>8,}  {shown:<44} {len(t.failures):>10}")
        for failure in t.failures:
            print(f"      BROKEN: {failure}")
    hub_rows = [r for r in faults if r[0] == "hub"]
    state_rows = [r for r in faults if r[0] == "state"]
    print(
        f"\nHub faults ({len(HZ.HUB_FAULTS)} faults in up to {len(HZ.SITUATIONS)} situations (nothing cached, "
        f"an older answer cached, a catalog id at a revision): {len(hub_rows)} cases; "
        f"ADVISOR_HUB_TIMEOUT={HZ.FAULT_TIMEOUT}s)\n"
    )
    for _, case, outcome, ok in hub_rows:
        print(f"  {'ok ' if ok else 'BAD'} {case:<78} {outcome}")
    print(f"\nState faults ({len(state_rows)} cases)\n")
    for _, case, outcome, ok in state_rows:
        print(f"  {'ok ' if ok else 'BAD'} {case:<78} {outcome}")
    print(
        f"\n{len(faults)} fault cases, {sum(t.inputs for t in tallies):,} fuzzed inputs, {broken} broken; "
        f"{elapsed:.0f} s"
    )

    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "fuzz": [
                        {
                            "reader": t.name,
                            "inputs": t.inputs,
                            "outcomes": dict(t.outcomes),
                            "failures": t.failures,
                            "seconds": round(t.seconds, 1),
                        }
                        for t in tallies
                    ],
                    "faults": [{"group": g, "case": c, "outcome": o, "ok": ok} for g, c, o, ok in faults],
                    "broken": broken,
                    "seconds": round(elapsed, 1),
                },
                indent=2,
            )
        )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
