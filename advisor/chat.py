"""`advisor chat`: talk to a model in the configuration advisor recommends, and watch its speed.

Three parts, each replaceable in tests:

- `Engine`, the model side: lays out the conversation with the tokenizer's chat template, streams
  an answer from `runtime.generate` in a worker thread (so Ctrl-C, which Python delivers to the main
  thread, stops that answer and keeps what was generated), and times each token.
- `Estimates`, advisor's side: the speed the cost model expects for each answer, the assisted
  generation speed-up it expects, and the calibration store, which takes plain answers of at least
  `MIN_RECORD_TOKENS` tokens.
- `ChatSession`, the conversation: history, the context budget (oldest turns are dropped, never the
  system message), the `/` commands, and the read-answer loop over injected input and output streams.

stdout carries answers only; the load line, the speed after each answer and every notice go to stderr.
Heavy imports (torch, transformers) happen in `advisor.runtime`, inside functions.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from advisor.errors import AdvisorError, UsageError

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
    """A chat turn or set-up failed (no chat template, mismatched assistant, out of memory ...)."""


# ---------------------------------------------------------------------------------------------------------------
# Conversation files


def load_messages(path: str | Path) -> list[dict[str, str]]:
    """A conversation from a JSON file: a list of {"role": system|user|assistant, "content": text}."""
    path = Path(path)
    from advisor.sources.config import decode_json

    try:
        raw = path.read_bytes()
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
                f"Messages file '{path}': item {i} is not a {{\"role\": system|user|assistant, \"content\": text}} "
                "message."
            )
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


def save_messages(messages: list[dict[str, str]], path: str | Path) -> None:
    Path(path).write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
    decode_tok_s: float  # tokens after the first batch over the time they took (0 when too few)
    total_s: float
    passes: int  # batches of tokens generate handed over: target forward passes that produced tokens
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


def no_template_error(model_id: str) -> ChatError:
    return ChatError(
        f"'{model_id}' has no chat template (its tokenizer does not say how to lay out a conversation): "
        "it is probably a base model; use its instruct/chat variant."
    )


class Engine:
    """A loaded chat model (runtime.LoadedModel) and optionally a loaded draft model for assisted generation."""

    def __init__(self, loaded, assistant=None) -> None:
        self.loaded = loaded
        self.assistant = assistant
        self.tokenizer = loaded.tokenizer
        if not getattr(self.tokenizer, "chat_template", None):
            raise no_template_error(loaded.source.id)
        if assistant is not None:
            check_assistant(loaded, assistant)

    def encode(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        except Exception as exc:  # jinja errors: "System role not supported", "roles must alternate" ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            model_id = self.loaded.source.id
            raise ChatError(f"The chat template of '{model_id}' rejected the conversation: {first}") from None

    def count(self, messages: list[dict[str, str]]) -> int:
        return int(self.encode(messages)["input_ids"].shape[-1])

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
        from advisor import runtime

        enc = self.encode(messages)
        ids, mask = enc["input_ids"], enc.get("attention_mask")
        streamer = runtime.text_streamer(self.tokenizer, timeout=0.2)
        stop = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with runtime.quiet():  # transformers' once-per-process notices would break into the answer
                    result["gen"] = runtime.generate(
                        self.loaded, ids, attention_mask=mask, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, streamer=streamer, assistant=self.assistant, stop=stop.is_set,
                    )
            except BaseException as exc:  # handed to the main thread
                result["error"] = exc
                streamer.end()  # release the main thread's wait on the stream

        from advisor.hardware import CpuContention

        start = time.perf_counter()
        worker = threading.Thread(target=work, name="advisor-chat-generate", daemon=True)
        interrupted = False
        with CpuContention() as contention:  # a busy machine's speeds are shown, not recorded
            worker.start()
            while True:
                try:
                    for text in streamer:
                        on_text(text)
                    break
                except queue.Empty:  # nothing for a moment: wait on, unless the worker is done and all is read
                    if not worker.is_alive() and streamer.text_queue.empty():
                        break
                except KeyboardInterrupt:  # stop at the next token; keep draining what is already generated
                    interrupted = True
                    stop.set()
            while worker.is_alive():
                try:
                    worker.join()
                except KeyboardInterrupt:
                    interrupted = True
                    stop.set()
        if "error" in result:
            exc = result["error"]
            if _is_oom(exc):
                runtime.free(None)  # collect, and hand CUDA's cached blocks back
                raise ChatError(
                    f"Out of memory answering at {ids.shape[-1]} tokens of context: /reset the conversation, "
                    "or lower --max-new-tokens or --max-context."
                ) from None
            raise exc
        gen = result["gen"]
        arrivals = streamer.arrivals
        first_t = arrivals[0][0] if arrivals else start + gen.ttft_s
        span = arrivals[-1][0] - first_t if len(arrivals) > 1 else 0.0
        later = sum(n for _, n in arrivals[1:])
        text = self.tokenizer.decode(gen.output_ids, skip_special_tokens=True).strip()
        return Turn(
            text=text,
            prompt_tokens=int(ids.shape[-1]),
            new_tokens=gen.new_tokens,
            ttft_s=first_t - start,
            decode_tok_s=later / span if span > 0 else 0.0,
            total_s=gen.total_s,
            passes=len(arrivals),
            interrupted=interrupted,
            assisted=self.assistant is not None,
            cpu_contention=contention.fraction,
        )


def check_assistant(target, draft) -> None:
    """transformers' assisted generation needs the draft to share the target's tokenizer and vocabulary."""
    t_tok, d_tok = target.tokenizer, draft.tokenizer
    t_vocab = target.model.config.get_text_config().vocab_size
    d_vocab = draft.model.config.get_text_config().vocab_size
    same_tokens = t_tok.get_vocab() == d_tok.get_vocab()
    if not same_tokens or t_vocab != d_vocab:
        what = (
            f"its tokenizer ({len(d_tok)} tokens) differs from the target's ({len(t_tok)} tokens)"
            if not same_tokens
            else f"its vocabulary size ({d_vocab}) differs from the target's ({t_vocab})"
        )
        raise ChatError(
            f"The assistant '{draft.source.id}' cannot draft for '{target.source.id}': {what}; "
            "choose a smaller model of the same family."
        )


def measure_plain_decode(loaded, tokens: int = 16, repeats: int = 3) -> float:
    """Plain decode tokens/s of `loaded` here (median of `repeats` runs after a warm-up; one run when the model
    is slow): what an assistant's speed is set against."""
    import statistics

    from advisor import runtime
    from advisor.bench import _prompt_ids

    ids = _prompt_ids(loaded.tokenizer, 64)
    speeds: list[float] = []
    with runtime.quiet():
        runtime.generate(loaded, ids, max_new_tokens=4, exact_length=True)
        while len(speeds) < repeats:
            speeds.append(runtime.generate(loaded, ids, max_new_tokens=tokens, exact_length=True).decode_tok_s)
            if speeds[0] < 10:  # a slow model: one run is enough, and already a few seconds
                break
    return statistics.median(speeds)


# ---------------------------------------------------------------------------------------------------------------
# Advisor's side


@dataclass
class Estimates:
    """What advisor expects of this configuration, and the calibration store."""

    spec: Any  # ModelSpec
    hw: Any  # Hardware
    precision: str
    placement: Any  # costmodel.speed.Placement, as planned
    calibration: Any
    loaded_placement: str = ""
    record: bool = True
    assisted: dict[str, Any] | None = None  # ranking.price_assistant
    plain_tok_s: float | None = None  # measured plain decode, when an assistant is loaded
    recorded: list[int] = field(default_factory=list)

    def estimate(self, prompt_tokens: int, new_tokens: int):
        from advisor.costmodel import speed as S

        return S.estimate_speed(
            self.spec, self.precision, self.hw, self.placement, context=prompt_tokens + new_tokens,
            prompt_tokens=max(prompt_tokens, 1), depth=prompt_tokens + new_tokens // 2, calibration=self.calibration,
        )

    def why_not_recorded(self, turn: Turn) -> str | None:
        if not self.record:
            return "--no-record"
        if turn.assisted:
            return "assisted"
        if turn.new_tokens < MIN_RECORD_TOKENS or turn.decode_tok_s <= 0:
            return f"under {MIN_RECORD_TOKENS} tokens"
        if getattr(self.hw, "source", "") != "probe" or not getattr(self.hw, "fingerprint", None):
            return "hardware not measured here"
        if self.loaded_placement and self.loaded_placement != self.placement.label:
            return f"loaded on {self.loaded_placement}, planned {self.placement.label}"
        from advisor.hardware import too_contended

        busy = turn.cpu_contention
        if self.placement.label == "cpu" and too_contended(busy):
            return f"other processes used {busy:.0%} of the CPU"
        return None

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
            self.spec, self.precision, self.hw, self.placement, step_s=step_s, basis=basis,
            measured_tok_s=turn.decode_tok_s,
            measured={"source": "chat", "depth": turn.prompt_tokens, "new_tokens": turn.new_tokens,
                      "ttft_s": turn.ttft_s, "speeds": [turn.decode_tok_s]},
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
        n = self.engine.count(self.messages)
        before = list(self.messages)
        dropped = 0
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
                self.messages, max_new_tokens=cap, temperature=self.settings.temperature,
                top_p=self.settings.top_p, on_text=on_text,
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
    engine: Engine
    estimates: Estimates
    max_context: int
    lines: list[str]  # what was loaded and what to expect, for stderr


def start(
    model: str | None,
    *,
    hw,
    precision: str | None = None,
    device_map: Any = None,
    max_memory: dict | None = None,
    max_context: int | None = None,
    assistant: str | None = None,
    record: bool = True,
    seed: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Started:
    """Prepare and load `model` (None: the embedded SmolLM2) in the configuration `recommend` picks for `hw`
    (transformers runtime), or in `precision`; and the assistant, when asked."""
    import dataclasses

    from advisor import calibration as C
    from advisor import runtime
    from advisor.costmodel import speed as S
    from advisor.recommend import recommend
    from advisor.sources.local import spec_from_folder

    source = runtime.prepare(model, revision=revision, allow_pickle=allow_pickle)
    if has_chat_template(source.path) is False:
        raise no_template_error(source.id)
    spec = spec_from_folder(source.path, model_id=source.id, trust_remote_code=trust_remote_code)
    spec = dataclasses.replace(spec, source=source.origin)
    calibration = C.load_for(hw)
    plan_context = max_context or min(4096, spec.max_context or 4096)
    rec = recommend(
        spec, hw, precisions=[precision] if precision else None, context=plan_context, runtime="transformers",
        calibration=calibration,
    )
    notes = []
    if precision:
        option = next(o for o in rec.options if o.precision == precision)
        why = "as asked"
        if not option.fits:
            notes.append(f"advisor estimates that {precision} does not fit here; loading it anyway")
    else:
        option = rec.recommended
        if option is None:
            raise ChatError(
                f"'{source.id}' does not fit on this machine in any precision: {rec.reason}. "
                "Pass --precision to try anyway."
            )
        why = "recommended for this machine"
    prec = option.precision
    placement = S.plan(spec, prec, hw, context=plan_context)
    loaded = runtime.load(
        source, prec, device_map=device_map, max_memory=max_memory, trust_remote_code=trust_remote_code
    )
    try:  # so the first answer's speed is the model's, not the process's start-up
        runtime.warm_up(loaded)
    except Exception:  # optional: a failure here (out of memory...) surfaces, handled, in the first answer
        pass
    context = max_context or option.max_context or plan_context  # recommend's max_context: what fits here
    estimates = Estimates(
        spec=spec, hw=hw, precision=prec, placement=placement, calibration=calibration,
        loaded_placement=loaded.placement, record=record,
    )
    first = estimates.estimate(min(512, max(context // 2, 1)), 0)
    lines = [
        f"{source.id} ({source.origin}) loaded in {prec} on {loaded.placement or loaded.device} ({why}) in "
        f"{loaded.load_seconds:.1f} s, {loaded.weight_bytes / 1e9:.2f} GB of weights; advisor expects "
        f"~{first.decode_tok_s:.1f} tok/s and a first token after ~{first.ttft_s:.2f} s for a "
        f"{first.prompt_tokens}-token prompt; context {context} tokens"
        + (f" ({'; '.join(notes)})" if notes else "")
    ]
    draft = None
    if assistant:
        from advisor.ranking import price_assistant

        draft_source = runtime.prepare(assistant, allow_pickle=allow_pickle)
        draft_spec = spec_from_folder(draft_source.path, model_id=draft_source.id, trust_remote_code=trust_remote_code)
        priced = price_assistant(
            dataclasses.replace(rec, recommended=option), draft_spec, hw, calibration=calibration, context=plan_context
        )
        draft_prec = priced.get("draft_precision") or prec
        draft = runtime.load(
            draft_source, draft_prec, device_map=device_map, max_memory=max_memory, trust_remote_code=trust_remote_code
        )
        check_assistant(loaded, draft)
        estimates.assisted = priced
        estimates.plain_tok_s = measure_plain_decode(loaded)
        line = (
            f"assistant {draft_source.id} loaded in {draft_prec}; plain decode measured here "
            f"{estimates.plain_tok_s:.1f} tok/s"
        )
        if "speedup" in priced:
            line += (
                f"; advisor expects {priced['speedup']:.2f}x with it ({priced['tok_s']:.1f} tok/s at "
                f"{priced['acceptance']:.0%} acceptance)"
            )
        lines.append(line)
    engine = Engine(loaded, draft)
    if seed is not None:
        runtime.set_seed(seed)
    return Started(engine=engine, estimates=estimates, max_context=context, lines=lines)
