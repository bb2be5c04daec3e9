"""Rich tables and JSON for the results. Computes nothing: every figure arrives ready."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from advisor.spec import ModelSpec, Option, Recommendation
from advisor.textutil import clean, shorten

GB = 1e9


class SafeConsole(Console):
    """A rich Console that echoes text from files and the Hub safely: no markup is interpreted (a model id like
    "[link=...]x" prints as it is) and every string it renders loses its control characters and terminal escape
    sequences first (a config's `model_type` cannot retitle the terminal or clear the screen). Styled text is
    built as `Text` objects (see `styled`), never as markup."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        return super().render_str(clean(text), **kwargs)


def styled(text: Any, style: str = "") -> Text:
    """`text` cleaned of control characters, as a Text in `style` (never parsed as markup)."""
    return Text(clean(str(text)), style=style)


def consoles(width_env: str = "COLUMNS") -> tuple[Console, Console]:
    """stdout and stderr consoles. Piped output keeps whole table rows (rich would fold them at 80 columns)."""
    import os
    import sys

    width = None if sys.stdout.isatty() else int(os.environ.get(width_env, "200") or 200)
    return SafeConsole(width=width), SafeConsole(stderr=True, width=None if sys.stderr.isatty() else 200)


def gb(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / GB:.2f}" if n < 10 * GB else f"{n / GB:.1f}"


def params(n: int | None) -> str:
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.1f}M"


def tok_s(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def seconds(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"


def context(n: int) -> str:
    return f"{n:,}" if n else "none"


def print_json(data: Any, console: Console) -> None:
    console.print_json(json.dumps(data, default=str))


def model_summary(spec: ModelSpec) -> Text:
    text = Text()
    text.append(clean(spec.id), style="bold")
    text.append(f"  ({spec.source}{'' if spec.exact else ', estimated'})\n", style="dim")
    line = f"{params(spec.total_params)} parameters"
    if spec.active_params != spec.total_params:
        line += f", {params(spec.active_params)} active per token"
        if spec.num_experts:
            line += f" ({spec.experts_per_token} of {spec.num_experts} experts)"
    if spec.exact:
        line += f" = {spec.total_params:,}"
    text.append(line + "\n")
    shape = []
    if spec.num_layers:
        shape.append(f"{spec.num_layers} layers")
    if spec.hidden_size:
        shape.append(f"hidden {spec.hidden_size}")
    if spec.num_attention_heads:
        shape.append(f"{spec.num_attention_heads} heads / {spec.num_kv_heads} KV heads x {spec.head_dim}")
    if spec.vocab_size:
        shape.append(f"vocab {spec.vocab_size:,}")
    if spec.max_context:
        shape.append(f"context {spec.max_context:,}")
    if spec.sliding_window_layers:
        shape.append(f"{spec.sliding_window_layers} sliding-window layers ({spec.sliding_window})")
    if spec.kv_lora_rank:
        shape.append(f"MLA latent {spec.kv_lora_rank}")
    if spec.native_dtype:
        shape.append(str(spec.native_dtype))
    if spec.quantization:
        shape.append(f"checkpoint: {spec.quantization}")
    if shape:
        text.append(clean(", ".join(shape)), style="dim")
    return text


def options_table(rec: Recommendation) -> Table:
    table = Table(title=None, show_lines=False, header_style="bold")
    for col, justify in (
        ("precision", "left"),
        ("runtime", "left"),
        ("placement", "left"),
        ("weights GB", "right"),
        ("KV GB", "right"),
        ("overhead GB", "right"),
        ("total GB", "right"),
        ("fits", "center"),
        ("max context", "right"),
        ("decode tok/s", "right"),
        ("TTFT", "right"),
    ):
        table.add_column(col, justify=justify)
    for opt in rec.options:
        style = "bold green" if opt is rec.recommended else ("" if opt.fits else "dim")
        sp = opt.speed
        decode = "-"
        if sp is not None and sp.decode_tok_s > 0:
            decode = f"{tok_s(sp.decode_tok_s)} ({tok_s(sp.decode_tok_s_low)}-{tok_s(sp.decode_tok_s_high)})"
        table.add_row(
            ("* " if opt is rec.recommended else "") + opt.precision,
            opt.runtime,
            opt.placement,
            gb(opt.memory.weights_bytes),
            gb(opt.memory.kv_cache_bytes),
            gb(opt.memory.overhead_bytes),
            gb(opt.memory.total_bytes),
            "yes" if opt.fits else "no",
            context(opt.max_context)
            + (f" ({context(opt.max_context_offload)} offloaded)" if opt.max_context_offload else ""),
            decode,
            seconds(sp.ttft_s) if sp else "-",
            style=style,
        )
    return table


def hardware_line(rec: Recommendation) -> str:
    parts = []
    for d in rec.hardware.devices:
        bw = f"{d.bandwidth_gbps:.0f} GB/s ({d.bandwidth_source})" if d.bandwidth_gbps else "bandwidth unknown"
        parts.append(f"{d.label} {d.name}: {d.memory_bytes / GB:.1f} GB, {bw}")
    return "; ".join(parts)


def basis_line(opt: Option) -> str:
    sp = opt.speed
    if sp is None:
        return ""
    devs = sp.basis.get("devices", {})
    bits = []
    for label, info in devs.items():
        if "efficiency" in info and "bandwidth_gbps" in info:
            bits.append(
                f"{label}: {info['bytes'] / GB:.2f} GB/token at {info['bandwidth_gbps']:.0f} GB/s "
                f"({info.get('bandwidth_source', '?')}) x {info['efficiency']:.2f} efficiency"
            )
        elif "via" in info:
            bits.append(f"{label}: {info['bytes'] / GB:.2f} GB/token over {info['via']} at {info['gbps']:.0f} GB/s")
    cal = "calibrated on this machine" if sp.basis.get("calibrated") else "uncalibrated defaults"
    return f"basis: {'; '.join(bits)}; {cal}; range {sp.basis.get('range')}"


def print_recommendation(rec: Recommendation, console: Console, err: Console) -> None:
    console.print(model_summary(rec.model))
    console.print(styled(f"hardware: {hardware_line(rec)}", "dim"))
    console.print(options_table(rec))
    if rec.recommended is not None:
        console.print(
            styled(
                f"Recommended: {rec.recommended.precision} ({rec.recommended.runtime}, {rec.recommended.placement})",
                "bold green",
            )
        )
        console.print(f"Why: {rec.reason}.")
        line = basis_line(rec.recommended)
        if line:
            console.print(styled(line, "dim"))
        for note in rec.recommended.notes:
            console.print(styled(f"note: {note}", "yellow"))
        r = rec.recommended
        if r.max_context_offload:
            console.print(
                styled(
                    f"Context: up to {r.max_context:,} tokens on {r.placement}; {r.max_context_offload:,} with layers "
                    f"offloaded ({r.offload_placement}) at ~{tok_s(r.offload_decode_tok_s)} tok/s.",
                    "dim",
                )
            )
    else:
        console.print(styled(f"No recommendation: {rec.reason}.", "bold red"))
    for warning in rec.warnings:
        err.print(styled(f"warning: {warning}", "yellow"))


def print_ranking(rows, console: Console, *, as_json: bool = False, title: str = "") -> None:
    if as_json:
        print_json({"title": title, "models": [r.to_json() for r in rows]}, console)
        return
    if not rows:
        console.print(f"{title}: none.")
        return
    ranked = any(getattr(r, "quality_basis", "") for r in rows)
    table = Table(title=title, header_style="bold")
    columns = [("#", "right"), ("model", "left"), ("params", "right"), ("active", "right")]
    if ranked:
        columns += [("quality", "right"), ("from", "left")]
    columns += [("best option", "left"), ("total GB", "right"), ("decode tok/s", "right"), ("max context", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for i, r in enumerate(rows, 1):
        if r.error:
            table.add_row(str(i), r.model, "-", "-", *(["-", "-"] if ranked else []), styled(r.error, "red"), "-", "-",
                          "-")  # fmt: skip
            continue
        b = r.best
        cells = [str(i), r.model, params(r.total_params), params(r.active_params)]
        if ranked:
            basis = r.quality_basis if r.quality is None or r.quality_basis.startswith("general") else ""
            source = (r.quality_sources[0] if r.quality_sources else "") + (f"; {basis}" if basis else "")
            cells += [f"{r.quality:.0f}" if r.quality is not None else "no score", shorten(source, 60)]
        cells += [
            f"{b.precision} ({b.runtime}) on {b.placement}" if b else "does not fit",
            gb(b.memory.total_bytes) if b else "-",
            tok_s(b.speed.decode_tok_s) if b and b.speed else "-",
            context(b.max_context) if b else "-",
        ]
        table.add_row(*cells)
    console.print(table)
    if ranked:
        console.print(
            styled(
                "quality: LMArena-scale points for the purpose (other evaluations mapped onto it; sources in "
                "data/SOURCES.md), less what the precision costs (llama.cpp KL divergence); --json lists every source",
                "dim",
            )
        )
        for i, r in enumerate(rows, 1):
            console.print(styled(f"{i}. {r.reason}", "dim"))


def print_extras(extra: dict[str, Any], console: Console) -> None:
    assisted = extra.get("assisted")
    if assisted:
        if "error" in assisted:
            console.print(f"Assisted generation: {assisted['error']}.")
        else:
            verdict = "helps" if assisted["helps"] else "does not help"
            console.print(
                f"Assisted generation with {assisted['draft']} ({assisted['draft_precision']}): {verdict}: "
                f"~{assisted['tok_s']:.1f} tok/s vs {assisted['plain_tok_s']:.1f} plain "
                f"(x{assisted['speedup']:.2f}; {assisted['tokens_per_target_pass']:.2f} tokens per target pass at "
                f"acceptance {assisted['acceptance']:.0%}, lookahead {assisted['lookahead']}"
                + (
                    f"; verifying reads {assisted['experts_read_fraction_verify']:.0%} of the experts"
                    if assisted["experts_read_fraction_verify"] < 1
                    else ""
                )
                + ")."
            )
            if assisted.get("warning"):
                console.print(styled(f"note: {assisted['warning']}", "yellow"))
    scale = extra.get("scale_out")
    if scale:
        console.print(styled(f"Too big for this hardware. What would serve it ({scale['note']}):", "bold"))
        if not scale["plans"]:
            console.print(f"Even 8 nodes of {scale['device']} would not hold it.")
        for p in scale["plans"]:
            where = f"{p['gpus']}x {scale['device']}" + (f" on {p['nodes']} nodes" if p["nodes"] > 1 else "")
            console.print(
                styled(
                    f"Scale out ({p['precision']}): {where} (TP {p['tensor_parallel']}, PP {p['pipeline_parallel']}), "
                    f"{p['weights_bytes_per_gpu'] / 2**30:.1f} GiB of weights a GPU, a KV pool of "
                    f"{p['kv_cache_tokens']:,} tokens: `{p['command']}` "
                    "(estimate; `advisor serve-plan` for the full plan)"
                )
            )


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 1e6:,.1f} MB"
    if unit == "s":
        return seconds(value)
    return tok_s(value)


def bench_row_table(row) -> Table:
    table = Table(
        title=f"{row.precision} ({row.runtime}) on {row.placement} (load {row.load_s:.1f} s)"
        if row.load_s
        else f"{row.precision} ({row.runtime})",
        header_style="bold",
        title_justify="left",
    )
    for col, justify in (
        ("figure", "left"),
        ("measured", "right"),
        ("estimated", "right"),
        ("ratio", "right"),
        ("spread", "right"),
    ):
        table.add_column(col, justify=justify)
    for c in row.comparisons:
        ratio = c.ratio
        style = (
            "" if ratio is None else ("green" if 0.85 <= ratio <= 1.15 else "yellow" if 0.65 <= ratio <= 1.5 else "red")
        )
        table.add_row(
            c.name,
            _fmt_value(c.measured, c.unit),
            _fmt_value(c.estimated, c.unit),
            Text(f"{ratio:.2f}", style=style) if ratio is not None else "-",
            f"{c.spread:.0%}" if c.spread is not None else "-",
        )
    if row.perplexity is not None:
        rel = f" (x{row.perplexity_ratio:.3f} of the best)" if row.perplexity_ratio else ""
        table.caption = f"perplexity on the built-in text: {row.perplexity:.2f}{rel}"
    return table


def print_bench_row(row, console: Console) -> None:
    if row.status != "ok":
        console.print(styled(f"{row.precision} ({row.runtime}): {row.status}: {row.message}", "yellow"))
        return
    console.print(bench_row_table(row))


def print_bench_summary(report, console: Console) -> None:
    table = Table(title=f"advisor bench: {report.model} ({report.source})", header_style="bold", title_justify="left")
    for col, justify in (
        ("precision", "left"),
        ("status", "left"),
        ("weights MB", "right"),
        ("peak MB", "right"),
        ("decode tok/s", "right"),
        ("est. tok/s", "right"),
        ("TTFT", "right"),
        ("perplexity", "right"),
    ):
        table.add_column(col, justify=justify)
    for r in report.rows:
        w = r.get("weights")
        peak = r.get("peak_memory")
        decodes = [c for c in r.comparisons if c.name.startswith("decode@")]
        dec = decodes[len(decodes) // 2] if decodes else None
        ttfts = [c for c in r.comparisons if c.name.startswith("ttft@")]
        ttft = ttfts[-1] if ttfts else None
        table.add_row(
            r.precision,
            r.status if r.status == "ok" else styled(r.status, "yellow"),
            f"{w.measured / 1e6:,.1f}" if w else "-",
            f"{peak.measured / 1e6:,.0f}" if peak else "-",
            f"{tok_s(dec.measured)} @{dec.name.split('@')[1]}" if dec else "-",
            tok_s(dec.estimated) if dec else "-",
            f"{seconds(ttft.measured)} @{ttft.name.split('@')[1]}" if ttft else "-",
            f"{r.perplexity:.2f}" if r.perplexity else "-",
        )
    console.print(table)
    if report.interrupted:
        console.print(styled("Interrupted: the rows above were measured before Ctrl-C.", "yellow"))
    if report.calibrated_runs:
        console.print(
            Text(
                f"Recorded; {report.calibrated_runs} runs now calibrate this machine's estimates "
                "(`advisor calibration show`).",
                style="dim",
            )
        )
