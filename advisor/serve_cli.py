"""`advisor serve-plan`: a thin command over advisor.serve and advisor.costmodel.serving."""

from __future__ import annotations

import click

from advisor.cli import FiniteFloat, _consoles, _hardware, cli, fit_option, json_option, revision_option, trust_option
from advisor.errors import UsageError

ENGINE_CHOICES = ("vllm", "sglang", "llama.cpp")
KV_CHOICES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "f16", "q8_0", "q4_0")


def _users(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"{value}: a server needs at least 1 user; give --users 1 or more.")
    return value


@cli.command("serve-plan")
@click.argument("model")
@click.option("--device", default=None, help="Plan for table hardware: '2x RTX 4090', '8x H100 SXM5'. Default: here.")
@click.option("--nodes", type=click.IntRange(1, 64), default=1, show_default=True, help="Nodes of --device.")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default=None, help="Default: every engine that applies.")
@click.option(
    "--precision",
    default=None,
    help="bf16, fp16, fp8, awq, gptq, int8 (vLLM/SGLang) or a GGUF type (llama.cpp). Default: several.",
)
@click.option("--kv-cache-dtype", type=click.Choice(KV_CHOICES), default="auto", show_default=True)
@click.option("--tensor-parallel", type=click.IntRange(1, 64), default=None, help="Default: smallest that fits.")
@click.option("--pipeline-parallel", type=click.IntRange(1, 64), default=None, help="Default: smallest that fits.")
@click.option(
    "--gpu-memory-utilization",
    type=FiniteFloat(0.05, 1.0),
    default=None,
    help="vLLM's (SGLang: --mem-fraction-static). Default: the engine's own.",
)
@click.option("--context", type=click.IntRange(1, 10_000_000), default=None, help="Tokens per request.")
@click.option("--users", type=int, default=None, callback=_users, help="Concurrent requests wanted.")
@click.option(
    "--prompt-tokens", type=click.IntRange(1, 10_000_000), default=1024, show_default=True, help="Prompt for TTFT."
)
@click.option(
    "--language-model-only", is_flag=True, help="vLLM: a multimodal model's text part only (its towers unloaded)."
)
@click.option("--enforce-eager", is_flag=True, help="vLLM/SGLang without CUDA graphs: more KV cache, slower decode.")
@click.option("--engine-version", default=None, help="Price an older vLLM or SGLang, e.g. 0.11.0. Default: newest.")
@click.option(
    "--memory-gb", type=FiniteFloat(0.1, 1e6), default=None, help="Memory of each --device GPU as sold (binary GB)."
)
@fit_option
@revision_option
@trust_option
@json_option
def serve_plan(
    model,
    device,
    nodes,
    engine,
    precision,
    kv_cache_dtype,
    tensor_parallel,
    pipeline_parallel,
    gpu_memory_utilization,
    context,
    users,
    prompt_tokens,
    language_model_only,
    enforce_eager,
    engine_version,
    memory_gb,
    fit,
    revision,
    trust_remote_code,
    as_json,
) -> None:
    """Plan serving MODEL to many users: engine, precision, GPUs, KV pool, concurrency, throughput, command."""
    from advisor import render_serve
    from advisor import serve as S
    from advisor.costmodel import serving as SV
    from advisor.sources import resolve

    out, err = _consoles()
    if memory_gb is not None and not device:
        raise UsageError("--memory-gb describes --device GPUs: give --device too.")
    spec = resolve(model, revision=revision, trust_remote_code=trust_remote_code)
    hw = None if device else _hardware(None, None, None, fit=fit)
    target, notes = S.target_from_args(device, nodes=nodes, memory_gb=memory_gb, fit=fit, hw=hw)
    engines, skipped = S.engines_for(target, engine)
    try:
        version = SV.parse_version(engine_version, engine or "vllm") if engine_version else None
    except SV.ServePlanError as exc:
        raise UsageError(str(exc)) from None
    precision = precision.lower() if precision else None
    if context and prompt_tokens > context:
        if click.get_current_context().get_parameter_source("prompt_tokens") == click.core.ParameterSource.DEFAULT:
            prompt_tokens = context  # the default prompt is longer than the request: time the whole request
        else:
            raise UsageError(
                f"--prompt-tokens {prompt_tokens:,} is longer than --context {context:,}: a prompt must fit its "
                "request; give a shorter prompt or a longer context."
            )
    opts = SV.ServeOptions(
        precision=precision,
        kv_cache_dtype=kv_cache_dtype,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        gpu_memory_utilization=gpu_memory_utilization,
        context=context,
        users=users,
        prompt_tokens=prompt_tokens,
        version=version,
        enforce_eager=enforce_eager,
        language_model_only=language_model_only,
    )
    plans, warnings = S.serve_plans(spec, target, opts, engines)
    warnings = notes + skipped + warnings
    if as_json:
        render_serve.print_serve_json(spec, plans, warnings, out)
        return
    render_serve.print_serve_plans(spec, target, plans, warnings, out, err, users=users)
