"""Read parameter counts from size labels ('8B', '8x7B', '141B-A35B') and from Hub ids.

Pure string work: no I/O and nothing beyond the standard library, so any module may import it.

Decisions on labels that do not state a total exactly:
- 'NxM' (8x7B): total = N * M as an upper bound (experts share attention and embeddings, so
  Mixtral 8x7B holds 46.7B, not 56B). The label says nothing about how many experts run per
  token, so active is set to the total and a warning says so.
- 'E2B' (Gemma 3n): an *effective* count; the stored weights are larger. Total = active = 2B,
  with a warning.
- 'A2.7B' alone and Llama 4's '17B-16E': only the active count is known. `find_size_in_id`
  returns total = active = that count with a warning that the real total is larger;
  `parse_size` refuses them, because a label typed by a user should state a total.
"""

from __future__ import annotations

import re

from advisor.errors import NameParseError
from advisor.spec import SizeLabel
from advisor.textutil import clean, shorten

__all__ = ["find_size_in_id", "parse_size"]

# K is deliberately absent: '4k' and '128k' in ids are context lengths, never sizes.
_UNITS = {"m": 1e6, "b": 1e9, "t": 1e12}

# A thousand times the largest open model; stops '99…9B' from overflowing into inf.
_MAX_PARAMS = 10**15
_MAX_DIGITS = 15

_EXPECTED = "expected forms like 8B, 1.5B, 135M, 8x7B or 141B-A35B."

# One count: '8B', '1.5b', '135M', '1T', or BLOOM's '7b1' (= 7.1B). BLOOM's form comes first so
# that '7b1' is not cut to '7b' and then rejected by the end-of-token check.
_SIZE = r"(?:\d+[bmt]\d+|\d+(?:\.\d+)?[bmt])"

# Alternatives are tried in order at each position, so the longer MoE forms win over a plain size.
_LABEL = re.compile(
    rf"""
    (?<![a-z0-9])(?<!\d\.)                          # start of a token, and not the '1' of '3.1'
    (?:
        (?P<experts>\d+)x(?P<expert_size>{_SIZE})   # 8x7B: N experts of M each
      | (?P<total>{_SIZE})[-_]a(?P<active>{_SIZE})  # 141B-A35B: total, then active per token
      | e(?P<effective>{_SIZE})                     # E2B: Gemma 3n's effective count
      | a(?P<active_only>{_SIZE})                   # A2.7B: active count without the total
      | (?P<plain>{_SIZE})(?:[-_](?P<routed>\d+)e)? # 8B, or 17B-16E (17B active, 16 experts)
    )
    (?![a-z0-9])                                    # end of a token: rejects '4bit', '8b16k'
    """,
    re.VERBOSE | re.IGNORECASE | re.ASCII,
)

_COUNT = re.compile(r"(\d+)(?:\.(\d+))?([bmt])(\d*)", re.IGNORECASE | re.ASCII)

_UPPER_BOUND_WARNING = (
    "{label} is an upper bound: experts share attention and embeddings, so the true total is smaller "
    "(Mixtral 8x7B holds 46.7B, not 56B); the label does not say how many experts run per token, so "
    "the active count is taken as the total."
)
_EFFECTIVE_WARNING = (
    "{label} is an effective count, not the stored one: the checkpoint holds more parameters "
    "(per-layer embeddings), so the real total is larger and unknown."
)
_ACTIVE_ONLY_WARNING = (
    "{label} gives only the active count per token: the total over all experts is larger and "
    "unknown, so it is taken as the active count; read the config for the real figure."
)


class _BadSize(ValueError):
    """A label of the right shape that cannot describe a model (zero, absurd, active > total)."""


def parse_size(text: str) -> SizeLabel:
    """Read a bare label ('8B', '7b1', '8x7B', '141B-A35B', 'E2B') or raise NameParseError."""
    match = _LABEL.fullmatch(text.strip())
    if match is None:
        raise NameParseError(f"Cannot read size label {_shown(text)}: {_EXPECTED}")
    try:
        return _label_from(match, allow_active_only=False)
    except _BadSize as exc:
        raise NameParseError(f"Cannot read size label {_shown(text)}: {exc}; {_EXPECTED}") from None


def _shown(text: str) -> str:
    """The label as typed (quoted, whitespace kept), without control characters, at most 80 characters."""
    return repr(shorten(clean(text), 80))


def find_size_in_id(model_id: str) -> SizeLabel | None:
    """Find the size label inside a Hub id or file name; None when the name states no size."""
    # The first readable size wins: a later plain size is a training-token count
    # ('llama-161M-100B', 'TinyLlama-1.1B-...-3T') or a context length ('Qwen2.5-7B-Instruct-1M').
    # Known miss: OLMoE-1B-7B (1B active, 7B total) reads as 1B, the same shape as llama-161M-100B.
    for match in _LABEL.finditer(model_id):
        try:
            return _label_from(match, allow_active_only=True)
        except _BadSize:
            continue
    return None


def _label_from(match: re.Match[str], *, allow_active_only: bool) -> SizeLabel:
    label = match.group(0)
    if match["experts"]:
        experts = _whole(match["experts"])
        total = _checked(experts * _count(match["expert_size"]))
        warning = _UPPER_BOUND_WARNING.format(label=label)
        return SizeLabel(label, total, total, upper_bound=True, experts=experts, warnings=(warning,))
    if match["total"]:
        total, active = _count(match["total"]), _count(match["active"])
        if active > total:
            raise _BadSize("the active count is larger than the total")
        return SizeLabel(label, total, active)
    if match["effective"]:
        effective = _count(match["effective"])
        warning = _EFFECTIVE_WARNING.format(label=label)
        return SizeLabel(label, effective, effective, warnings=(warning,))

    if match["active_only"]:
        active, experts = _count(match["active_only"]), None
    elif match["routed"]:
        active, experts = _count(match["plain"]), _whole(match["routed"])
    else:
        total = _count(match["plain"])
        return SizeLabel(label, total, total)
    if not allow_active_only:
        raise _BadSize("it gives only the active count; state the total too, as in 30B-A3B")
    warning = _ACTIVE_ONLY_WARNING.format(label=label)
    return SizeLabel(label, active, active, experts=experts, warnings=(warning,))


def _count(token: str) -> int:
    """'1.5B' -> 1_500_000_000; BLOOM's '7b1' -> 7_100_000_000."""
    match = _COUNT.fullmatch(token)
    assert match is not None, token  # _LABEL only hands over tokens of this shape
    whole, fraction, unit, bloom_fraction = match.groups()
    if len(whole.lstrip("0")) > _MAX_DIGITS:
        raise _BadSize("the count is implausibly large")
    number = float(f"{whole}.{fraction or bloom_fraction or 0}")
    return _checked(round(number * _UNITS[unit.lower()]))  # round() of a float is already an int


def _whole(digits: str) -> int:
    """An expert count, refused when zero or long enough to hit int()'s digit limit."""
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise _BadSize("the expert count is implausibly large")
    return _checked(int(digits))


def _checked(count: int) -> int:
    if count <= 0:
        raise _BadSize("a model cannot have zero parameters")
    if count > _MAX_PARAMS:
        raise _BadSize("the count is implausibly large")
    return count
