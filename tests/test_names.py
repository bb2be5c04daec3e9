"""Size labels: parse_size on bare labels, find_size_in_id on Hub ids and file names, and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advisor.errors import AdvisorError, NameParseError
from advisor.names import find_size_in_id, parse_size
from advisor.spec import SizeLabel

B = 1_000_000_000
M = 1_000_000
EXPECTED_FORMS = "expected forms like 8B, 1.5B, 135M, 8x7B or 141B-A35B."

# Substrings of the warnings each kind of inexact label carries ("" means no warning).
UPPER = "upper bound"
EFFECTIVE = "effective count"
ACTIVE_ONLY = "only the active count"

# text, total, active, upper_bound, experts, warning
PARSE_CASES = [
    ("8B", 8 * B, 8 * B, False, None, ""),  # the plain form
    ("70b", 70 * B, 70 * B, False, None, ""),  # lower-case unit letter
    ("1.5B", 1_500_000_000, 1_500_000_000, False, None, ""),  # a decimal point inside the label
    ("135M", 135 * M, 135 * M, False, None, ""),  # millions, not billions
    ("400M", 400 * M, 400 * M, False, None, ""),  # millions with a round hundred
    ("0.5B", 500 * M, 500 * M, False, None, ""),  # a leading zero is not a zero count
    ("2.7B", 2_700_000_000, 2_700_000_000, False, None, ""),  # 2.7 * 1e9 is inexact in floats: must round
    ("1T", 1_000 * B, 1_000 * B, False, None, ""),  # trillions
    ("1t", 1_000 * B, 1_000 * B, False, None, ""),  # lower-case t is a unit too
    ("7b1", 7_100_000_000, 7_100_000_000, False, None, ""),  # BLOOM: the digit after the unit is the decimal
    ("1b7", 1_700_000_000, 1_700_000_000, False, None, ""),  # BLOOM again: 1.7B, not 1B or 17B
    ("8x7B", 56 * B, 56 * B, True, 8, UPPER),  # NxM: 56B is an upper bound (Mixtral holds 46.7B)
    ("8x22B", 176 * B, 176 * B, True, 8, UPPER),  # NxM with a two-digit expert size
    ("8X7b", 56 * B, 56 * B, True, 8, UPPER),  # the x and the unit are case-insensitive
    ("141B-A35B", 141 * B, 35 * B, False, None, ""),  # total-active: active is exact, not a bound
    ("57B-A14B", 57 * B, 14 * B, False, None, ""),  # Qwen2 MoE: both counts as stated
    ("30B-A3B", 30 * B, 3 * B, False, None, ""),  # the A3B part alone would be garbage
    ("1T-A32B", 1_000 * B, 32 * B, False, None, ""),  # total and active in different units
    ("E2B", 2 * B, 2 * B, False, None, EFFECTIVE),  # Gemma 3n: effective, the stored count is larger
    (" 8B ", 8 * B, 8 * B, False, None, ""),  # whitespace around a CLI argument is not part of the label
]


@pytest.mark.parametrize(
    ("text", "total", "active", "upper_bound", "experts", "warning"),
    PARSE_CASES,
    ids=[repr(case[0]) for case in PARSE_CASES],
)
def test_parse_size(text, total, active, upper_bound, experts, warning):
    label = parse_size(text)
    assert label == SizeLabel(
        label=text.strip(),
        total_params=total,
        active_params=active,
        upper_bound=upper_bound,
        experts=experts,
        warnings=label.warnings,
    )
    assert type(label.total_params) is int and type(label.active_params) is int
    _assert_warning(label, warning)


GARBAGE = [
    "8xB",  # experts without an expert size
    "-3B",  # a negative count (or a stray separator)
    "B",  # a unit without a number
    "",  # nothing at all
    "   ",  # only whitespace
    "8x",  # experts without anything after the x
    "x7B",  # an expert size without the expert count
    "1.2.3B",  # a version number, not a decimal
    "0B",  # a model cannot have zero parameters
    "abc",  # no digits at all
    "A3B",  # active count alone: the total, which memory depends on, is unknown
    "17B-16E",  # Llama 4 style: active count and experts, but no total
    "4k",  # a context length: k is not a size unit
    "7K",  # upper-case K is not a unit either
    "3B-A30B",  # the active count cannot exceed the total
    "0x7B",  # zero experts
    "8B-A0B",  # zero active parameters
    ".5B",  # a decimal without its leading digit
    "8 B",  # a space between the number and the unit
    "1.5b1",  # BLOOM's form has no decimal point of its own
    "Q4_K_M",  # a quantization name, not a size
    "1e9B",  # scientific notation is not a label form
    "9" * 40 + "B",  # absurdly large: must not overflow into inf
]


@pytest.mark.parametrize("text", GARBAGE, ids=[repr(text[:12]) for text in GARBAGE])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(NameParseError) as excinfo:
        parse_size(text)
    message = str(excinfo.value)
    assert message.startswith(f"Cannot read size label {text!r}:")
    assert message.endswith(EXPECTED_FORMS)
    assert isinstance(excinfo.value, AdvisorError)


def test_garbage_message_is_exact():
    with pytest.raises(NameParseError) as excinfo:
        parse_size("8xB")
    assert str(excinfo.value) == "Cannot read size label '8xB': expected forms like 8B, 1.5B, 135M, 8x7B or 141B-A35B."


def test_active_only_message_says_what_to_add():
    with pytest.raises(NameParseError, match="only the active count; state the total too, as in 30B-A3B"):
        parse_size("A3B")


# model_id, label, total, active, upper_bound, experts, warning
ID_CASES = [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "8B", 8 * B, 8 * B, False, None, ""),  # Llama-3 is a version
    ("Qwen/Qwen2-57B-A14B-Instruct", "57B-A14B", 57 * B, 14 * B, False, None, ""),  # Qwen2: digit glued to a word
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "8x7B", 56 * B, 56 * B, True, 8, UPPER),  # v0.1 is a version
    ("mistralai/Mixtral-8x22B-v0.1", "8x22B", 176 * B, 176 * B, True, 8, UPPER),  # NxM at the end of the name
    # A2.7B alone gives only the active count; the E of MoE is inside a word, so no E-label
    ("Qwen/Qwen1.5-MoE-A2.7B-Chat", "A2.7B", 2_700 * M, 2_700 * M, False, None, ACTIVE_ONLY),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "135M", 135 * M, 135 * M, False, None, ""),  # SmolLM2's 2 is no size
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "1.1B", 1_100_000_000, 1_100_000_000, False, None, ""),  # v1.0 after it
    ("bigscience/bloom-7b1", "7b1", 7_100_000_000, 7_100_000_000, False, None, ""),  # BLOOM's 7b1 is 7.1B
    ("google/gemma-3n-E2B-it", "E2B", 2 * B, 2 * B, False, None, EFFECTIVE),  # 3n is a version, E2B effective
    ("google/gemma-3n-e4b-it", "e4b", 4 * B, 4 * B, False, None, EFFECTIVE),  # lower-case E-label
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "135M", 135 * M, 135 * M, False, None, ""),  # Q4_1 is a quant suffix
    ("SmolLM2-135M-Instruct-Q8_0.gguf", "135M", 135 * M, 135 * M, False, None, ""),  # Q8_0 is a quant suffix
    ("Llama-3.1-405B-Instruct", "405B", 405 * B, 405 * B, False, None, ""),  # the 1 of 3.1 is not a token start
    ("openai/gpt-oss-20b", "20b", 20 * B, 20 * B, False, None, ""),  # lower-case b at the end of the id
    ("llama-161M-100B", "161M", 161 * M, 161 * M, False, None, ""),  # 100B is training tokens: first size wins
    # 3T is training tokens and 1431k a step count: only 1.1B is the size
    ("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "1.1B", 1_100 * M, 1_100 * M, False, None, ""),
    ("Qwen/Qwen2.5-7B-Instruct-1M", "7B", 7 * B, 7 * B, False, None, ""),  # 1M is a context length
    ("Qwen/Qwen1.5-0.5B-Chat", "0.5B", 500 * M, 500 * M, False, None, ""),  # 1.5 is a version, 0.5B the size
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "30B-A3B", 30 * B, 3 * B, False, None, ""),  # 2507 is a date
    ("HuggingFaceH4/zephyr-orpo-141b-A35b-v0.1", "141b-A35b", 141 * B, 35 * B, False, None, ""),  # mixed case
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "17B-16E", 17 * B, 17 * B, False, 16, ACTIVE_ONLY),  # 17B is active
    ("mlx-community/Llama-3.2-3B-Instruct-4bit", "3B", 3 * B, 3 * B, False, None, ""),  # 4bit is not 4B
    ("Qwen/Qwen2.5-7B-Instruct-AWQ", "7B", 7 * B, 7 * B, False, None, ""),  # -AWQ is not an -A active count
    ("TheBloke/Llama-2-7B-Chat-GGUF/llama-2-7b-chat.Q4_K_M.gguf", "7B", 7 * B, 7 * B, False, None, ""),  # Q4_K_M's M
    ("Qwen/Qwen2-VL-72B-Instruct-GPTQ-Int4", "72B", 72 * B, 72 * B, False, None, ""),  # Int4 is a quant type
    ("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", "8B", 8 * B, 8 * B, False, None, ""),  # 0528 is a date, R1 a version
    ("EleutherAI/pythia-70m-deduped", "70m", 70 * M, 70 * M, False, None, ""),  # lower-case m is millions
    ("models/llama_7b/ggml-model-q4_0.gguf", "7b", 7 * B, 7 * B, False, None, ""),  # underscore bounds, in a folder
    ("bigscience/bloom-560m", "560m", 560 * M, 560 * M, False, None, ""),  # BLOOM's plain millions
]


@pytest.mark.parametrize(
    ("model_id", "text", "total", "active", "upper_bound", "experts", "warning"),
    ID_CASES,
    ids=[case[0] for case in ID_CASES],
)
def test_find_size_in_id(model_id, text, total, active, upper_bound, experts, warning):
    label = find_size_in_id(model_id)
    assert label is not None
    assert (label.label, label.total_params, label.active_params) == (text, total, active)
    assert (label.upper_bound, label.experts) == (upper_bound, experts)
    _assert_warning(label, warning)


NO_SIZE = [
    "openai-community/gpt2",  # gpt2's 2 is a version with no unit
    "microsoft/phi-2",  # a bare number is a version, not a size
    "microsoft/Phi-3-mini-4k-instruct",  # 4k is a context length, not a size
    "microsoft/Phi-3-mini-128k-instruct",  # 128k is a context length too
    "mistralai/Mistral-Large-Instruct-2407",  # 2407 is a date
    "deepseek-ai/DeepSeek-V3",  # V3 is a version
    "some-model-32k",  # 32k context at the end of the id
    "model-int4-awq-gptq",  # quantization words only
    "model-8bit",  # 8bit is a quantization, not 8B
    "model-1.2.3B",  # a dotted version glued to a unit is not a size
    "model-0B",  # a zero count is skipped, not returned
    "",  # nothing at all
]


@pytest.mark.parametrize("model_id", NO_SIZE, ids=[repr(model_id) for model_id in NO_SIZE])
def test_find_size_in_id_none(model_id):
    assert find_size_in_id(model_id) is None


def _assert_warning(label: SizeLabel, warning: str) -> None:
    if warning:
        assert len(label.warnings) == 1 and warning in label.warnings[0]
        assert label.label in label.warnings[0]
    else:
        assert label.warnings == ()


# Properties. Floats in [0.001, 999] print without an exponent, and 999T stays under the sanity cap.
UNITS = {"B": B, "b": B, "M": M, "m": M, "T": 1_000 * B, "t": 1_000 * B}
LABEL_ALPHABET = "0123456789.xXaAeEbBmMtTkK-_/ q"


@given(st.floats(min_value=0.001, max_value=999), st.sampled_from(sorted(UNITS)))
def test_plain_label_round_trips(x, unit):
    text = f"{x}{unit}"
    expected = round(x * UNITS[unit])
    label = parse_size(text)
    assert (label.label, label.total_params, label.active_params) == (text, expected, expected)
    assert find_size_in_id(f"org/Model-{text}-Instruct.Q4_K_M.gguf") == label


@given(st.integers(min_value=1, max_value=256), st.integers(min_value=1, max_value=999))
def test_experts_label_is_product_upper_bound(experts, size):
    label = parse_size(f"{experts}x{size}B")
    assert label.total_params == label.active_params == experts * size * B
    assert label.upper_bound and label.experts == experts


@given(st.integers(min_value=1, max_value=2000), st.integers(min_value=1, max_value=2000))
def test_total_active_label_is_exact_or_refused(total, active):
    text = f"{total}B-A{active}B"
    if active > total:
        with pytest.raises(NameParseError):
            parse_size(text)
    else:
        assert parse_size(text) == SizeLabel(text, total * B, active * B)


@given(st.one_of(st.text(), st.text(alphabet=LABEL_ALPHABET)))
def test_parse_size_raises_only_name_parse_error(text):
    try:
        label = parse_size(text)
    except NameParseError:
        return
    _assert_sane(label)


@given(st.one_of(st.text(), st.text(alphabet=LABEL_ALPHABET)))
def test_find_size_in_id_never_raises(text):
    label = find_size_in_id(text)
    if label is not None:
        _assert_sane(label)


def _assert_sane(label: SizeLabel) -> None:
    assert type(label.total_params) is int and type(label.active_params) is int
    assert 0 < label.active_params <= label.total_params <= 10**15
