"""`advisor chat`: talk to a model in the configuration advisor recommends, and watch its speed.

Three parts, each replaceable in tests:

- `ChatEngine`, the model side: lays out the conversation with the model's own chat template and streams a
  timed answer from a loaded `advisor.engines.Engine` (transformers or llama.cpp; Ctrl-C stops the answer
  and keeps what was generated).
- `Estimates`, advisor's side: the speed the cost model expects for each answer, the assisted
  generation speed-up it expects, and the calibration store, which takes plain answers of at least
  `MIN_RECORD_TOKENS` tokens.
- `ChatSession`, the conversation: history, the context budget (oldest turns are dropped, never the
  system message), the `/` commands, and the read-answer loop over injected input and output streams.

stdout carries answers only; the load line, the speed after each answer and every notice go to stderr.
Heavy imports (torch, transformers, llama.cpp) happen in the engines, inside functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from advisor.errors import AdvisorError, UsageError

if TYPE_CHECKING:
    from advisor.spec import ModelSpec

PROMPT = ">>> "
ROLES = ("system", "user", "assistant")
MIN_RECORD_TOKENS = 16  # shorter answers time too few steps to calibrate anything
SASSY_SYSTEM = "You are a sassy, wise-cracking robot as imagined by Hollywood circa 1986."
HELP = """\
commands:
  /system TEXT  set the system message (/system alone shows it)
  /reset        forget the conversation (the system message stays)
  /save FILE    write the conversation to FILE as a JSON list of {role, content} messages
  /stats        speed so far beside advisor's estimate, and the context in use
  /help         this list
  /exit         leave (Ctrl-D too); Ctrl-C stops an answer and keeps what it said"""


class ChatError(AdvisorError):
    """A chat turn failed (out of memory ...)."""


# ---------------------------------------------------------------------------------------------------------------
# Conversation files


def load_messages(path: str | Path) -> list[dict[str, str]]:
    """A conversation from a JSON file: a list of {"role": system|user|assistant, "content": text}."""
    path = Path(path)
    from advisor.fileio import decode_json

    try:
        with open(path, "rb") as fh:  # a FIFO is fine here: `--messages <(...)` is one
            raw = fh.read(MAX_MESSAGES_BYTES + 1)
        if len(raw) > MAX_MESSAGES_BYTES:
            raise UsageError(
                f"Messages file '{path}' is over {MAX_MESSAGES_BYTES // 2**20} MiB, more than any context holds: "
                "keep the turns you need."
            )
    except FileNotFoundError:
        raise UsageError(f"Messages file '{path}' does not exist.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read messages file '{path}': {exc.strerror or exc}.") from None
    try:
        data = decode_json(raw)
    except ValueError as exc:
        raise UsageError(
            f"Messages file '{path}' is not valid JSON ({exc}): "
            'it needs a list like [{"role": "user", "content": "Hello"}].'
        ) from None
    if not isinstance(data, list):
        raise UsageError(
            f'Messages file \'{path}\' holds a {type(data).__name__}, not a list of {{"role", "content"}} messages.'
        )
    messages = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str) or item.get("role") not in ROLES:
            raise UsageError(
                f'Messages file \'{path}\': item {i} is not a {{"role": system|user|assistant, "content": text}} '
                "message."
            )
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


def save_messages(messages: list[dict[str, str]], path: str | Path) -> None:
    Path(path).write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# NOTE: no token of the common vocabularies spells more than 256 characters (the longest are runs of spaces or
# dashes: a few dozen to 128 characters); a text of more than context x 256 characters cannot fit, whatever
# its tokenizer, and is refused before the tokenizer sees it.
MAX_CHARS_PER_TOKEN = 256
# A conversation file or piped message past this is no conversation any context holds (~4M tokens).
MAX_MESSAGES_BYTES = 16 * 1024 * 1024


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def read_capped(stream, what: str, limit: int = MAX_MESSAGES_BYTES) -> str:
    """All of a text stream up to `limit` characters; UsageError past it (read no further)."""
    text = stream.read(limit + 1)
    if len(text) > limit:
        raise UsageError(f"{what} is over {limit // 2**20} MiB, more than any context holds: shorten it.")
    return text


def drop_oldest_turn(messages: list[dict[str, str]]) -> int:
    """Remove the oldest turn (a user message and what followed it up to the next user message), never a
    system message and never the last user message. Returns how many messages went."""
    rest = [i for i, m in enumerate(messages) if m["role"] != "system"]
    if not rest:
        return 0
    later_users = [i for i in rest if messages[i]["role"] == "user" and i > rest[0]]
    if not later_users:
        return 0
    cut = [i for i in rest if i < later_users[0]]
    for i in reversed(cut):
        del messages[i]
    return len(cut)


# ---------------------------------------------------------------------------------------------------------------
# The model side


@dataclass
class Turn:
    """One answer and how it was produced."""

    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float  # from the call to the first answer token
    decode_tok_s: float  # tokens after the first step over the time they took (0 when too few)
    total_s: float
    passes: int  # steps that produced tokens: target forward passes
    interrupted: bool = False
    assisted: bool = False
    cpu_contention: float | None = None  # share of the CPU other processes took meanwhile


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def has_chat_template(folder: Path) -> bool | None:
    """Whether a model folder declares a chat template (None: cannot tell without loading the tokenizer)."""
    if any((folder / name).exists() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    if (folder / "additional_chat_templates").is_dir():
        return True
    config = folder / "tokenizer_config.json"
    if not config.exists():
        return None
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return None


class ChatEngine:
    """A conversation's view of a loaded engine (`advisor.engines.Engine`): messages in, a timed Turn out."""

    def __init__(self, engine) -> None:
        self.engine = engine
        if not engine.has_chat_template:
            engine.chat_prompt([{"role": "user", "content": "hi"}])  # raises the engine's own ChatTemplateError

    @property
    def assisted(self) -> bool:
        return getattr(self.engine, "assistant", None) is not None

    def count(self, messages: list[dict[str, str]]) -> int:
        return len(self.engine.chat_prompt(messages))

    def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        on_text: Callable[[str], None],
    ) -> Turn:
        """Stream an answer to `messages` through `on_text`; Ctrl-C stops it and keeps what was generated."""
        from advisor.hardware import CpuContention

        prompt = self.engine.chat_prompt(messages)
        try:
            with CpuContention() as contention:  # a busy machine's speeds are shown, not recorded
                gen = self.engine.generate(
                    prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, on_text=on_text
                )
        except Exception as exc:
            if _is_oom(exc):
                raise ChatError(
                    f"Out of memory answering at {len(prompt)} tokens of context: /reset the conversation, "
                    "or lower --max-new-tokens or --max-context."
                ) from None
            raise
        return Turn(
            text=gen.text,
            prompt_tokens=len(prompt),
            new_tokens=gen.new_tokens,
            ttft_s=gen.ttft_s,
            decode_tok_s=gen.decode_tok_s,
            total_s=gen.total_s,
            passes=gen.passes,
            interrupted=gen.interrupted,
            assisted=self.assisted,
            cpu_contention=contention.fraction,
        )


def measure_plain_decode(engine, tokens: int = 16, repeats: int = 3) -> float:
    """Plain decode tokens/s of `engine` here (median of `repeats` runs after a warm-up; one run when the model
    is slow): what an assistant's speed is set against."""
    import statistics

    from advisor.bench import prompt_ids

    ids = prompt_ids(engine, 64)
    speeds: list[float] = []
    assistant = getattr(engine, "assistant", None)
    engine.assistant = None
    try:
        engine.generate(ids, max_new_tokens=4, exact_length=True)
        while len(speeds) < repeats:
            speeds.append(engine.generate(ids, max_new_tokens=tokens, exact_length=True).decode_tok_s)
            if speeds[0] < 10:  # a slow model: one run is enough, and already a few seconds
                break
    finally:
        engine.assistant = assistant
    return statistics.median(speeds)


# ---------------------------------------------------------------------------------------------------------------
# Advisor's side


@dataclass
class Estimates:
    """What advisor expects of this configuration, and the calibration store."""

    spec: Any  # ModelSpec
    hw: Any  # Hardware
    precision: str
    placement: Any  # costmodel.speed.Placement, as loaded
    calibration: Any
    record: bool = True
    assisted: dict[str, Any] | None = None  # ranking.price_assistant
    plain_tok_s: float | None = None  # measured plain decode, when an assistant is loaded
    recorded: list[int] = field(default_factory=list)

    def estimate(self, prompt_tokens: int, new_tokens: int):
        from advisor.costmodel import speed as S

        return S.estimate_speed(
            self.spec,
            self.precision,
            self.hw,
            self.placement,
            context=prompt_tokens + new_tokens,
            prompt_tokens=max(prompt_tokens, 1),
            depth=prompt_tokens + new_tokens // 2,
            calibration=self.calibration,
        )

    def why_not_recorded(self, turn: Turn) -> str | None:
        if turn.assisted:
            return "assisted"
        if turn.new_tokens < MIN_RECORD_TOKENS or turn.decode_tok_s <= 0:
            return f"under {MIN_RECORD_TOKENS} tokens"
        from advisor.calibration import why_not_recorded

        return why_not_recorded(
            self.hw, placement=self.placement.label, cpu_contention=turn.cpu_contention, record=self.record
        )

    def maybe_record(self, turn: Turn) -> int | None:
        """Offer a plain answer's decode speed to the calibration store; the run id when stored."""
        if self.why_not_recorded(turn) is not None:
            return None
        from advisor import calibration as C
        from advisor.bench import decode_run
        from advisor.costmodel import speed as S

        depth = turn.prompt_tokens + turn.new_tokens // 2
        step_s, basis = S.decode_seconds(
            self.spec, self.precision, self.hw, self.placement, depth=depth, calibration=self.calibration
        )
        run = decode_run(
            self.spec,
            self.precision,
            self.hw,
            self.placement,
            step_s=step_s,
            basis=basis,
            measured_tok_s=turn.decode_tok_s,
            measured={
                "source": "chat",
                "depth": turn.prompt_tokens,
                "new_tokens": turn.new_tokens,
                "ttft_s": turn.ttft_s,
                "speeds": [turn.decode_tok_s],
            },
        )
        run_id = C.record(run)
        self.recorded.append(run_id)
        return run_id

    def describe(self, turn: Turn) -> str:
        """The speed line shown after an answer."""
        est = self.estimate(turn.prompt_tokens, turn.new_tokens)
        speed = f"{turn.decode_tok_s:.1f} tok/s" if turn.decode_tok_s > 0 else "too short for tok/s"
        head = f"{turn.new_tokens} tokens at {turn.prompt_tokens} tokens of context"
        if turn.assisted:
            parts = [f"{head}: {speed} with the assistant, {turn.new_tokens / max(turn.passes, 1):.1f} tokens a pass"]
            if self.plain_tok_s and turn.decode_tok_s > 0:
                ratio = turn.decode_tok_s / self.plain_tok_s
                parts.append(f"speed-up {ratio:.2f}x over plain decode measured here ({self.plain_tok_s:.1f} tok/s)")
            priced = self.assisted or {}
            if "speedup" in priced:
                parts.append(
                    f"advisor expected {priced['speedup']:.2f}x ({priced['tok_s']:.1f} tok/s at "
                    f"{priced['acceptance']:.0%} acceptance; plain {est.decode_tok_s:.1f} tok/s)"
                )
            parts.append(f"first token after {turn.ttft_s:.2f} s")
            return "[" + "; ".join(parts) + "]"
        line = (
            f"[{head}: {speed} (advisor estimated {est.decode_tok_s:.1f}), first token after {turn.ttft_s:.2f} s "
            f"(estimated {est.ttft_s:.2f} s)"
        )
        return line + "]"


# ---------------------------------------------------------------------------------------------------------------
# The conversation


@dataclass
class Settings:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    max_context: int = 4096


class ChatSession:
    """The conversation and its loop. `engine` needs `count(messages)` and `generate(...) -> Turn`."""

    def __init__(
        self,
        engine,
        settings: Settings,
        *,
        out: TextIO,
        err: TextIO,
        estimates: Estimates | None = None,
        messages: list[dict[str, str]] | None = None,
        system: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.out = out
        self.err = err
        self.estimates = estimates
        self.messages: list[dict[str, str]] = [dict(m) for m in messages or []]
        self.turns: list[Turn] = []
        self.context_used = 0
        self._dim = bool(getattr(err, "isatty", lambda: False)())
        if system is not None:
            self.set_system(system)

    # -- output -----------------------------------------------------------------------------------------------

    def notice(self, text: str) -> None:
        self.err.write((f"\x1b[2m{text}\x1b[0m" if self._dim else text) + "\n")
        self.err.flush()

    def error(self, exc: BaseException) -> None:
        self.err.write(f"advisor: {exc}\n")
        self.err.flush()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    # -- history ----------------------------------------------------------------------------------------------

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def set_system(self, text: str) -> None:
        if self.system is not None:
            self.messages[0] = {"role": "system", "content": text}
        else:
            self.messages.insert(0, {"role": "system", "content": text})

    def reset(self) -> None:
        self.messages = [m for m in self.messages[:1] if m["role"] == "system"]
        self.context_used = 0

    def _fit(self) -> tuple[int, int]:
        """Drop the oldest turns until the conversation leaves room for an answer; (prompt tokens, answer cap)."""
        limit = self.settings.max_context
        reserve = min(self.settings.max_new_tokens, max(limit // 2, 1))
        before = list(self.messages)
        dropped = 0
        # Text far longer than the context can hold is dropped (or refused) before it is tokenized at all.
        budget = limit * MAX_CHARS_PER_TOKEN
        while _chars(self.messages) > budget:
            gone = drop_oldest_turn(self.messages)
            if not gone:
                self.messages[:] = before
                raise ChatError(
                    f"The conversation holds {_chars(before):,} characters, far more than a {limit}-token context can "
                    "take even without earlier turns: shorten the message or the system message, or raise "
                    "--max-context."
                )
            dropped += gone
        n = self.engine.count(self.messages)
        while n + reserve > limit:
            gone = drop_oldest_turn(self.messages)
            if not gone:
                break
            dropped += gone
            n = self.engine.count(self.messages)
        if n >= limit:  # the question alone does not fit: keep the earlier turns, refuse it
            self.messages[:] = before
            raise ChatError(
                f"The conversation needs {n} tokens, more than the {limit}-token context even without earlier turns: "
                "shorten the message or the system message, or raise --max-context."
            )
        if dropped:
            self.notice(
                f"[dropped the {dropped} oldest messages to keep the conversation within {limit} tokens of context"
                + ("; the system message stays]" if self.system is not None else "]")
            )
        cap = min(self.settings.max_new_tokens, limit - n)
        if cap < self.settings.max_new_tokens:
            self.notice(f"[this answer is limited to {cap} tokens by the {limit}-token context]")
        return n, cap

    # -- turns ------------------------------------------------------------------------------------------------

    def ask(self, text: str) -> Turn:
        """Add a user message and answer it; on failure the message is taken back, so history stays valid."""
        self.messages.append({"role": "user", "content": text})
        return self.answer()

    def answer(self) -> Turn:
        """Answer the conversation as it stands (its last message is the user's)."""
        pending = self.messages[-1]
        wrote: list[str] = []

        def on_text(chunk: str) -> None:
            if chunk:
                wrote.append(chunk)
                self._write(chunk)

        try:
            _, cap = self._fit()
            turn = self.engine.generate(
                self.messages,
                max_new_tokens=cap,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
                on_text=on_text,
            )
        except BaseException:
            if wrote:
                self._write("\n")
            if self.messages and self.messages[-1] is pending:
                self.messages.pop()
            raise
        if not wrote or not wrote[-1].endswith("\n"):
            self._write("\n")
        self.messages.append({"role": "assistant", "content": turn.text})
        self.turns.append(turn)
        self.context_used = turn.prompt_tokens + turn.new_tokens
        if turn.interrupted:
            self.notice(f"[stopped after {turn.new_tokens} tokens; the partial answer is kept]")
        self.notice(self.describe(turn))
        return turn

    def describe(self, turn: Turn) -> str:
        if self.estimates is None:
            speed = f"{turn.decode_tok_s:.1f} tok/s" if turn.decode_tok_s > 0 else "too short for tok/s"
            return f"[{turn.new_tokens} tokens: {speed}, first token after {turn.ttft_s:.2f} s]"
        line = self.estimates.describe(turn)
        run_id = self.estimates.maybe_record(turn)
        if run_id is not None:
            line = line[:-1] + f"; recorded as calibration run {run_id}]"
        elif (why := self.estimates.why_not_recorded(turn)) and why.startswith("other processes"):
            line = line[:-1] + f"; not recorded for calibration: {why}]"  # the user may want to know
        return line

    # -- commands ---------------------------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        name = name.lower()
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/help":
            self.notice(HELP)
        elif name == "/reset":
            self.reset()
            kept = " (the system message stays)" if self.system is not None else ""
            self.notice(f"[conversation cleared{kept}]")
        elif name == "/system":
            if arg:
                self.set_system(arg)
                self.notice("[system message set]")
            else:
                self.notice(f"[system message: {self.system}]" if self.system is not None else "[no system message]")
        elif name == "/save":
            if not arg:
                self.error(UsageError("/save needs a file name: /save chat.json"))
            else:
                try:
                    save_messages(self.messages, Path(arg).expanduser())
                    self.notice(f"[saved {len(self.messages)} messages to {arg}]")
                except OSError as exc:
                    self.error(ChatError(f"Cannot save to '{arg}': {exc.strerror or exc}."))
        elif name == "/stats":
            self.notice(self.stats())
        else:
            self.error(UsageError(f"Unknown command {name}: /help lists the commands."))
        return True

    def stats(self) -> str:
        lines = [
            f"context: {self.context_used} of {self.settings.max_context} tokens in use, "
            f"{len(self.messages)} message{'s' if len(self.messages) != 1 else ''} kept"
        ]
        timed = [t for t in self.turns if t.decode_tok_s > 0]
        if self.turns:
            tokens = sum(t.new_tokens for t in self.turns)
            mean_ttft = sum(t.ttft_s for t in self.turns) / len(self.turns)
            line = f"answers: {len(self.turns)}, {tokens} tokens, first token after {mean_ttft:.2f} s on average"
            if timed:
                line += f", {sum(t.decode_tok_s for t in timed) / len(timed):.1f} tok/s on average"
            lines.append(line)
        else:
            lines.append("answers: none yet")
        if self.estimates is not None:
            est = self.estimates
            last = self.turns[-1] if self.turns else None
            guess = est.estimate(last.prompt_tokens if last else 64, last.new_tokens if last else 64)
            lines.append(
                f"advisor: {est.spec.id} in {est.precision} on {est.placement.label}, "
                f"estimated {guess.decode_tok_s:.1f} tok/s and a first token after {guess.ttft_s:.2f} s"
                + (" (at the last answer's context)" if last else "")
            )
            if est.recorded:
                lines.append(f"calibration runs recorded: {', '.join(map(str, est.recorded))}")
        return "\n".join(lines)

    # -- the loop ---------------------------------------------------------------------------------------------

    def run(self, read: Callable[[str], str]) -> None:
        """Read lines until /exit or end of input; each line is a command or a message."""
        while True:
            try:
                line = read(PROMPT)
            except EOFError:  # Ctrl-D
                self.err.write("\n")
                return
            except KeyboardInterrupt:
                self.err.write("\n")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            try:
                self.ask(line)
            except AdvisorError as exc:
                self.error(exc)
            except KeyboardInterrupt:
                self.notice("[interrupted]")


def line_reader(stdin: TextIO, out: TextIO, err: TextIO) -> Callable[[str], str]:
    """input() with line editing on a terminal; elsewhere plain lines, the prompt on stderr (stdout is data)
    and only when stderr is a terminal (a script's log needs no prompts)."""
    if stdin.isatty() and out.isatty():
        try:
            import readline  # noqa: F401  (gives input() editing and history)
        except ImportError:
            pass
        return input
    show_prompt = bool(getattr(err, "isatty", lambda: False)())

    def read(prompt: str) -> str:
        if show_prompt:
            err.write(prompt)
            err.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


# ---------------------------------------------------------------------------------------------------------------
# Set-up


@dataclass
class Started:
    engine: ChatEngine
    estimates: Estimates
    max_context: int
    lines: list[str]  # what was loaded and what to expect, for stderr


# NOTE: a conversation plans for 4096 tokens unless the model holds fewer or --max-context says otherwise: a
# chat of a few dozen turns, and a KV cache llama.cpp allocates up front at a size every catalog model fits.
CHAT_CONTEXT = 4096


def start(
    model: str | None,
    *,
    hw,
    precision: str | None = None,
    runtime: str | None = None,
    device_map: Any = None,
    max_memory: dict | None = None,
    gpu_layers: int | None = None,
    max_context: int | None = None,
    assistant: str | None = None,
    record: bool = True,
    seed: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    spec: ModelSpec | None = None,
    draft_spec: ModelSpec | None = None,
) -> Started:
    """Load `model` (None: the embedded SmolLM2) in the option `recommend` picks for `hw` (either runtime), or in
    `precision` / `runtime`; and the assistant, when asked. One path with bench: advisor.session. `spec`: the
    model's spec when the caller resolved it already; `draft_spec`: the assistant's."""
    from advisor import calibration as C
    from advisor import session

    if spec is None:
        spec = session.resolve_model(model, revision=revision, trust_remote_code=trust_remote_code)
    calibration = C.load_for(hw)
    plan_context = max_context or min(CHAT_CONTEXT, spec.max_context or CHAT_CONTEXT)
    if spec.max_context and plan_context > spec.max_context:
        raise UsageError(
            f"--max-context {plan_context:,} is more than '{spec.id}' was trained for ({spec.max_context:,}): lower it."
        )
    if assistant and runtime == "llama.cpp":
        raise UsageError("Assisted generation runs in transformers: drop --assistant or pass --runtime transformers.")
    if assistant and runtime is None:
        runtime = "transformers"
    rec = session.recommend_for_run(
        spec, hw, context=plan_context, calibration=calibration, precisions=[precision] if precision else None
    )
    plan = session.choose(rec, model=model, context=plan_context, precision=precision, runtime=runtime)
    artifact = session.fetch(plan, revision=revision, allow_pickle=allow_pickle)
    if plan.runtime == "transformers" and has_chat_template(artifact.path) is False:
        from advisor.engines.transformers import no_template_error

        raise no_template_error(spec.id)
    options = session.load_options(
        plan, device_map=device_map, max_memory=max_memory, gpu_layers=gpu_layers, trust_remote_code=trust_remote_code
    )
    engine = session.open_engine(artifact, options)
    try:
        talker = ChatEngine(engine)
        try:  # so the first answer's speed is the model's, not the process's start-up
            engine.warm_up()
        except Exception:  # optional: a failure here (out of memory...) surfaces, handled, in the first answer
            pass
        placement = session.loaded_placement(plan, engine, hw)
        context = max_context or engine.context_size or plan.option.max_context or plan_context
        estimates = Estimates(
            spec=spec, hw=hw, precision=plan.precision, placement=placement, calibration=calibration, record=record
        )
        first = estimates.estimate(min(512, max(context // 2, 1)), 0)
        notes = list(plan.notes)
        lines = [
            f"{spec.id} loaded in {plan.precision} on {plan.runtime}, {placement.label} ({plan.why}) in "
            f"{engine.load_seconds:.1f} s, {engine.weight_bytes / 1e9:.2f} GB of weights; advisor expects "
            f"~{first.decode_tok_s:.1f} tok/s and a first token after ~{first.ttft_s:.2f} s for a "
            f"{first.prompt_tokens}-token prompt; context {context} tokens"
            + (f" ({'; '.join(notes)})" if notes else "")
        ]
        if assistant:
            lines.append(_attach_assistant(engine, assistant, rec, plan, estimates, hw, calibration, options,
                                           revision=revision, allow_pickle=allow_pickle,
                                           trust_remote_code=trust_remote_code, draft_spec=draft_spec))  # fmt: skip
        if seed is not None:
            engine.set_seed(seed)
    except BaseException:
        engine.close()
        raise
    return Started(engine=talker, estimates=estimates, max_context=context, lines=lines)


def _attach_assistant(engine, assistant, rec, plan, estimates, hw, calibration, options, *, revision, allow_pickle,
                      trust_remote_code, draft_spec=None) -> str:  # fmt: skip
    """Load the draft model beside `engine` for assisted generation; the line that says what to expect."""
    import dataclasses

    from advisor import session
    from advisor.ranking import price_assistant

    if draft_spec is None:
        draft_spec = session.resolve_model(assistant, trust_remote_code=trust_remote_code)
    priced = price_assistant(
        dataclasses.replace(rec, recommended=plan.option), draft_spec, hw, calibration=calibration,
        context=plan.context,
    )  # fmt: skip
    draft_prec = priced.get("draft_precision") or plan.precision
    draft_rec = session.recommend_for_run(draft_spec, hw, context=plan.context, precisions=[draft_prec])
    draft_plan = session.choose(draft_rec, model=assistant, context=plan.context, precision=draft_prec,
                                runtime="transformers")  # fmt: skip
    draft_artifact = session.fetch(draft_plan, revision=revision, allow_pickle=allow_pickle)
    draft = session.open_engine(draft_artifact, dataclasses.replace(options, precision=draft_prec))
    try:
        engine.attach_assistant(draft)
    except BaseException:
        draft.close()
        raise
    estimates.assisted = priced
    estimates.plain_tok_s = measure_plain_decode(engine)
    line = (
        f"assistant {draft_spec.id} loaded in {draft_prec}; plain decode measured here "
        f"{estimates.plain_tok_s:.1f} tok/s"
    )
    if "speedup" in priced:
        line += (
            f"; advisor expects {priced['speedup']:.2f}x with it ({priced['tok_s']:.1f} tok/s at "
            f"{priced['acceptance']:.0%} acceptance)"
        )
    return line
