"""The `advisor` command line. Commands parse, call one library function, and render.

This is the one place errors become exit codes: an AdvisorError prints one line naming the
input and the next step; anything unexpected prints one line too, with the traceback only when
ADVISOR_DEBUG is set.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any

import click

from advisor import __version__
from advisor.errors import AdvisorError, UsageError
from advisor.textutil import first_line, one_line, safe

DEBUG_ENV = "ADVISOR_DEBUG"


def _consoles():
    from advisor.render import consoles

    return consoles()


class PrecisionType(click.ParamType):
    """A precision name from advisor.precision's table, or 'all'."""

    name = "precision"

    def convert(self, value: Any, param, ctx) -> str:
        from advisor import precision as P

        text = str(value).lower()
        if text == "all" or text in P.PRECISIONS or text in (P.GGUF_FILE, P.CHECKPOINT):
            return text
        if text.startswith(P.GGUF_PREFIX) and text.endswith(".gguf"):
            return str(value)
        self.fail(
            f"unknown precision '{value}': choose from {', '.join(P.names())}, {P.GGUF_FILE}, {P.CHECKPOINT} or all",
            param,
            ctx,
        )


class ContextLength(click.ParamType):
    """A token count: 32768, 32k, 128K, 1m."""

    name = "tokens"

    def convert(self, value: Any, param, ctx) -> int:
        text = str(value).strip().lower().replace(",", "").replace("_", "")
        scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
        number = text[:-1] if scale > 1 else text
        try:
            tokens = int(float(number) * scale)
        except ValueError:
            self.fail(f"'{value}' is not a token count: give e.g. 32768 or 32k", param, ctx)
        if not 1 <= tokens <= 100_000_000:
            self.fail(f"'{value}' is not between 1 and 100M tokens", param, ctx)
        return tokens


class FiniteFloat(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value: Any, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Shared options, defined once.
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
context_option = click.option(
    "--context",
    type=click.IntRange(1, 10_000_000),
    default=4096,
    show_default=True,
    help="Tokens of context to hold (prompt + answer).",
)
revision_option = click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
RUNTIMES = ("transformers", "llama.cpp")
gpu_layers_option = click.option(
    "--gpu-layers", type=click.IntRange(0, 100_000), default=None, help="llama.cpp: decoder layers on the GPU."
)


def runtime_option(help_text: str):
    return click.option("--runtime", type=click.Choice(RUNTIMES), default=None, help=help_text)


trust_option = click.option(
    "--trust-remote-code", is_flag=True, help="Allow a repository's own Python code to run (off by default)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="advisor")
def cli() -> None:
    """Will this chat model fit, in which precision, how fast will it answer, and is the estimate right?"""


fit_option = click.option(
    "--fit",
    "fit",
    type=click.Choice(["free", "total"]),
    default="free",
    show_default=True,
    help="Fit against the memory free now (GPU: NVML, RAM: available) or each device's total.",
)


def _hardware(device, memory_gb, bandwidth_gbps, refresh: bool = False, fit: str = "free"):
    from advisor import hardware

    if device is not None or memory_gb is not None or bandwidth_gbps is not None:
        from advisor.accelerators import hardware_from_flags

        base = hardware.load_or_probe(refresh=refresh) if not device or "apple" not in device.lower() else None
        if device is not None and not device.strip():
            raise UsageError("--device is empty: name a GPU or Apple chip, e.g. --device 'RTX 4090'.")
        hw = hardware_from_flags(device, memory_gb=memory_gb, bandwidth_gbps=bandwidth_gbps, base=base)
    else:
        hw = hardware.load_or_probe(refresh=refresh)
    return hardware.fit_to_total(hw) if fit == "total" else hw


def _calibration(hw):
    from advisor import calibration

    return calibration.load_for(hw)


@cli.command()
@click.argument("model", required=False)
@click.option(
    "--precision", "-p", "precisions", type=PrecisionType(), multiple=True, help="Price only these (repeatable)."
)
@context_option
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True, help="Sequences decoded together.")
@click.option(
    "--prompt-tokens",
    type=click.IntRange(1, 10_000_000),
    default=512,
    show_default=True,
    help="Prompt length for TTFT.",
)
@click.option(
    "--device", default=None, help="Price on a table device instead of this machine: 'RTX 4090', '2x H100 SXM5'."
)
@click.option(
    "--memory-gb",
    type=FiniteFloat(0.1, 1e6),
    default=None,
    help="Memory of a hypothetical device, as sold (GB in binary units: 24 means 24 GiB).",
)
@click.option("--bandwidth-gbps", type=FiniteFloat(0.1, 1e6), default=None, help="Its memory bandwidth (GB/s).")
@click.option(
    "--headroom", type=FiniteFloat(0, 0.9), default=0.10, show_default=True, help="Fraction of memory left free."
)
@click.option(
    "--min-tok-s", type=FiniteFloat(0), default=5.0, show_default=True, help="Decode speed the pick must reach."
)
@click.option(
    "--runtime",
    type=click.Choice(["any", "transformers", "llama.cpp"]),
    default="any",
    show_default=True,
    help="Restrict the pick to one runtime.",
)
@click.option(
    "--top", type=click.IntRange(1, 1000), default=None, help="Rank the catalog: the N best models this hardware runs."
)
@click.option("--assistant", default=None, help="Price assisted generation with this draft model.")
@click.option(
    "--acceptance",
    type=FiniteFloat(0, 0.99),
    default=0.7,
    show_default=True,
    help="Share of draft tokens the target accepts (with --assistant).",
)
@click.option(
    "--lookahead",
    type=click.IntRange(1, 64),
    default=5,
    show_default=True,
    help="Draft tokens proposed per target pass (with --assistant).",
)
@click.option(
    "--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Draw memory and speed curves to a PNG."
)
@click.option("--cached", is_flag=True, help="List models in the Hugging Face cache, each with its fit here.")
@click.option(
    "--use",
    type=click.Choice(["chat", "coding", "reasoning", "math"]),
    default="chat",
    show_default=True,
    help="With --top: rank by quality for this purpose.",
)
@click.option("--lang", default=None, help="With --top: only models that support this language (e.g. ko, ja, de).")
@click.option(
    "--license", "license_", type=click.Choice(["any", "permissive"]), default="any", help="With --top: licenses."
)
@click.option("--min-context", type=ContextLength(), default=None, help="With --top: models that hold this (32k).")
@fit_option
@revision_option
@trust_option
@json_option
def recommend(
    model,
    precisions,
    context,
    batch,
    prompt_tokens,
    device,
    memory_gb,
    bandwidth_gbps,
    headroom,
    min_tok_s,
    runtime,
    top,
    assistant,
    acceptance,
    lookahead,
    plot_file,
    cached,
    use,
    lang,
    license_,
    min_context,
    fit,
    revision,
    trust_remote_code,
    as_json,
) -> None:
    """Price every precision of MODEL on this machine (or --device) and recommend one."""
    from advisor import render
    from advisor.recommend import recommend as do_recommend
    from advisor.sources import resolve

    out, err = _consoles()
    # the model first: a misspelled id or a missing file is told at once, not after a first run's hardware probe
    spec = None
    if model is not None and not cached:
        spec = resolve(model, revision=revision, trust_remote_code=trust_remote_code)
    draft = resolve(assistant, trust_remote_code=trust_remote_code) if spec is not None and assistant else None
    hw = _hardware(device, memory_gb, bandwidth_gbps, fit=fit)
    calib = _calibration(hw)
    wanted = None if not precisions or "all" in precisions else list(precisions)
    kwargs = dict(
        context=context,
        batch=batch,
        prompt_tokens=prompt_tokens,
        headroom=headroom,
        min_tok_s=min_tok_s,
        runtime=None if runtime == "any" else runtime,
        calibration=calib,
    )
    if cached or (model is None and top is None):
        if cached:
            from advisor.ranking import cached_fits

            rows = cached_fits(hw, **kwargs)
            return render.print_ranking(rows, out, as_json=as_json, title="Models in the Hugging Face cache")
        model = None
    if model is None:
        from advisor.ranking import rank_catalog

        rows = rank_catalog(
            hw, top=top or 10, use=use, lang=lang, license=None if license_ == "any" else license_,
            min_context=min_context, **kwargs,
        )  # fmt: skip
        what = f"best for {use}" + (f" in {lang}" if lang else "")
        title = f"Catalog models this hardware runs at {min_tok_s:g} tok/s or more, {what}"
        return render.print_ranking(rows, out, as_json=as_json, title=title)
    rec = do_recommend(spec, hw, precisions=wanted, **kwargs)
    extra: dict[str, Any] = {}
    if assistant:
        from advisor.ranking import price_assistant

        extra["assisted"] = price_assistant(
            rec,
            draft,
            hw,
            calibration=calib,
            context=context,
            acceptance=acceptance,
            lookahead=lookahead,
        )
    if not rec.recommended:
        from advisor.serve import scale_out

        # One planner answers both: the serve-plan's vLLM plans, on --device or 8x H100 SXM5 nodes.
        extra["scale_out"] = scale_out(spec, device, context=context, users=batch)
    if plot_file:
        from advisor.plot import plot_recommendation

        plot_recommendation(rec, hw, plot_file, calibration=calib)
        err.print(f"wrote {plot_file}")
    if as_json:
        data = rec.to_json()
        data.update(extra)
        render.print_json(data, out)
        return
    render.print_recommendation(rec, out, err)
    render.print_extras(extra, out)


@cli.command()
@click.option("--refresh", is_flag=True, help="Measure again instead of using the cached profile.")
@json_option
def hw(refresh, as_json) -> None:
    """Show this machine's GPUs, RAM and measured memory bandwidth."""
    from advisor import hardware, render
    from advisor.render_hardware import print_hardware

    out, _ = _consoles()
    profile = hardware.load_or_probe(refresh=refresh)
    if as_json:
        render.print_json(profile.to_json(), out)
    else:
        print_hardware(profile, out)


@cli.group(name="catalog", invoke_without_command=True)
@json_option
@click.pass_context
def catalog_cmd(ctx, as_json) -> None:
    """List the models advisor knows offline (`catalog update ID` adds one from the Hub)."""
    if ctx.invoked_subcommand is not None:
        return
    import datetime

    from advisor import quality as Q
    from advisor import render
    from advisor.sources import catalog

    out, err = _consoles()
    specs = [catalog.spec_from_catalog(m) for m in catalog.known_ids()]
    info = catalog.snapshot()
    age = None
    if info.get("date"):
        with contextlib.suppress(ValueError):
            age = (datetime.date.today() - datetime.date.fromisoformat(info["date"])).days
    if as_json:
        rows = []
        for s in specs:
            m = Q.meta(s.id)
            rows.append({"id": s.id, "total_params": s.total_params, "active_params": s.active_params,
                         "max_context": s.max_context, "release_date": m.release_date, "license": m.license,
                         "permissive": m.permissive, "languages": list(m.languages), "tags": list(m.tags),
                         "gguf_repos": list(m.gguf_repos), "added_by_user": catalog.is_user_model(s.id)})  # fmt: skip
        render.print_json({"snapshot": info.get("date"), "age_days": age, "models": rows}, out)
        return
    if info.get("date"):
        err.print(
            f"catalog snapshot of {info['date']} ({age} days old), {info.get('models', len(specs))} models; "
            "`advisor catalog update ORG/NAME` adds one from the Hub"
        )
    from rich.table import Table

    table = Table(header_style="bold")
    for col in ("model", "total", "active", "layers", "KV heads", "context", "released", "license", "tags"):
        table.add_column(col, justify="left" if col in ("model", "license", "tags", "released") else "right")
    for s in specs:
        m = Q.meta(s.id)
        table.add_row(
            s.id + (" (added)" if catalog.is_user_model(s.id) else ""),
            f"{s.total_params:,}",
            f"{s.active_params:,}",
            str(s.num_layers),
            str(s.num_kv_heads),
            f"{s.max_context:,}" if s.max_context else "-",
            m.release_date or "-",
            m.license or "-",
            ", ".join(m.tags) or "-",
        )
    out.print(table)


@catalog_cmd.command("update")
@click.argument("model_ids", nargs=-1, required=True)
@revision_option
@trust_option
def catalog_update(model_ids, revision, trust_remote_code) -> None:
    """Add models to your catalog from the Hub: their config counted exactly, kept in advisor's cache."""
    from advisor.sources import catalog
    from advisor.sources.hub import spec_from_hub

    out, _ = _consoles()
    for model_id in model_ids:
        spec = spec_from_hub(model_id, revision=revision, trust_remote_code=trust_remote_code)
        path = catalog.add_user_model(spec)
        active = f", {spec.active_params:,} active" if spec.active_params != spec.total_params else ""
        out.print(f"added {spec.id}: {spec.total_params:,} parameters{active}, context {spec.max_context or '-'} "
                  f"(kept in {path})")  # fmt: skip


def _register_optional_commands() -> None:
    """bench and chat live in their own modules; each adds its command to the group."""
    for module in ("advisor.bench_cli", "advisor.chat_cli", "advisor.serve_cli"):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _show_click_error(exc: click.exceptions.ClickException) -> None:
    """click's own error display (usage, hint, message), with the message cleaned: click quotes the bad value,
    which may hold terminal escapes."""
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.exceptions.UsageError) and ctx is not None:
        click.echo(ctx.get_usage(), err=True)
        if ctx.command.get_help_option(ctx) is not None:
            click.echo(f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.", err=True)
        click.echo("", err=True)
    click.echo(one_line(f"Error: {exc.format_message()}", 1000), err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn errors into one line and an exit code. Every line it prints about an
    error is cleaned of control characters (the input it names may come from a hostile file)."""
    import errno

    debug = bool(os.environ.get(DEBUG_ENV))
    _register_optional_commands()
    if sys.stderr.isatty():  # a person is watching: say why the first command waits (not in pipes and logs)
        from advisor import hardware

        hardware.on_probe(lambda line: click.echo(line, err=True))
    try:
        cli.main(args=argv, prog_name="advisor", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("advisor: interrupted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("advisor: interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        _show_click_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AdvisorError as exc:
        if debug:
            raise
        click.echo(f"advisor: {one_line(exc, 2000)}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        if debug:
            raise
        name = f" '{safe(exc.filename, 60)}'" if exc.filename else ""
        if exc.errno == errno.ENAMETOOLONG:
            click.echo(f"advisor: the name{name} is too long for a file name here: check the argument.", err=True)
        else:
            click.echo(f"advisor: cannot use{name}: {safe(exc.strerror or exc, 160)}.", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        first = first_line(exc)
        click.echo(
            f"advisor: unexpected {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback, and report it).",
            err=True,
        )
        sys.exit(1)
    else:
        sys.exit(0)


__all__ = ["UsageError", "cli", "main"]
