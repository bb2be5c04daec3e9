"""`advisor serve-plan`: the target (this machine's GPUs, or table hardware), the engines that apply, and the
plans from `advisor.costmodel.serving`. Also the scale-out section `recommend` prints when nothing fits here."""

from __future__ import annotations

import dataclasses
from typing import Any

from advisor.costmodel import serving as SV
from advisor.errors import UsageError
from advisor.spec import Device, Hardware, ModelSpec

GiB = 1024**3


def _capability(text: Any) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _number_formats(acc, cc: float | None) -> dict[str, bool | None]:
    """fp8 and bf16 support: the accelerator table's word where it has one, else the compute capability's
    (FP8 tensor cores from 8.9, bf16 from 8.0), else unknown."""
    return {
        "fp8": acc.fp8 if acc and acc.fp8 is not None else (cc >= 8.9 if cc else None),
        "bf16": acc.bf16 if acc and acc.bf16 is not None else (cc >= 8.0 if cc else None),
    }


def gpu_from_accelerator(acc, *, memory_gb: float | None = None) -> SV.ServeGpu:
    """A table row as a serving engine sees it (total as CUDA reports it; nothing known to be in use)."""
    total = acc.cuda_total(memory_gb)
    if not total:
        raise UsageError(f"The accelerator table has no memory size for '{acc.name}': add --memory-gb.")
    cc = acc.compute_capability
    return SV.ServeGpu(
        name=acc.name,
        total_bytes=int(total),
        free_bytes=None,
        bandwidth_gbps=acc.bandwidth_gbps,
        tflops_16bit=acc.tflops_16bit,
        compute_capability=cc,
        vendor=acc.vendor,
        **_number_formats(acc, cc),
        source="table",
    )


def gpu_from_device(dev: Device) -> SV.ServeGpu:
    """One of this machine's GPUs: the total torch reports, NVML's free bytes, the datasheet bandwidth where the
    table knows the card (the engines' efficiencies are relative to it), else the measured one."""
    from advisor.accelerators import lookup
    from advisor.errors import DeviceNotFoundError

    try:
        acc = lookup(dev.name.replace("NVIDIA", "").strip())
    except DeviceNotFoundError:
        acc = None
    cc = _capability((dev.details or {}).get("compute_capability")) or (acc.compute_capability if acc else None)
    bandwidth = dev.theoretical_bandwidth_gbps or (acc.bandwidth_gbps if acc else None) or dev.bandwidth_gbps
    tflops = (acc.tflops_16bit if acc else None) or dev.matmul_tflops
    return SV.ServeGpu(
        name=dev.name,
        total_bytes=dev.memory_bytes,
        free_bytes=dev.free_bytes,
        bandwidth_gbps=bandwidth,
        tflops_16bit=tflops,
        compute_capability=cc,
        vendor="AMD" if "amd" in dev.name.lower() or "instinct" in dev.name.lower() else "NVIDIA",
        **_number_formats(acc, cc),
        source="this machine",
    )


def cpu_as_server(dev: Device) -> SV.ServeGpu:
    """The CPU and its RAM as a llama-server host."""
    return SV.ServeGpu(
        name=dev.name,
        total_bytes=dev.memory_bytes,
        free_bytes=dev.free_bytes,
        bandwidth_gbps=dev.bandwidth_gbps,
        tflops_16bit=dev.matmul_tflops,
        vendor="cpu",
        fp8=False,
        bf16=None,
        source="this machine",
    )


def target_from_args(
    device: str | None, *, nodes: int, memory_gb: float | None, fit: str, hw: Hardware | None
) -> tuple[SV.Target, list[str]]:
    """The serving target: `--device "8x H100 SXM5"` (x --nodes), or this machine's GPUs (or its CPU)."""
    from advisor.accelerators import lookup, parse_device_arg

    notes: list[str] = []
    if device:
        count, name = parse_device_arg(device)
        acc = lookup(name)
        gpu = gpu_from_accelerator(acc, memory_gb=memory_gb)
        notes.append(
            f"{count}x {acc.name} per node from the accelerator table: {gpu.total_bytes / GiB:.1f} GiB as CUDA "
            f"reports it (sold as {acc.memory_gb:g} GB)"
        )
        return SV.Target(gpu=gpu, gpus_per_node=count, nodes=nodes, fit="total"), notes
    if nodes > 1:
        raise UsageError("--nodes plans a cluster of table hardware: give --device too, e.g. --device '8x H100 SXM5'.")
    assert hw is not None
    gpus = [d for d in hw.accelerators if d.kind == "cuda"]
    if gpus:
        gpu = gpu_from_device(gpus[0])
        if fit == "total":
            gpu = dataclasses.replace(gpu, free_bytes=None)
        if len({d.name for d in gpus}) > 1:
            notes.append(f"GPUs of different kinds here: planned on {len(gpus)}x {gpus[0].name}")
        if gpu.free_bytes is not None:
            notes.append(
                f"fitted against free memory: {gpu.free_bytes / GiB:.1f} of {gpu.total_bytes / GiB:.1f} GiB per GPU "
                "(--fit total for the total)"
            )
        return SV.Target(gpu=gpu, gpus_per_node=len(gpus), nodes=1, fit=fit), notes
    cpu = hw.cpu
    if cpu is None:
        raise UsageError("No GPU or CPU figures for this machine: run `advisor hw` or give --device.")
    server = cpu_as_server(cpu)
    if fit == "total":
        server = dataclasses.replace(server, free_bytes=None)
    notes.append("no GPU on this machine: llama-server on the CPU; give --device to plan vLLM or SGLang on GPUs")
    if server.free_bytes is not None:
        notes.append(
            f"fitted against available RAM: {server.free_bytes / GiB:.1f} of {server.total_bytes / GiB:.1f} GiB "
            "(--fit total for the total)"
        )
    return SV.Target(gpu=server, gpus_per_node=1, nodes=1, fit=fit), notes


def engines_for(target: SV.Target, wanted: str | None) -> tuple[list[str], list[str]]:
    """The engines that apply to the target, and why the others do not."""
    vendor = target.gpu.vendor
    gpu_engines_ok = vendor in ("NVIDIA", "AMD")
    if wanted:
        if wanted != "llama.cpp" and not gpu_engines_ok:
            where = "this machine's CPU" if vendor == "cpu" else target.gpu.name
            raise UsageError(
                f"{wanted} serves on NVIDIA or AMD GPUs, not on {where}: use --engine llama.cpp, or --device to plan "
                "for a GPU."
            )
        return [wanted], []
    if gpu_engines_ok:
        return ["vllm", "sglang", "llama.cpp"], []
    return ["llama.cpp"], [
        f"vLLM and SGLang need an NVIDIA or AMD GPU: only llama-server is planned on {target.gpu.name}"
    ]


def check_request(spec: ModelSpec, opts: SV.ServeOptions, engines: list[str]) -> None:
    """One clear line for a request no engine can take as asked: a precision advisor does not know, a 16/8/4-bit
    serving precision asked of llama.cpp alone, or a KV cache type of another engine."""
    from advisor import precision as P

    wanted = opts.precision
    if wanted and wanted not in SV.SERVE_PRECISIONS:
        try:
            runtime = P.get(wanted, spec).runtime
        except (KeyError, ValueError):
            runtime = None
        if runtime != "llama.cpp":
            raise UsageError(
                f"--precision {wanted}: not a serving precision. vLLM and SGLang serve "
                f"{', '.join(SV.SERVE_PRECISIONS)}; llama.cpp serves GGUF types such as q8_0 or q4_k_m."
            )
    if engines == ["llama.cpp"] and wanted in SV.SERVE_PRECISIONS:
        raise UsageError(
            f"llama.cpp serves GGUF types, not {wanted}: give --precision q8_0 or q4_k_m, or --engine vllm."
        )
    if len(engines) == 1 and engines[0] != "llama.cpp" and opts.kv_cache_dtype in ("q8_0", "q4_0"):
        raise UsageError(
            f"--kv-cache-dtype {opts.kv_cache_dtype} is llama.cpp's: {engines[0]} caches in auto (the model's "
            "dtype) or fp8 (fp8_e4m3, fp8_e5m2)."
        )
    if opts.language_model_only:
        if "vllm" not in engines:
            raise UsageError("--language-model-only is vLLM's (0.17+): add --engine vllm, or drop it.")
        if opts.version is not None and opts.version < (0, 17):
            raise UsageError("--language-model-only needs vLLM 0.17 or newer: drop --engine-version or raise it.")
    if engines == ["llama.cpp"] and opts.kv_cache_dtype.startswith("fp8"):
        raise UsageError(
            f"--kv-cache-dtype {opts.kv_cache_dtype} is vLLM's and SGLang's: llama.cpp caches in f16, q8_0 or q4_0."
        )


def serve_plans(
    spec: ModelSpec, target: SV.Target, opts: SV.ServeOptions, engines: list[str]
) -> tuple[list[SV.ServePlan], list[str]]:
    check_request(spec, opts, engines)
    plans: list[SV.ServePlan] = []
    warnings: list[str] = []
    if opts.language_model_only:
        from advisor.costmodel.memory import _breakdown_or_guess

        if not _breakdown_or_guess(spec).towers:
            warnings.append(f"{spec.id} has no vision or audio towers here: --language-model-only changes nothing")
        if len(engines) > 1:
            warnings.append("--language-model-only plans vLLM only: SGLang and llama-server load the towers too")
    errors: list[str] = []
    for engine in engines:
        version = opts.version if engine == "vllm" else None
        engine_opts = dataclasses.replace(opts, engine=engine, version=version)
        if engine == "llama.cpp" and opts.precision and opts.precision in SV.SERVE_PRECISIONS:
            warnings.append(f"llama.cpp runs GGUF types, not {opts.precision}: give a GGUF type such as q4_k_m")
            continue
        if engine != "llama.cpp" and opts.precision and opts.precision not in SV.SERVE_PRECISIONS:
            if len(engines) > 1:
                continue
            raise UsageError(
                f"--precision {opts.precision} is a GGUF type: {engine} serves "
                f"{', '.join(SV.SERVE_PRECISIONS)}; use --engine llama.cpp for GGUF."
            )
        # An 8-bit KV cache asked of every engine: each gets its own 8-bit type.
        if len(engines) > 1 and engine == "llama.cpp" and opts.kv_cache_dtype.startswith("fp8"):
            engine_opts = dataclasses.replace(engine_opts, kv_cache_dtype="q8_0")
        elif len(engines) > 1 and engine != "llama.cpp" and opts.kv_cache_dtype in ("q8_0", "q4_0", "f16"):
            kv = "fp8" if opts.kv_cache_dtype != "f16" else "auto"
            engine_opts = dataclasses.replace(engine_opts, kv_cache_dtype=kv)
        try:
            found, warn = SV.plan_serving(spec, target, engine_opts)
        except SV.ServePlanError as exc:
            errors.append(str(exc))
            warnings.append(f"{engine}: {exc}")
            continue
        plans.extend(found)
        warnings.extend(warn)
    if errors and not plans:  # every engine refused the request: it is the request that is wrong
        raise UsageError(errors[0])
    plans.sort(key=lambda p: (not p.fits, -p.quality_rank, p.gpus, -(p.aggregate_tok_s or 0), -p.max_concurrency))
    return plans, warnings


# NOTE: quality points a pick may give up for fewer GPUs or more throughput: FP8 (97) against bf16 (100) is the
# difference the vLLM and SGLang docs call near-lossless; AWQ/GPTQ (68-70) and GGUF's 4-bit types are not inside it.
PICK_QUALITY_SLACK = 3


def pick(plans: list[SV.ServePlan]) -> SV.ServePlan | None:
    """The plan to start with: one that fits, within PICK_QUALITY_SLACK of the best quality that fits, on the
    fewest GPUs, then the most tokens/s in aggregate at the load asked, then the most concurrent requests."""
    fitting = [p for p in plans if p.fits]
    if not fitting:
        return None
    best = max(p.quality_rank for p in fitting)
    near = [p for p in fitting if p.quality_rank >= best - PICK_QUALITY_SLACK]
    return min(near, key=lambda p: (p.gpus, -(p.aggregate_tok_s or 0), -p.max_concurrency))


def pick_reason(chosen: SV.ServePlan, plans: list[SV.ServePlan]) -> str:
    """Why `pick` chose this plan over the best-quality one that fits, in a few words."""
    fitting = [p for p in plans if p.fits]
    best = max(fitting, key=lambda p: (p.quality_rank, -p.gpus, p.aggregate_tok_s or 0))
    if best is chosen or best.quality_rank == chosen.quality_rank:
        return "the best quality that fits, then the fewest devices and the most tokens/s"
    if chosen.gpus < best.gpus:
        why = f"{chosen.gpus} GPU(s) instead of {best.gpus}"
    else:
        ratio = (chosen.aggregate_tok_s or 0) / (best.aggregate_tok_s or 1)
        why = (
            f"{ratio:.1f}x the tokens/s"
            if ratio > 1.05
            else f"{chosen.max_concurrency:.0f} requests, not {best.max_concurrency:.0f}"
        )
    return f"{why} of {best.engine} {best.precision}, within {PICK_QUALITY_SLACK} quality points of it"


def model_json(spec: ModelSpec) -> dict[str, Any]:
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2.0)
    return {
        "id": spec.id,
        "source": spec.source,
        "exact": spec.exact,
        "total_params": spec.total_params,
        "active_params": spec.active_params,
        "num_layers": spec.num_layers,
        "num_kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "max_context": spec.max_context,
        "kv_bytes_per_token_16bit": int(kvr.bytes_per_token),
        "mla": kvr.mla,
        "quantization": spec.quantization,
    }


def scale_out(spec: ModelSpec, device: str | None, *, context: int, users: int = 1) -> dict[str, Any]:
    """What `recommend` shows when nothing fits here: vLLM plans on table GPUs (this planner, one answer)."""
    from advisor.accelerators import lookup, parse_device_arg

    name = device or "8x H100 SXM5"
    count, gpu_name = parse_device_arg(name)
    acc = lookup(gpu_name)
    gpu = gpu_from_accelerator(acc)
    per_node = count if device and count > 1 else 8
    found: dict[str, SV.ServePlan] = {}
    warnings: list[str] = []
    for nodes in (1, 2, 4, 8):  # each precision on the fewest nodes that hold it
        target = SV.Target(gpu=gpu, gpus_per_node=per_node, nodes=nodes, fit="total")
        opts = SV.ServeOptions(engine="vllm", context=context, users=users)
        try:
            plans, _ = SV.plan_serving(spec, target, opts)
        except SV.ServePlanError as exc:
            warnings = [str(exc)]
            break
        for plan in plans:
            if plan.fits and plan.precision not in found:
                found[plan.precision] = plan
        if len(found) == len(SV.default_precisions(spec, gpu, "vllm")):
            break
    note = f"vLLM on {per_node}x {acc.name} a node"
    if not device:
        note += "; no --device given, so planned on 8x H100 SXM5 80GB nodes"
    return {
        "device": acc.name,
        "plans": [p.to_json() for p in found.values()],
        "warnings": warnings,
        "note": note,
    }
