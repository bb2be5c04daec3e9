"""The GGUF header reader: `gguf.GGUFReader` with every read bounded, and nothing but the header read.

The 24-byte preamble (magic, version, counts) is checked with `struct` first, so a forged count never
allocates, and every header read is held inside the file (or the prefix fetched from the Hub), so a
truncated or corrupt header fails as a one-line `HeaderError` instead of an IndexError deep in numpy.
Arrays are walked without GGUFReader's per-item parsing. `advisor.sources.gguf` maps what this returns
(`Header`: metadata fields and tensor shapes) to a ModelSpec.

`import gguf` happens inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import tempfile
import warnings as _warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from advisor.errors import AdvisorError, HeaderError
from advisor.fileio import open_regular
from advisor.textutil import first_line

PREAMBLE = 24  # magic u32, version u32, tensor count u64, metadata key count u64
_MIN_TENSOR_INFO = 24  # name length u64, n_dims u32, type u32, offset u64 (empty name, no dims)
_MIN_KV = 13  # key length u64, value type u32, a one-byte value
MAX_TENSORS = 1 << 20  # real models have a few thousand (old per-expert MoE files: tens of thousands)
MAX_KV = 1 << 16  # real models have a few dozen
MAX_HEADER_BYTES = 1 << 30  # real headers (tokenizer included) are a few MB
MAX_ARRAY_LEN = 1 << 24  # real arrays (vocabularies, merges) hold well under a million items
MAX_LAYERS = 1 << 16
_MAX_NESTING = 8  # arrays of arrays: llama.cpp writes none; 8 levels is generous
_MAX_WALKED = 1 << 25  # strings and nested arrays walked per header (real tokenizers: a few hundred thousand)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MIB = 1 << 20


class GGUFPrefixTooShort(AdvisorError):
    """The first bytes of a remote GGUF file end inside its header: fetch `suggested_size` bytes."""

    def __init__(self, filename: str, have_bytes: int, needed_bytes: int, suggested_size: int) -> None:
        self.filename = filename
        self.have_bytes = have_bytes
        self.needed_bytes = needed_bytes  # the header runs at least this far
        self.suggested_size = suggested_size
        super().__init__(
            f"'{filename}': the first {have_bytes:,} bytes end inside the GGUF header (it runs to byte "
            f"{needed_bytes:,} at least): fetch the first {suggested_size:,} bytes."
        )


class _PastLimit(Exception):
    """A header read ran past the readable bytes (end of file, end of prefix, or MAX_HEADER_BYTES)."""

    def __init__(self, end: int) -> None:
        super().__init__(end)
        self.end = end


class _DataPastEnd(Exception):
    def __init__(self, end: int) -> None:
        super().__init__(end)
        self.end = end


class _Absurd(Exception):
    pass


@dataclass(frozen=True)
class Array:
    """A metadata array kept only by length (strings, nested, or too long to be a per-layer list)."""

    length: int


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # GGMLQuantizationType name
    shape: tuple[int, ...]  # GGUF order: ne0 (the contiguous dimension) first
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class Header:
    fields: dict[str, Any]
    tensors: tuple[Tensor, ...]
    data_offset: int


def _suggest(have: int, needed: int, total_size: int) -> int:
    """Double what we had, or half again what we know is needed, rounded up to a MiB."""
    want = max(2 * have, needed + needed // 2, _MIB)
    want = -(-want // _MIB) * _MIB
    return min(want, total_size)


def _check_preamble(head: bytes, size: int, name: str) -> tuple[int, int, int]:
    """Magic, version and counts from the first 24 bytes, before GGUFReader sees the file."""
    if head[:4] != b"GGUF":
        if len(head) < 4:
            raise HeaderError(f"'{name}' is not a GGUF file (only {len(head)} bytes): check the path.")
        raise HeaderError(f"'{name}' is not a GGUF file (bad magic {head[:4]!r}): check the path or re-download it.")
    if len(head) < PREAMBLE:
        raise HeaderError(f"'{name}' is truncated (only {len(head)} bytes, less than a GGUF preamble): re-download it.")
    order = "<"
    (version,) = struct.unpack_from("<I", head, 4)
    if version & 0xFFFF == 0:  # written on a big-endian machine (GGUFReader's own test)
        order = ">"
        (version,) = struct.unpack_from(">I", head, 4)
    if version == 1:
        raise HeaderError(
            f"'{name}' is GGUF version 1, an early-2023 format llama.cpp no longer reads: "
            "download a current conversion."
        )
    if version not in (2, 3):
        raise HeaderError(
            f"'{name}' is GGUF version {version}, which advisor cannot read (versions 2 and 3): "
            "upgrade the gguf package or check the file."
        )
    n_tensors, n_kv = struct.unpack_from(order + "QQ", head, 8)
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV or PREAMBLE + n_tensors * _MIN_TENSOR_INFO + n_kv * _MIN_KV > size:
        raise HeaderError(
            f"'{name}' is truncated or corrupt: its header claims {n_tensors:,} tensors and {n_kv:,} metadata keys, "
            f"which cannot fit in its {size:,} bytes: re-download it."
        )
    return version, n_tensors, n_kv


def read_local(path: Path) -> Header:
    name = str(path)
    try:
        with open_regular(path) as f:  # a FIFO would block GGUFReader's open forever
            size = os.fstat(f.fileno()).st_size
            head = f.read(PREAMBLE)
    except OSError as e:
        raise HeaderError(f"'{name}' cannot be read ({e.strerror or e}): check its permissions.") from None
    _check_preamble(head, size, name)
    try:
        return _read_header(path, name, header_limit=min(size, MAX_HEADER_BYTES), file_size=size)
    except _PastLimit as e:
        if e.end > size:
            raise _past_end(name, e.end, size) from None
        raise _header_too_big(name, e.end) from None


def _past_end(name: str, end: int, size: int) -> HeaderError:
    return HeaderError(
        f"'{name}' is truncated or corrupt: its header runs to byte {end:,} but the file holds {size:,} bytes: "
        "re-download it."
    )


def _header_too_big(name: str, end: int) -> HeaderError:
    return HeaderError(
        f"'{name}' is corrupt: a header field runs to byte {end:,}, past the {MAX_HEADER_BYTES:,} bytes "
        "any real GGUF header needs: re-download it."
    )


@lru_cache(maxsize=1)
def _reader_class() -> type:
    """GGUFReader with every read held inside the header limit (raises _PastLimit) or the file.

    Arrays are read without GGUFReader's per-item parsing, which builds two numpy views and a few list entries
    per item (a 1 MB file holding one array of a million bytes took 11 s and 700 MB): an array of numbers is one
    view; an array of strings (a tokenizer) is walked with `struct`, keeping only its length; nested arrays are
    walked the same way, at most `_MAX_NESTING` deep.
    """
    import numpy as np
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType

    itemsizes: dict[Any, int] = {}
    scalar_types = {int(t): d for t, d in GGUFReader.gguf_scalar_to_np.items()}
    scalar_sizes = {t: int(np.dtype(d).itemsize) for t, d in scalar_types.items()}
    string_type, array_type = int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)
    min_sizes = {**scalar_sizes, string_type: 8, array_type: 12}

    class BoundedReader(GGUFReader):
        def __init__(self, path: Path, header_limit: int, file_size: int) -> None:
            self._header_limit = header_limit
            self._file_size = file_size
            self._in_data = False
            self._walked = 0
            super().__init__(path, "r")

        def _get(self, offset, dtype, count=1, override_order=None):  # type: ignore[override]
            size = itemsizes.get(dtype)
            if size is None:
                size = itemsizes[dtype] = int(np.dtype(dtype).itemsize)
            end = int(offset) + size * int(count)
            if self._in_data:
                if end > self._file_size:
                    raise _DataPastEnd(end)
            elif end > self._header_limit:
                raise _PastLimit(end)
            return super()._get(offset, dtype, count, override_order)

        def _get_field_parts(self, orig_offs, raw_type):  # type: ignore[override]
            if int(raw_type) != array_type:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            item_type, length = int(raw_itype[0]), int(alen[0])
            end = self._skip_items(orig_offs + 12, item_type, length, depth=1)
            parts: list[Any] = [raw_itype, alen]
            types = [GGUFValueType.ARRAY]
            if length:
                types.append(GGUFValueType(item_type))
                if item_type in scalar_types and length <= MAX_LAYERS:  # values kept only for per-layer lists
                    parts.append(self._get(orig_offs + 12, scalar_types[item_type], length))
            return end - orig_offs, parts, [], types

        def _skip_items(self, offs: int, item_type: int, length: int, depth: int) -> int:
            """The offset just past `length` items of `item_type` starting at `offs`, every read bounded."""
            if length > MAX_ARRAY_LEN:
                raise _Absurd(f"a metadata array claims {length:,} items")
            if length and item_type not in min_sizes:
                raise _Absurd(f"a metadata array holds items of unknown type {item_type}")
            end = offs + length * min_sizes.get(item_type, 1)  # at least this far
            if end > self._header_limit:
                raise _PastLimit(end)
            if item_type in scalar_sizes or not length:
                return end
            self._walked += length
            if self._walked > _MAX_WALKED:
                raise _Absurd(f"the metadata holds over {_MAX_WALKED:,} strings or nested arrays")
            order = "<" if (self.byte_order == "I") == (sys.byteorder == "little") else ">"
            limit = self._header_limit
            view = memoryview(self.data)
            if item_type == string_type:
                u64 = struct.Struct(order + "Q").unpack_from
                for _ in range(length):
                    if offs + 8 > limit:
                        raise _PastLimit(offs + 8)
                    offs += 8 + u64(view, offs)[0]
                if offs > limit:
                    raise _PastLimit(offs)
                return offs
            if depth >= _MAX_NESTING:
                raise _Absurd(f"metadata arrays nested more than {_MAX_NESTING} deep")
            head = struct.Struct(order + "IQ").unpack_from
            for _ in range(length):
                if offs + 12 > limit:
                    raise _PastLimit(offs + 12)
                sub_type, sub_length = head(view, offs)
                offs = self._skip_items(offs + 12, sub_type, sub_length, depth + 1)
            return offs

        def _build_tensors(self, start_offs, fields):  # type: ignore[override]
            self._in_data = True  # tensor views span the data region: check them against the file
            return super()._build_tensors(start_offs, fields)

    return BoundedReader


def _read_header(path: Path, name: str, *, header_limit: int, file_size: int) -> Header:
    import numpy as np

    reader_cls = _reader_class()
    # numpy warns (to stderr) on the uint64 overflow a forged tensor offset causes; the checks below catch it.
    with np.errstate(all="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return _read_header_quietly(reader_cls, path, name, header_limit=header_limit, file_size=file_size)


def _read_header_quietly(reader_cls: type, path: Path, name: str, *, header_limit: int, file_size: int) -> Header:
    from gguf.constants import GGML_QUANT_SIZES

    try:
        reader = reader_cls(path, header_limit, file_size)
        fields = {
            key: _field_value(f, keep_arrays=not key.startswith("tokenizer."))
            for key, f in reader.fields.items()
            if not key.startswith("GGUF.")
        }
        tensors = []
        for t in reader.tensors:
            shape = tuple(int(d) for d in t.shape)
            if len(shape) > _MAX_DIMS:
                raise _Absurd(f"tensor {t.name!r} has {len(shape)} dimensions")
            n = math.prod(shape)
            block, type_size = GGML_QUANT_SIZES[t.tensor_type]
            n_bytes = n * type_size // block
            # The offset as stored, added in Python ints: GGUFReader's uint64 sum wraps a forged offset near 2**64
            # back into the file, where it would pass.
            start = int(reader.data_offset) + int(t.field.parts[5][0])
            if start + n_bytes > file_size:
                raise _DataPastEnd(start + n_bytes)
            tensors.append(Tensor(t.name, t.tensor_type.name, shape, n, n_bytes))
        data_offset = int(reader.data_offset)
        del reader
    except (_PastLimit, HeaderError):
        raise
    except _DataPastEnd as e:
        raise HeaderError(
            f"'{name}' is truncated: its tensor data run to byte {e.end:,} but the file holds {file_size:,}: "
            "re-download it."
        ) from None
    except _Absurd as e:
        raise HeaderError(f"'{name}' is corrupt ({e}): re-download it.") from None
    except Exception as e:  # anything GGUFReader raises on a malformed header
        detail = first_line(e, 160)
        raise HeaderError(f"'{name}' has a corrupt GGUF header ({detail}): re-download it.") from None
    return Header(fields=fields, tensors=tuple(tensors), data_offset=data_offset)


def _field_value(field: Any, *, keep_arrays: bool) -> Any:
    from gguf.constants import GGUFValueType

    if not field.types:
        return None
    main = field.types[0]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", "replace")
    if main == GGUFValueType.ARRAY:
        # parts: key length, key, value type, item type, item count, then (numbers only) the values as one array
        length = int(field.parts[4][0])
        sub = field.types[1] if len(field.types) > 1 else None
        if not keep_arrays or sub is None or sub in (GGUFValueType.STRING, GGUFValueType.ARRAY) or length > MAX_LAYERS:
            return Array(length)
        return tuple(field.parts[5].tolist())
    return field.parts[-1].tolist()[0]


def read_prefix(prefix: bytes, total_size: int, filename: str) -> Header:
    """The header from the first bytes of a GGUF file whose full size is `total_size` (GGUFPrefixTooShort, with
    `suggested_size`, when the header runs past them). The prefix is written into a sparse temporary file of the
    real size, so GGUFReader's offset checks hold; tensor data are never read."""
    prefix = bytes(prefix)
    have = len(prefix)
    if total_size < PREAMBLE:
        raise HeaderError(f"'{filename}' is not a GGUF file (only {total_size} bytes): check the file name.")
    if have > total_size:
        raise HeaderError(
            f"'{filename}': got {have:,} bytes but the file is said to hold {total_size:,}: re-fetch its size."
        )
    if have < PREAMBLE:
        if prefix[:4] != b"GGUF"[:have]:
            _check_preamble(prefix, total_size, filename)  # raises bad magic
        raise GGUFPrefixTooShort(filename, have, PREAMBLE, _suggest(have, PREAMBLE, total_size))
    _check_preamble(prefix[:PREAMBLE], total_size, filename)

    with tempfile.TemporaryDirectory(prefix="advisor-gguf-", ignore_cleanup_errors=True) as tmp:
        sparse = Path(tmp) / "prefix.gguf"
        with open(sparse, "wb") as f:
            f.write(prefix)
            f.truncate(total_size)  # a hole, not written zeros
        try:
            return _read_header(sparse, filename, header_limit=min(have, MAX_HEADER_BYTES), file_size=total_size)
        except _PastLimit as e:
            if e.end > total_size:
                raise _past_end(filename, e.end, total_size) from None
            if e.end > MAX_HEADER_BYTES:
                raise _header_too_big(filename, e.end) from None
            raise GGUFPrefixTooShort(filename, have, e.end, _suggest(have, e.end, total_size)) from None
