"""Tables and JSON for `advisor serve-plan`. Computes nothing: every figure arrives in the plans."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from advisor.render import print_json, seconds, styled, tok_s
from advisor.spec import ModelSpec

GiB = 1024**3
BAR = 20

JSON_FIELDS = (
    "engine",
    "precision",
    "kv_cache_dtype",
    "gpus",
    "nodes",
    "tensor_parallel",
    "pipeline_parallel",
    "gpu_memory_utilization",
    "context",
    "weights_bytes_per_gpu",
    "kv_cache_bytes_per_gpu",
    "kv_cache_tokens",
    "max_concurrency",
    "decode_tok_s_per_user",
    "aggregate_tok_s",
    "ttft_s",
    "command",
    "notes",
)


def plan_json(plan) -> dict[str, Any]:
    """The documented fields first (scripts rely on them), then the detail."""
    data = plan.to_json()
    out = {k: data[k] for k in JSON_FIELDS}
    out.update({k: v for k, v in data.items() if k not in out})
    return out


def print_serve_json(spec: ModelSpec, plans, warnings: list[str], console: Console) -> None:
    from advisor.serve import model_json, pick, pick_reason

    chosen = pick(plans)
    data = {
        "model": model_json(spec),
        "plans": [plan_json(p) for p in plans],
        "pick": plans.index(chosen) if chosen else None,
        "pick_reason": pick_reason(chosen, plans) if chosen else None,
        "warnings": warnings,
    }
    print_json(data, console)


def memory_bar(plan) -> str:
    """Per-GPU memory as a bar: W weights, K KV cache, o the engine's other memory, . free."""
    total = max(plan.gpu_bytes, 1)
    w = round(BAR * plan.weights_bytes_per_gpu / total)
    k = round(BAR * plan.kv_cache_bytes_per_gpu / total)
    o = round(BAR * plan.other_bytes_per_gpu / total)
    w, k, o = (min(x, BAR) for x in (w, k, o))
    free = max(BAR - w - k - o, 0)
    return "W" * w + "K" * k + "o" * min(o, BAR - w - k) + "." * free


def _gib(n: float) -> str:
    return f"{n / GiB:.1f}"


def print_serve_plans(
    spec: ModelSpec, target, plans, warnings: list[str], out: Console, err: Console, *, users: int | None = None
) -> None:
    from advisor.serve import pick, pick_reason

    gpu = target.gpu
    cpu = gpu.vendor == "cpu"
    where = f"{target.gpus_per_node}x {gpu.name}" + (f" x {target.nodes} nodes" if target.nodes > 1 else "")
    size = f"{_gib(gpu.total_bytes)} GiB of RAM" if cpu else f"{_gib(gpu.total_bytes)} GiB each"
    out.print(styled(f"Serving {spec.id} on {'this CPU, ' + gpu.name if cpu else where} ({size})", "bold"))
    if not plans:
        out.print(styled("No plan fits: more GPUs (--device 'Nx ...', --nodes), a shorter --context, or 4-bit.", "red"))
    else:
        table = Table(header_style="bold")
        columns = (
            "engine", "precision", "GPUs", "TP x PP", "per GPU: W weights K KV o other", "KV tokens",
            "requests @ ctx", "tok/s/user", "tok/s total", "TTFT",
        )  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col in ("engine", "precision", columns[4]) else "right")
        for plan in plans:
            bar = f"{memory_bar(plan)} {_gib(plan.weights_bytes_per_gpu)}+{_gib(plan.kv_cache_bytes_per_gpu)}"
            bar += f"+{_gib(plan.other_bytes_per_gpu)} GiB"
            style = "" if plan.fits else "dim"
            table.add_row(
                styled(plan.engine, style),
                styled(plan.precision + (f" kv {plan.kv_cache_dtype}" if plan.kv_cache_dtype != "auto" else ""), style),
                f"{plan.gpus}" + (f" ({plan.nodes} nodes)" if plan.nodes > 1 else ""),
                f"{plan.tensor_parallel} x {plan.pipeline_parallel}",
                bar,
                f"{plan.kv_cache_tokens:,}",
                f"{plan.max_concurrency:,.1f} @ {plan.context:,}",
                tok_s(plan.decode_tok_s_per_user),
                tok_s(plan.aggregate_tok_s),
                seconds(plan.ttft_s),
            )
        out.print(table)
        out.print(
            styled(
                f"tok/s and TTFT with {users or 1} user(s) (--users), each request up to {plans[0].context:,} tokens, "
                "half full on average; estimates from a roofline over datasheet bandwidth and tensor throughput.",
                "dim",
            )
        )
        chosen = pick(plans)
        if chosen is not None:
            out.print(
                styled(
                    f"Pick: {chosen.engine} {chosen.precision} on " + ("the CPU" if cpu else f"{chosen.gpus} GPU(s)"),
                    "bold green",
                ),
                styled(f"({pick_reason(chosen, plans)})", "dim"),
            )
            _print_plan_detail(chosen, out)
        for plan in plans:
            if plan is chosen:
                continue
            out.print(styled(f"{plan.engine} {plan.precision}: ", "bold"), styled(plan.command))
            for note in plan.notes:
                out.print(styled(f"  note: {note}", "yellow"))
    for warning in warnings:
        err.print(styled(f"note: {warning}", "yellow"))


def _print_plan_detail(plan, out: Console) -> None:
    if plan.steps:
        for i, step in enumerate(plan.steps, 1):
            out.print(styled(f"  {i}. {step}"))
    else:
        out.print(styled(f"  {plan.command}"))
    for note in plan.notes:
        out.print(styled(f"  note: {note}", "yellow"))
    table = Table(header_style="bold", title="Under load", title_justify="left")
    for col in ("users", "tok/s per user", "tok/s total", "TTFT", "bound by"):
        table.add_column(col, justify="right")
    for row in plan.load:
        table.add_row(
            str(row["users"]),
            tok_s(row["decode_tok_s_per_user"]),
            tok_s(row["aggregate_tok_s"]),
            seconds(row["ttft_s"]),
            row["bound"],
        )
    out.print(table)
    if plan.compute_bound_batch:
        out.print(
            styled(
                f"  the weight matmuls turn compute-bound from a batch of ~{plan.compute_bound_batch}; attention over "
                "the KV cache stays memory-bound",
                "dim",
            )
        )
    mem = plan.memory
    if plan.engine == "vllm":
        out.print(
            styled(
                f"  vLLM {mem['engine_version']}: {_gib(mem['requested_bytes'])} GiB requested "
                f"({mem['gpu_memory_utilization']:.2f} x {_gib(mem['total_bytes'])}) - weights "
                f"{_gib(mem['weights_bytes'])} - activations {_gib(mem['activation_bytes'])} - non-torch "
                f"{_gib(mem['non_torch_bytes'])}"
                + (f" - CUDA graphs {_gib(mem['cudagraph_bytes'])}" if mem["cudagraph_in_budget"] else "")
                + f" = {_gib(mem['available_kv_bytes'])} GiB of KV: {mem['num_blocks']:,} blocks of "
                f"{mem['block_size']} tokens",
                "dim",
            )
        )
