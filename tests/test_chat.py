"""`advisor chat`: the REPL over scripted input and a real terminal, one-shot and piped use, the context
budget, the calibration store, assisted generation and the one-line errors.

The loop tests run a tiny random Llama (hidden size 64, 2 layers) with the embedded model's tokenizer and
chat template and no end-of-sequence token, so every answer runs to --max-new-tokens in well under a
second; only the Paris test needs the real embedded model's answers.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import advisor.chat_cli  # noqa: F401  (registers `chat` on the group)
from advisor import chat as C
from advisor.cli import cli
from advisor.engines import ChatTemplateError
from advisor.errors import AdvisorError, UsageError

STATS = re.compile(
    r"\[(\d+) tokens at (\d+) tokens of context: ([\d.]+) tok/s \(advisor estimated ([\d.]+)\), "
    r"first token after ([\d.]+) s \(estimated ([\d.]+) s\)"
)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory, embedded_source) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer and chat template and no end-of-sequence token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from advisor.hf import quiet

    folder = tmp_path_factory.mktemp("chat-tiny")
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    with quiet():
        LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (embedded_source.path / name).exists():
            shutil.copy(embedded_source.path / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def other_tokenizer_model(tmp_path_factory) -> Path:
    """A random tiny Llama with a 64-word tokenizer of its own: no draft for SmolLM2."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from advisor.hf import quiet

    folder = tmp_path_factory.mktemp("other-tokenizer")
    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, 64)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="w1").save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    with quiet():
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def embedded_here(embedded_source, seeded_hw):
    """This test's cache holds the embedded model's converted folder (linked), so nothing converts again."""
    from advisor.paths import cache_dir

    target = cache_dir() / "converted" / embedded_source.path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_source.path, target_is_directory=True)
    return embedded_source


def run_chat(args: list[str], input: str | None = None):
    result = CliRunner().invoke(cli, ["chat", *args], input=input)
    return result


def ok(result):
    assert result.exit_code == 0, (result.exception, result.stderr[-2000:])
    return result


def stats(stderr: str) -> list[tuple[int, int]]:
    """(answer tokens, prompt tokens) of every speed line."""
    return [(int(m.group(1)), int(m.group(2))) for m in STATS.finditer(stderr)]


# ---------------------------------------------------------------------------------------------------------------
# Without a model


def test_importing_chat_does_not_import_torch():
    code = "import sys, advisor.chat, advisor.chat_cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_load_messages_accepts_the_guides_list_and_names_the_file_when_bad(tmp_path):
    good = tmp_path / "chat.json"
    good.write_text(json.dumps([{"role": "system", "content": C.SASSY_SYSTEM}, {"role": "user", "content": "Hi"}]))
    assert [m["role"] for m in C.load_messages(good)] == ["system", "user"]

    bad = tmp_path / "broken.json"
    bad.write_text('[{"role": "user", "content": "Hi"},]')
    with pytest.raises(UsageError) as err:
        C.load_messages(bad)
    assert "broken.json" in str(err.value) and "not valid JSON" in str(err.value) and "\n" not in str(err.value)

    for text, words in [('{"role": "user"}', "not a list"), ('[{"role": "robot", "content": "x"}]', "item 0")]:
        bad.write_text(text)
        with pytest.raises(UsageError, match=words):
            C.load_messages(bad)
    with pytest.raises(UsageError, match="does not exist"):
        C.load_messages(tmp_path / "missing.json")


def test_bad_messages_file_is_one_line_from_main(tmp_path, capsys):
    from advisor.cli import main

    bad = tmp_path / "history.json"
    bad.write_text("[{'role': 'user'}]")
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--messages", str(bad), "-m", "hi"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "history.json" in err and err.startswith("advisor: ")


def test_drop_oldest_turn_keeps_the_system_message_and_the_last_question():
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    msgs = [{"role": r, "content": c} for r, c in zip(roles, ["s", "u1", "a1", "u2", "a2", "u3"], strict=True)]
    assert C.drop_oldest_turn(msgs) == 2
    assert [m["content"] for m in msgs] == ["s", "u2", "a2", "u3"]
    assert C.drop_oldest_turn(msgs) == 2
    assert C.drop_oldest_turn(msgs) == 0  # only the system message and the question remain
    assert [m["content"] for m in msgs] == ["s", "u3"]


class FakeEngine:
    """Answers 'answer N' with N tokens per word of the prompt; records the conversations it was given."""

    def __init__(self):
        self.seen: list[list[dict]] = []

    def count(self, messages):
        return sum(len(m["content"].split()) + 4 for m in messages)

    def generate(self, messages, *, max_new_tokens, temperature, top_p, on_text):
        self.seen.append([dict(m) for m in messages])
        text = f"answer {len(self.seen)}"
        on_text(text)
        return C.Turn(
            text=text,
            prompt_tokens=self.count(messages),
            new_tokens=2,
            ttft_s=0.01,
            decode_tok_s=100.0,
            total_s=0.02,
            passes=2,
        )


def test_session_keeps_history_and_commands_work_with_any_engine(tmp_path):
    import io

    engine = FakeEngine()
    out, err = io.StringIO(), io.StringIO()
    session = C.ChatSession(engine, C.Settings(max_context=1000), out=out, err=err, system="Be kind.")
    lines = iter(["first question", "/help", "/nonsense", "second question", "/reset", "third", "/exit", "unread"])

    def read(prompt):
        line = next(lines)
        if line == "/help":  # Ctrl-C at the prompt: a new prompt, the session stays
            raise KeyboardInterrupt
        return line

    session.run(read)
    assert out.getvalue() == "answer 1\nanswer 2\nanswer 3\n"
    assert [m["content"] for m in engine.seen[1]] == ["Be kind.", "first question", "answer 1", "second question"]
    assert [m["content"] for m in engine.seen[2]] == ["Be kind.", "third"]  # /reset kept only the system message
    assert "Unknown command /nonsense" in err.getvalue()
    assert len(engine.seen) == 3  # nothing after /exit was read


# ---------------------------------------------------------------------------------------------------------------
# The embedded model


@pytest.mark.parametrize("runtime", ["transformers", "llama.cpp"])
def test_one_shot_answers_paris_offline_with_the_speed_on_stderr(embedded_here, runtime):
    from advisor import calibration
    from advisor.engines import llamacpp

    if runtime == "llama.cpp" and not llamacpp.usable():
        pytest.skip(llamacpp.unavailable_reason())
    question = "What is the capital of France? Answer in one word."
    result = ok(run_chat(["-m", question, "--temperature", "0", "--runtime", runtime]))
    assert "Paris" in result.stdout
    assert "tok/s" not in result.stdout and "loaded" not in result.stdout  # stdout is the answer only
    load_line = result.stderr.splitlines()[0]
    assert "SmolLM2-135M-Instruct loaded in" in load_line and f"on {runtime}, cpu" in load_line
    assert "advisor expects ~" in load_line
    match = STATS.search(result.stderr)
    assert match, result.stderr
    tokens, _, tok_s, estimated = int(match.group(1)), int(match.group(2)), float(match.group(3)), float(match.group(4))
    assert 0 < tokens < C.MIN_RECORD_TOKENS and tok_s > 0 and estimated > 0
    assert calibration.runs() == []  # a short answer is not offered to the store


# ---------------------------------------------------------------------------------------------------------------
# The loop, scripted, on the tiny model


def test_interactive_keeps_history_resets_and_saves(chat_model, seeded_hw, tmp_path):
    script = (
        "\n".join(
            [
                "My name is Ada.",
                f"/save {tmp_path / 'one.json'}",
                "What is my name?",
                f"/save {tmp_path / 'two.json'}",
                "/stats",
                "/reset",
                f"/save {tmp_path / 'three.json'}",
                "/system Be brief.",
                "/system",
                f"/save {tmp_path / 'four.json'}",
                "/exit",
                "this line is never read",
            ]
        )
        + "\n"
    )
    args = [
        str(chat_model),
        "-i",
        "--system",
        C.SASSY_SYSTEM,
        "--max-new-tokens",
        "6",
        "--temperature",
        "1",
        "--seed",
        "0",
        "--no-record",
    ]
    result = ok(run_chat(args, input=script))

    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert [m["role"] for m in one] == ["system", "user", "assistant"]
    assert one[0]["content"] == C.SASSY_SYSTEM and one[1]["content"] == "My name is Ada."
    assert [m["role"] for m in two] == ["system", "user", "assistant", "user", "assistant"]
    assert two[:3] == one and two[3]["content"] == "What is my name?"
    assert json.loads((tmp_path / "three.json").read_text()) == [{"role": "system", "content": C.SASSY_SYSTEM}]
    assert json.loads((tmp_path / "four.json").read_text()) == [{"role": "system", "content": "Be brief."}]
    assert "[system message: Be brief.]" in result.stderr

    lines = stats(result.stderr)
    assert len(lines) == 2  # one speed line per answer, none for what followed /exit
    (n1, ctx1), (n2, ctx2) = lines
    assert n1 == n2 == 6
    assert ctx2 > ctx1 + n1  # the second prompt holds the first question and answer
    assert "context: " in result.stderr and "answers: 2, 12 tokens" in result.stderr  # /stats
    assert "tok/s" not in result.stdout


def test_piped_stdin_is_one_message_and_messages_file_continues(chat_model, seeded_hw, tmp_path):
    base = [str(chat_model), "--max-new-tokens", "4", "--temperature", "0", "--no-record"]
    piped = ok(run_chat(base, input="Hello from a pipe\n"))
    assert len(stats(piped.stderr)) == 1
    assert "/help" not in piped.stderr  # not interactive

    conv = tmp_path / "conv.json"
    conv.write_text(
        json.dumps(
            [
                {"role": "user", "content": "Hello from a pipe"},
                {"role": "assistant", "content": "Hello! What would you like to talk about today?"},
            ]
        )
    )
    continued = ok(run_chat([*base, "--messages", str(conv), "-m", "Tell me more."]))
    ((_, ctx_piped),) = stats(piped.stderr)
    ((_, ctx_continued),) = stats(continued.stderr)
    assert ctx_continued > ctx_piped + 10  # the earlier turn went in with the new question

    empty = run_chat(base, input="")
    assert isinstance(empty.exception, UsageError) and "Nothing to answer" in str(empty.exception)


def test_long_conversations_drop_the_oldest_turns_but_not_the_system_message(chat_model, seeded_hw, tmp_path):
    words = " ".join(["apple"] * 25)
    script = (
        "\n".join(
            [
                f"{words} one",
                f"{words} two",
                f"{words} three",
                " ".join(["pear"] * 300),
                f"/save {tmp_path / 'kept.json'}",
            ]
        )
        + "\n"
    )
    args = [
        str(chat_model),
        "-i",
        "--system",
        "Keep this.",
        "--max-context",
        "100",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--no-record",
    ]
    result = ok(run_chat(args, input=script))
    assert "dropped the 2 oldest messages" in result.stderr and "the system message stays" in result.stderr
    assert "more than the 100-token context" in result.stderr  # the 300-word message alone cannot fit
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert kept[0] == {"role": "system", "content": "Keep this."}
    users = [m["content"] for m in kept if m["role"] == "user"]
    assert users == [f"{words} two", f"{words} three"]  # the first turn went; the refused message is not kept
    assert all(ctx + n <= 100 for n, ctx in stats(result.stderr))


def test_answers_of_16_tokens_or_more_are_recorded_for_calibration(chat_model, seeded_hw, cpu_share):
    from advisor import calibration

    base = [str(chat_model), "-m", "hi", "--temperature", "0"]
    recorded = ok(run_chat([*base, "--max-new-tokens", "20"]))
    runs = calibration.runs()
    assert len(runs) == 1 and "recorded as calibration run" in recorded.stderr
    run = runs[0]
    assert run.model == chat_model.name and run.measured["source"] == "chat" and run.measured["new_tokens"] == 20
    assert run.measured_tok_s > 0 and run.estimated_tok_s and run.fingerprint == seeded_hw.fingerprint

    ok(run_chat([*base, "--max-new-tokens", "20", "--no-record"]))
    ok(run_chat([*base, "--max-new-tokens", "10"]))  # too short to calibrate anything
    cpu_share(0.5)
    busy = ok(run_chat([*base, "--max-new-tokens", "20"]))  # shown, not recorded
    assert "other processes used 50% of the CPU" in busy.stderr
    assert len(calibration.runs()) == 1


def test_out_of_memory_in_an_answer_is_one_line_and_the_session_goes_on(chat_model, seeded_hw, tmp_path, monkeypatch):
    import torch

    from advisor.engines.transformers import TransformersEngine

    real, calls = TransformersEngine.generate, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TransformersEngine, "generate", flaky)
    monkeypatch.setattr(TransformersEngine, "warm_up", lambda self: 0.0)  # the first *answer* must hit the failure
    script = f"first\nsecond\n/save {tmp_path / 's.json'}\n"
    result = ok(run_chat([str(chat_model), "-i", "--max-new-tokens", "3", "--no-record"], input=script))
    assert "advisor: Out of memory answering at" in result.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    assert (saved[0]["role"], saved[0]["content"]) == ("user", "second")  # the failed question was taken back
    assert len(saved) == 2 and len(stats(result.stderr)) == 1


def test_a_model_without_chat_template_is_refused_in_one_line(chat_model, seeded_hw, tmp_path):
    base = tmp_path / "base-model"
    shutil.copytree(chat_model, base)
    (base / "chat_template.jinja").unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    result = run_chat([str(base), "-m", "hi"])
    assert isinstance(result.exception, ChatTemplateError)
    text = str(result.exception)
    assert "has no chat template" in text and "base-model" in text and "\n" not in text


def test_assistant_reports_measured_speedup_beside_the_estimate(chat_model, seeded_hw):
    from advisor import calibration

    args = [
        str(chat_model),
        "-m",
        "hi",
        "--assistant",
        str(chat_model),
        "--max-new-tokens",
        "24",
        "--temperature",
        "0",
        "--precision",
        "fp32",
    ]
    result = ok(run_chat(args))
    assert "loaded in fp32" in result.stderr and "(as asked)" in result.stderr
    assert re.search(
        r"assistant .* loaded in fp32; plain decode measured here [\d.]+ tok/s; advisor expects [\d.]+x", result.stderr
    )
    line = next(x for x in result.stderr.splitlines() if "with the assistant" in x)
    assert re.search(r"24 tokens at \d+ tokens of context: [\d.]+ tok/s with the assistant, [\d.]+ tokens a pass", line)
    assert re.search(r"speed-up [\d.]+x over plain decode measured here \([\d.]+ tok/s\)", line)
    assert re.search(r"advisor expected [\d.]+x \([\d.]+ tok/s at 70% acceptance; plain [\d.]+ tok/s\)", line)
    per_pass = float(re.search(r"([\d.]+) tokens a pass", line).group(1))
    assert per_pass > 1.2  # the draft is the target itself: its drafted tokens are accepted
    assert calibration.runs() == []  # assisted speed does not calibrate plain decoding


def test_assistant_with_another_tokenizer_is_refused(chat_model, other_tokenizer_model, seeded_hw):
    result = run_chat([str(chat_model), "-m", "hi", "--assistant", str(other_tokenizer_model)])
    assert isinstance(result.exception, AdvisorError)
    text = str(result.exception)
    assert "cannot draft for" in text and "tokenizer" in text and "\n" not in text


# ---------------------------------------------------------------------------------------------------------------
# A real terminal


class Terminal:
    """The parent's end of a pty, with an expect-like read."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def read_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.buf):
            left = deadline - time.monotonic()
            ready = select.select([self.fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows: {self.buf[-1500:]!r}")
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed waiting for {what}: {self.buf[-1500:]!r}")
            self.buf += chunk

    def expect(self, text: bytes, timeout: float, after: int = 0) -> int:
        self.read_until(lambda b: text in b[after:], timeout, repr(text))
        return self.buf.index(text, after) + len(text)


def test_ctrl_c_in_a_terminal_stops_the_answer_and_the_prompt_comes_back(chat_model, seeded_hw, tmp_path):
    master, slave = pty.openpty()
    cmd = [
        sys.executable,
        "-m",
        "advisor",
        "chat",
        str(chat_model),
        "--max-new-tokens",
        "20000",
        "--temperature",
        "1",
        "--seed",
        "0",
        "--no-record",
    ]
    # One torch thread: two cores shared with other work make a thread pool crawl, and speed is not tested here.
    env = dict(os.environ, TERM="dumb", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
    )
    os.close(slave)
    term = Terminal(master)
    try:
        pos = term.expect(b">>> ", 90)
        os.write(master, b"Tell me everything you know.\n")
        pos = term.expect(b"everything you know.", 10, pos)
        term.read_until(lambda b: len(b) > pos + 200, 30, "the answer to stream")  # tokens arrive as generated
        interrupted_at = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        pos = term.expect(b"tokens; the partial answer is kept]", 20, pos)
        pos = term.expect(b">>> ", 20, pos)
        assert time.monotonic() - interrupted_at < 15
        stopped = int(re.search(rb"stopped after (\d+) tokens", term.buf).group(1))
        assert 0 < stopped < 20000
        os.write(master, f"/save {tmp_path / 'partial.json'}\n".encode())
        pos = term.expect(b"saved 2 messages", 20, pos)
        term.expect(b">>> ", 20, pos)
        os.write(master, b"\x04")  # Ctrl-D leaves
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    saved = json.loads((tmp_path / "partial.json").read_text())
    assert [m["role"] for m in saved] == ["user", "assistant"] and saved[1]["content"]


def test_the_prompt_is_the_same_tokens_in_both_runtimes_and_in_llama_cpp_pythons_own_chat(embedded_source):
    """Before blaming the model for an answer, the prompt must be identical: transformers' template, the GGUF's
    template through advisor's llama.cpp engine, and llama-cpp-python's own chat completion formatter."""
    from advisor.engines import Artifact, LoadOptions, llamacpp, open_engine
    from advisor.paths import EMBEDDED_ID, embedded_gguf

    if not llamacpp.usable():
        pytest.skip(llamacpp.unavailable_reason())
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    hf = open_engine(embedded_source, LoadOptions("fp32"))
    gguf = Artifact(EMBEDDED_ID, embedded_gguf(), "llama.cpp", "embedded")
    gg = open_engine(gguf, LoadOptions("gguf-file", context=256))
    try:
        for convo in (messages[1:2], messages):
            ours = gg.chat_prompt(convo)
            assert hf.chat_prompt(convo) == ours
            # llama-cpp-python's chat completion path: the GGUF template through its own formatter
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = gg.llm
            fmt = Jinja2ChatFormatter(
                template=llm.metadata["tokenizer.chat_template"],
                eos_token=llm._model.token_get_text(llm.token_eos()),
                bos_token=llm._model.token_get_text(llm.token_bos()),
            )
            text = fmt(messages=convo).prompt
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ours
    finally:
        hf.close()
        gg.close()
