"""How close advisor's vLLM KV pool is to what vLLM printed at start-up, on logs users posted.

    python benchmarks/vllm_kv.py [--csv benchmarks/data/vllm_kv_logs.csv] [--verbose] [--json OUT]

Each row of the CSV is one start-up log with its configuration (model, GPU, tensor-parallel size,
gpu_memory_utilization, max_model_len, quantization, vLLM version). For every row whose configuration is
complete (a model config advisor can read, the GPU's total memory from the log or the accelerator table), this
prices the same configuration with `advisor.costmodel.serving.vllm_memory` and compares
`GPU KV cache size: N tokens` (or, for V0 logs, blocks x 16 = concurrency x max_model_len).

Two checks:
- full: advisor predicts everything (weights, activation peak, non-torch, CUDA graphs, the pool).
  Target: within 10% for at least 80% of the rows.
- pool: given the `Available KV cache memory` the log printed, the block/group/token arithmetic alone
  (should be exact up to rounding).

A held-out CSV with the same columns can be passed with --csv. Rows can carry `config` (a path to a
config.json) and `vllm_version_assumed`; otherwise the mapping below and the row's notes are used.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.costmodel import serving as SV  # noqa: E402

GiB = 1024**3
TARGET_WITHIN = 0.10
TARGET_SHARE = 0.80

# Model in the log -> the config advisor reads (benchmarks/data/configs/SOURCES.md says why each is the same shape).
CONFIGS = {
    "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4": "data/configs/Qwen__Qwen2.5-72B-Instruct.json",
    "Qwen/Qwen2.5-32B-Instruct-AWQ": "data/configs/Qwen__Qwen2.5-32B-Instruct.json",
    "Qwen/Qwen3-235B-A22B-FP8": "data/configs/Qwen__Qwen3-235B-A22B.json",
    "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": "data/configs/Qwen__Qwen3-235B-A22B.json",
    "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ": "data/configs/Qwen__Qwen3-235B-A22B.json",
    "QuantTrio/Qwen3-VL-235B-A22B-Instruct-FP8": "benchmarks/data/configs/Qwen__Qwen3-VL-235B-A22B-Instruct.json",
    "QuantTrio/Qwen3-VL-235B-A22B-Instruct-AWQ": "benchmarks/data/configs/Qwen__Qwen3-VL-235B-A22B-Instruct.json",
    "Qwen/Qwen3-30B-A3B-Instruct-2507-FP8": "data/configs/Qwen__Qwen3-30B-A3B.json",
    "Qwen/Qwen3-30B-A3B-FP8": "data/configs/Qwen__Qwen3-30B-A3B.json",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8": "data/configs/Qwen__Qwen3-30B-A3B.json",
    "Qwen/Qwen3-8B-FP8": "data/configs/Qwen__Qwen3-8B.json",
    "Qwen/Qwen2.5-0.5B": "data/configs/Qwen__Qwen2.5-0.5B-Instruct.json",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": "benchmarks/data/configs/Qwen__Qwen2.5-14B.json",
    "meta-llama/Meta-Llama-3-8B": "data/configs/meta-llama__Meta-Llama-3-8B-Instruct.json",
    "meta-llama/Llama-3.1-8B(-Instruct)": "data/configs/meta-llama__Llama-3.1-8B-Instruct.json",
    "unsloth/Llama-3.2-3B-Instruct": "data/configs/meta-llama__Llama-3.2-3B-Instruct.json",
    "LGAI-EXAONE/EXAONE-4.0-32B-FP8": "data/configs/LGAI-EXAONE__EXAONE-4.0-32B.json",
    "moonshotai/Kimi-K2-Thinking": "benchmarks/data/configs/moonshotai__Kimi-K2-Thinking.json",
    "teknium/OpenHermes-2.5-Mistral-7B": "data/configs/mistralai__Mistral-7B-Instruct-v0.1.json",
    "TheBloke/zephyr-7B-beta-AWQ": "data/configs/mistralai__Mistral-7B-Instruct-v0.1.json",
    "google/gemma-2-9b": "data/configs/google__gemma-2-9b-it.json",
    # batch 3: quantized checkpoints keep their base model's architecture
    "Qwen/Qwen3-14B-AWQ": "data/configs/Qwen__Qwen3-14B.json",
    "Qwen/Qwen2.5-7B-Instruct-AWQ": "data/configs/Qwen__Qwen2.5-7B-Instruct.json",
    "TechxGenus/DeepSeek-V2-Lite-Chat-AWQ": "data/configs/deepseek-ai__DeepSeek-V2-Lite.json",
    "Qwen/Qwen3-4B-Instruct-2507-FP8": "data/configs/Qwen__Qwen3-4B-Instruct-2507.json",
    "kaitchup/Phi-4-AutoRound-GPTQ-4bit": "data/configs/microsoft__phi-4.json",
    "google/gemma-4-E2B": "data/configs/google__gemma-4-E2B-it.json",
    "google/gemma-4-E2B-it": "data/configs/google__gemma-4-E2B-it.json",
    "google/gemma-4-E2B-it-qat-w4a16-ct": "data/configs/google__gemma-4-E2B-it.json",
}

# Versions the notes infer from file:line layouts where the log does not print one.
VERSIONS = {
    "vllm10517_llama31_8b_3090_20k": "0.6.4",
    "vllm10517_llama31_8b_3090_29k": "0.6.4",
    "vllm21348_qwen3_235b_fp8_4xh100": "0.9.2",
    "lmcache1739_qwen3_14b_1gpu": "0.10.2",
    "vllm13061_r1_distill_qwen14b_2x4090": "0.7.2",
    "qwen295_qwen15_7b_chat": "0.4.0",
    "vllm28228_kimi_linear_48b_awq_2x3090": "0.11.1",
    "vllm25970_qwen25_omni_7b_a100_40g": "0.10.2",
    "recipes_kimi_k2_thinking_8xh200_tp8": "0.11.1",
    "recipes_kimi_k2_thinking_8xh200_tp8_dcp8": "0.11.1",
    "koreannotes_qwen25_05b_16g_v2runner": "0.26.0",
    "vllm19996_llama31_8b_eagle_h100": "0.9.2",
    "oci_aqua_llama31_8b_a10_v0": "0.7.0",
    "zhnotes_qwen3_8b_fp8_24g_tp1_0102": "0.10.2",
    "kvrouting_guide_qwen3_06b_l40s": "0.11.1",
    "aiplatform_qwen3_vl_235b_fp8_8xl40s": "0.11.0",
    "aiplatform_qwen3_vl_235b_awq_8xl40s": "0.11.0",
    "vllm17462_qwen3_32b_tp2": "0.8.5",
    "vlmvllm_llava16_mistral7b_80g": "0.10.2",
    "vllm_pr10927_dsv2lite_h100": "0.6.4",
    "vllm_pr10511_llama3_8b_tp1": "0.6.5",
    "vllm_pr10511_llama3_8b_tp2": "0.6.5",
    "h200notes_deepseek_r1_tp8_v0": "0.7.3",
    "davidshare_phi4_gptq_80g_v065": "0.6.5",
}

# Configurations advisor does not model: said so, not counted.
UNSUPPORTED = {
    "recipes_kimi_k2_thinking_8xh200_tp8_dcp8": "decode context parallel multiplies the token line",
    "vllm19996_llama31_8b_eagle_h100": "EAGLE drafter layers share the pool",
    "vllm13061_r1_distill_qwen14b_2x4090": "the post's numbers contradict each other (see its notes)",
}


def _num(text: str | None) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?", (text or "").replace(",", ""))
    return float(match.group()) if match else None


def _precision(row: dict) -> str:
    q = (row.get("quantization") or "").lower()
    if "mxfp4" in q:
        return "mxfp4"
    if "awq" in q:
        return "awq"
    if "gptq" in q or "marlin" in q:
        return "gptq"
    if "w8a8" in q or "int8" in q:
        return "int8"
    if "fp8" in q:
        return "fp8"
    return "bf16"


def _spec(model: str, config: str | None):
    from advisor.sources import resolve
    from advisor.sources.config import load_config_file, spec_from_config

    base = model.split(" ")[0]
    path = config or CONFIGS.get(base) or CONFIGS.get(model)
    if path:
        return spec_from_config(load_config_file(ROOT / path), model_id=base, source="config")
    return resolve(base)


def _with_checkpoint(spec, row: dict):
    """The spec as advisor reads a pre-quantized repository: where the row gives the checkpoint's real size
    (`checkpoint_bytes`, with its source in the notes), the weights are priced from those bytes, as they are when
    advisor reads the safetensors headers from the Hub."""
    size = _num(row.get("checkpoint_bytes"))
    if not size:
        return spec
    label = spec.quantization or (row.get("quantization") or "").split("(")[0].strip()
    return dataclasses.replace(spec, checkpoint_bytes=int(size), quantization=label)


def _gpu(row: dict, tp: int):
    """The GPU as the log saw it: its logged total where printed, else the table's."""
    from advisor.accelerators import lookup, table
    from advisor.errors import DeviceNotFoundError
    from advisor.serve import gpu_from_accelerator

    total = _num(row.get("total_gpu_gib"))
    name = (row.get("gpu") or "").replace("NVIDIA", "").split("(")[0]
    name = re.sub(r"\bx\s*\d+\b.*$", "", name).replace("-SXM4-", " SXM4 ").replace("-", " ").strip()
    acc = None
    for candidate in (name, " ".join(name.split()[:3]), " ".join(name.split()[:2]), " ".join(name.split()[:1])):
        if not candidate or len(candidate) < 2:
            continue
        try:
            acc = lookup(candidate)
            break
        except DeviceNotFoundError as exc:
            if "ambiguous" in str(exc):
                # 'A100 80GB' names PCIe and SXM4 rows alike: same memory, so the same pool.
                words = candidate.lower().split()
                rows = [a for a in table() if all(w in a.name.lower() for w in words)]
                if rows and len({a.cuda_total_bytes for a in rows}) == 1:
                    acc = rows[0]
                    break
            continue
    if acc is None and total is None:
        return None
    if acc is not None:
        gpu = gpu_from_accelerator(acc)
        if total:
            gpu = SV.ServeGpu(**{**gpu.__dict__, "total_bytes": int(total * GiB)})
        return gpu
    return SV.ServeGpu(name=row.get("gpu") or "unknown", total_bytes=int(total * GiB))  # type: ignore[operator]


def _logged_tokens(row: dict) -> tuple[int | None, str]:
    tokens = _num(row.get("kv_cache_tokens"))
    if tokens:
        return int(tokens), "tokens line"
    conc, length = _num(row.get("max_concurrency")), _num(row.get("max_model_len"))
    version = row.get("vllm_version") or VERSIONS.get(row["id"], "")
    if conc and length and (version.startswith("0.6") or version.startswith("0.7") or not version):
        return int(conc * length), "concurrency x max_model_len"
    return None, ""


def check_row(row: dict) -> dict:
    out = {"id": row["id"], "model": row["model"]}
    logged, how = _logged_tokens(row)
    if not logged:
        return {**out, "skip": "no token count in the log"}
    if row["id"] in UNSUPPORTED:
        return {**out, "skip": UNSUPPORTED[row["id"]]}
    out.update(logged=logged, logged_from=how)
    try:
        spec = _spec(row["model"], row.get("config"))
    except Exception as exc:  # a model advisor cannot read offline
        return {**out, "skip": f"no config: {str(exc).splitlines()[0][:120]}"}
    spec = _with_checkpoint(spec, row)
    tp = int(_num(row.get("tensor_parallel")) or _num(row.get("num_gpus")) or 1)
    pp = int(_num(row.get("pipeline_parallel")) or 1)
    version_text = row.get("vllm_version_assumed") or row.get("vllm_version") or VERSIONS.get(row["id"])
    version = SV.parse_version(version_text, "vllm")
    context = int(_num(row.get("max_model_len")) or spec.max_context or 4096)
    precision = _precision(row)
    kv = "fp8" if "fp8" in (row.get("kv_cache_dtype") or "").lower() else "auto"
    eager = (row.get("enforce_eager") or "").lower() == "true"
    flags = (row.get("other_flags") or "").lower()
    serve = not ("offline" in flags or "llm(" in flags or "bench latency" in flags)
    # The environment is part of the configuration: a `flashinfer` column (true/false) says whether vLLM
    # 0.8-0.14 had FlashInfer (its Docker images ship it; a pip install does not), set only where the log prints
    # the sampler it chose (vllm_kv_logs.md). Unknown: pip.
    fi = (row.get("flashinfer") or "").strip().lower()
    flashinfer = True if fi == "true" else False if fi == "false" else None
    opts = SV.ServeOptions(
        engine="vllm",
        precision=precision,
        kv_cache_dtype=kv,
        gpu_memory_utilization=_num(row.get("gpu_memory_utilization")),
        context=context,
        version=version,
        max_num_batched_tokens=int(_num(row.get("max_num_batched_tokens")) or 0) or None,
        max_num_seqs=int(_num(row.get("max_num_seqs")) or 0) or None,
        enforce_eager=eager,
        serve=serve,
        flashinfer=flashinfer,
        language_model_only="--language-model-only" in flags,
    )
    out.update(version=".".join(map(str, version)), precision=precision, tp=tp, context=context)
    # Pool arithmetic alone, from the logged available memory.
    available = _num(row.get("available_kv_gib"))
    if available:
        kvr = SV.kv_per_rank(spec, tp=tp, kv_bytes=SV.kv_dtype_bytes(kv, precision), latent=version >= (0, 6, 5))
        gpu_any = _gpu(row, tp) or SV.ServeGpu(name="?", total_bytes=80 * GiB)
        d = SV.vllm_defaults(version, gpu_any, context=context, serve=serve, mla=kvr.mla)
        layers = max(spec.num_layers or 1, 1)
        pool = SV.vllm_pool(
            kvr,
            int(available * GiB),
            context=context,
            block=d.block_size,
            max_num_batched_tokens=opts.max_num_batched_tokens or d.max_num_batched_tokens,
            version=version,
            layer_share=SV._pp_stage_layers(layers, pp)[0] / layers,
            token_line=d.token_line,
            in_flight_batches=SV.vllm_in_flight_batches(
                version, v2_runner=SV.vllm_v2_runner(version, spec, quantized=SV.is_quantized(precision)), pp=pp
            ),
        )
        out["pool_tokens"] = pool.kv_cache_tokens
        out["pool_error"] = pool.kv_cache_tokens / logged - 1
    gpu = _gpu(row, tp)
    if gpu is None:
        out["full_skip"] = "GPU and its total memory not in the log"
        return out
    mem = SV.vllm_memory(spec, gpu, opts, precision=precision, tp=tp, pp=pp, context=context)
    out.update(
        predicted=mem["kv_cache_tokens"],
        error=mem["kv_cache_tokens"] / logged - 1,
        predicted_available_gib=round(mem["available_kv_bytes"] / GiB, 2),
        logged_available_gib=available,
        weights_gib=round(mem["weights_bytes"] / GiB, 3),
        logged_weights_gib=_num(row.get("weights_gib")),
        activation_gib=round(mem["activation_bytes"] / GiB, 2),
        cudagraph_gib=round(mem["cudagraph_bytes"] / GiB, 2) if mem["cudagraph_in_budget"] else 0.0,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(ROOT / "benchmarks/data/vllm_kv_logs.csv"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", default=None, help="Write every row's result here.")
    args = parser.parse_args()
    with open(args.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    results = [check_row(r) for r in rows]
    full = [r for r in results if "error" in r]
    pool = [r for r in results if "pool_error" in r]
    for r in results:
        if "error" in r or args.verbose:
            line = f"{r['id'][:48]:48} "
            if "error" in r:
                line += (
                    f"log {r['logged']:>10,} est {r['predicted']:>10,} {r['error']:+7.1%}  avail "
                    f"{r['predicted_available_gib']:>7} vs {r['logged_available_gib'] or '-':>6}  w {r['weights_gib']}"
                    f" vs {r['logged_weights_gib'] or '-'}  act {r['activation_gib']} cg {r['cudagraph_gib']}"
                )
            else:
                line += "skip: " + (r.get("skip") or r.get("full_skip") or "")
            print(line)
    within = [r for r in full if abs(r["error"]) <= TARGET_WITHIN]
    share = len(within) / len(full) if full else 0.0
    pool_within = [r for r in pool if abs(r["pool_error"]) <= 0.01]
    print()
    print(f"full prediction: {len(within)}/{len(full)} rows within {TARGET_WITHIN:.0%} ({share:.0%}; target "
          f"{TARGET_SHARE:.0%}); median |error| {statistics.median(abs(r['error']) for r in full):.1%}" if full else
          "full prediction: no complete rows")  # fmt: skip
    if pool:
        print(f"pool arithmetic from the logged available memory: {len(pool_within)}/{len(pool)} within 1%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if share >= TARGET_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())
