"""`advisor bench` and `advisor calibration`: thin commands over advisor.bench and advisor.calibration."""

from __future__ import annotations

import sys

import click

from advisor.cli import (
    PrecisionType,
    _consoles,
    cli,
    gpu_layers_option,
    json_option,
    revision_option,
    runtime_option,
    trust_option,
)


def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of token counts", param_hint=name) from None
    if not values or any(v < 1 or v > 1_000_000 for v in values):
        raise click.BadParameter(f"'{text}' needs token counts between 1 and 1000000", param_hint=name)
    return values


@cli.command()
@click.argument("model", required=False)
@click.option(
    "--precision",
    "-p",
    "precisions",
    type=PrecisionType(),
    multiple=True,
    help="Precision(s) to measure; 'all' sweeps every one that fits. Default: the recommended one.",
)
@click.option("--prompt-lengths", default="32,128,512", show_default=True, help="Prompt lengths for prefill and TTFT.")
@click.option("--depths", default="64,512,1024", show_default=True, help="Context depths for decode speed.")
@click.option(
    "--new-tokens", type=click.IntRange(2, 4096), default=32, show_default=True, help="Tokens per decode run."
)
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True, help="Repetitions per figure.")
@click.option(
    "--quality", is_flag=True, help="Also measure perplexity on a built-in text, relative to the best precision."
)
@runtime_option("Measure this runtime only (default: the recommended option's, or both with --precision all).")
@click.option(
    "--device-map", default=None, help="transformers device_map (cpu, auto, cuda:0 ...). Default: the best here."
)
@gpu_layers_option
@click.option(
    "--kv-cache-type",
    type=click.Choice(["f16", "q8_0", "q4_0"]),
    default=None,
    help="llama.cpp: the KV cache's element type (quantized types turn flash attention on).",
)
@click.option("--flash-attn/--no-flash-attn", default=None, help="llama.cpp: flash attention on or off.")
@click.option("--max-memory", default=None, help="Per-device limits for device_map=auto, e.g. '0=20GiB,cpu=60GiB'.")
@click.option("--no-record", is_flag=True, help="Do not store this run in the calibration store.")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickled (*.bin) weights from a trusted source.")
@revision_option
@trust_option
@json_option
def bench(
    model,
    precisions,
    prompt_lengths,
    depths,
    new_tokens,
    repeats,
    quality,
    runtime,
    device_map,
    gpu_layers,
    kv_cache_type,
    flash_attn,
    max_memory,
    no_record,
    allow_pickle,
    revision,
    trust_remote_code,
    as_json,
) -> None:
    """Load MODEL (default: the embedded SmolLM2-135M-Instruct), measure it, and compare with the estimate."""
    from advisor import hardware, render, session
    from advisor.bench import Plan, run_bench
    from advisor.render import styled

    out, err = _consoles()
    plan = Plan(
        prompt_lengths=_int_list(prompt_lengths, "--prompt-lengths"),
        depths=_int_list(depths, "--depths"),
        new_tokens=new_tokens,
        repeats=repeats,
    )
    memory = _parse_max_memory(max_memory) if max_memory else None
    # the model first: a misspelled id or a missing file is told at once, not after a first run's hardware probe
    spec = session.resolve_model(model, revision=revision, trust_remote_code=trust_remote_code)
    hw = hardware.load_or_probe()
    status = err.status("starting") if err.is_terminal and not as_json else None
    if status:
        status.start()

    def progress(msg: str) -> None:
        if status:
            status.update(msg)
        elif not as_json:
            err.print(styled(msg, "dim"))

    def on_row(row) -> None:
        if not as_json:
            if status:
                status.stop()
            render.print_bench_row(row, out)
            if status:
                status.start()

    try:
        report = run_bench(
            model,
            list(precisions) or None,
            hw=hw,
            plan=plan,
            record=not no_record,
            quality=quality,
            runtime=runtime,
            device_map=device_map,
            gpu_layers=gpu_layers,
            kv_cache_type=kv_cache_type,
            flash_attn=flash_attn,
            max_memory=memory,
            revision=revision,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            progress=progress,
            on_row=on_row,
            spec=spec,
        )
    finally:
        if status:
            status.stop()
    if as_json:
        render.print_json(report.to_json(), out)
    else:
        render.print_bench_summary(report, out)
    for w in report.warnings:
        err.print(styled(f"warning: {w}", "yellow"))
    if report.interrupted:
        sys.exit(130)
    if not any(r.status == "ok" for r in report.rows):
        from advisor.errors import AdvisorError

        raise AdvisorError(
            "Nothing was measured: no option asked for could run here (see the rows above); "
            "`advisor recommend` lists the options that fit."
        )


def _parse_max_memory(text: str) -> dict:
    limits = {}
    for part in text.split(","):
        if "=" not in part:
            raise click.BadParameter(f"'{part}' is not DEVICE=SIZE (e.g. 0=20GiB)", param_hint="--max-memory")
        key, value = part.split("=", 1)
        key = key.strip()
        limits[int(key) if key.isdigit() else key] = value.strip()
    return limits


@cli.group()
def calibration() -> None:
    """Show or clear the calibration store (bench runs that tune this machine's estimates)."""


@calibration.command("show")
@json_option
def calibration_show(as_json) -> None:
    """List stored bench runs and the efficiencies fitted from them."""
    from advisor import calibration as C
    from advisor import hardware, render
    from advisor.render import styled

    out, err = _consoles()
    hw = hardware.load_or_probe()
    warnings: list[str] = []
    rows = C.runs(warnings=warnings)
    fitted = C.load_for(hw)
    if as_json:
        render.print_json(
            {
                "runs": [r.__dict__ for r in rows],
                "fitted": {"step_scale": {"/".join(k): v for k, v in fitted.scale.items()}},
                "store": str(C.db_path()),
            },
            out,
        )
        return
    from rich.table import Table

    table = Table(title=f"calibration store: {C.db_path()}", header_style="bold", title_justify="left")
    for col in ("id", "when", "model", "precision", "placement", "measured tok/s", "estimated tok/s", "this machine"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.id),
            r.created_at or "",
            r.model,
            r.precision,
            r.placement,
            f"{r.measured_tok_s:.1f}",
            f"{r.estimated_tok_s:.1f}" if r.estimated_tok_s else "-",
            "yes" if r.fingerprint == hw.fingerprint else "no",
        )
    out.print(table)
    for key, value in fitted.scale.items():
        out.print(f"measured / estimated time per token, {'/'.join(key)}: {value:.3f} (later estimates scale by it)")
    for w in warnings:
        err.print(styled(f"warning: {w}", "yellow"))


@calibration.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def calibration_clear(yes) -> None:
    """Delete every stored bench run."""
    from advisor import calibration as C

    if not yes:
        click.confirm(f"Delete every run in {C.db_path()}?", abort=True)
    n = C.clear()
    click.echo(f"deleted {n} runs")
