"""`advisor chat`: a thin command over advisor.chat."""

from __future__ import annotations

import sys

import click

from advisor.cli import (
    FiniteFloat,
    PrecisionType,
    cli,
    gpu_layers_option,
    revision_option,
    runtime_option,
    trust_option,
)


@cli.command()
@click.argument("model", required=False)
@click.option("--message", "-m", default=None, help="Ask this one question, print the answer and exit.")
@click.option(
    "--messages",
    "messages_file",
    default=None,
    metavar="FILE",
    help="Continue the conversation in FILE (a JSON list of {role, content} messages).",
)
@click.option("--system", default=None, help="The system message, e.g. 'You are a sassy, wise-cracking robot ...'.")
@click.option("--interactive", "-i", is_flag=True, help="Chat line by line even when stdin is not a terminal.")
@click.option("--precision", "-p", type=PrecisionType(), default=None, help="Load this precision (default: the pick).")
@runtime_option("Run on this runtime (default: the recommended option's).")
@click.option("--device-map", default=None, help="transformers device_map (cpu, auto, cuda:0 ...); default: best here.")
@gpu_layers_option
@click.option("--max-memory", default=None, help="Per-device limits for device_map=auto, e.g. '0=20GiB,cpu=60GiB'.")
@click.option(
    "--max-context",
    type=click.IntRange(16, 10_000_000),
    default=None,
    help="Tokens the conversation may hold; older turns are dropped beyond it. Default: what fits here.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1, 1_000_000),
    default=256,
    show_default=True,
    help="Longest answer, in tokens.",
)
@click.option(
    "--temperature",
    type=FiniteFloat(0, 100),
    default=0.7,
    show_default=True,
    help="Sampling temperature; 0 picks the likeliest token (greedy).",
)
@click.option(
    "--top-p",
    type=FiniteFloat(0, 1, min_open=True),
    default=0.9,
    show_default=True,
    help="Nucleus sampling: sample from the likeliest tokens holding this probability.",
)
@click.option("--seed", type=int, default=None, help="Seed the sampler, so answers repeat.")
@click.option("--assistant", default=None, help="A small draft model of the same family for assisted generation.")
@click.option("--no-record", is_flag=True, help="Do not offer answers' speed to the calibration store.")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickled (*.bin) weights from a trusted source.")
@revision_option
@trust_option
def chat(
    model,
    message,
    messages_file,
    system,
    interactive,
    precision,
    runtime,
    device_map,
    gpu_layers,
    max_memory,
    max_context,
    max_new_tokens,
    temperature,
    top_p,
    seed,
    assistant,
    no_record,
    allow_pickle,
    revision,
    trust_remote_code,
) -> None:
    """Chat with MODEL (default: the embedded SmolLM2-135M-Instruct) in the configuration advisor recommends.

    Answers stream to stdout; what was loaded, the speed of each answer beside advisor's estimate, and
    notices go to stderr. Interactive when stdin is a terminal (or with -i): /help lists the commands.
    With -m, or with a message piped to stdin, it answers once and exits.
    """
    from advisor import chat as C
    from advisor import hardware, session
    from advisor.errors import UsageError

    stdin, out, err = sys.stdin, sys.stdout, sys.stderr
    if precision == "all":
        raise UsageError("chat loads one precision: pass one of them to --precision, not 'all'.")
    messages = C.load_messages(messages_file) if messages_file else []
    tty_in = bool(getattr(stdin, "isatty", lambda: False)())
    oneshot = message is not None or not (interactive or tty_in)
    if message is None and oneshot:
        message = C.read_capped(stdin, "The message on stdin").strip() or None
        if message is None and not (messages and messages[-1]["role"] == "user"):
            raise UsageError("Nothing to answer: stdin was empty. Pass -m 'question', pipe one in, or use -i.")
    memory = None
    if max_memory:
        from advisor.bench_cli import _parse_max_memory

        memory = _parse_max_memory(max_memory)

    # the model first: a misspelled id or a missing file is told at once, not after a first run's hardware probe
    spec = session.resolve_model(model, revision=revision, trust_remote_code=trust_remote_code)
    draft = session.resolve_model(assistant, trust_remote_code=trust_remote_code) if assistant else None
    started = C.start(
        model,
        spec=spec,
        draft_spec=draft,
        hw=hardware.load_or_probe(),
        precision=precision,
        runtime=runtime,
        device_map=device_map,
        gpu_layers=gpu_layers,
        max_memory=memory,
        max_context=max_context,
        assistant=assistant,
        record=not no_record,
        seed=seed,
        revision=revision,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    settings = C.Settings(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, max_context=started.max_context
    )
    session = C.ChatSession(
        started.engine, settings, out=out, err=err, estimates=started.estimates, messages=messages, system=system
    )
    for line in started.lines:
        session.notice(line)
    if oneshot:
        turn = session.ask(message) if message is not None else session.answer()
        if turn.interrupted:
            sys.exit(130)
        return
    session.notice("[/help for commands; Ctrl-C stops an answer; Ctrl-D or /exit leaves]")
    if messages and messages[-1]["role"] == "user":
        try:
            session.answer()
        except C.AdvisorError as exc:
            session.error(exc)
    session.run(C.line_reader(stdin, out, err))
