"""Models on disk: a folder with config.json and safetensors weights, and the Hugging Face cache.

Only headers are read: the 8-byte length and the JSON header of each safetensors file (checked with the
`safetensors` library, which maps the file and reads no tensor data), and the metadata prefix of GGUF files.
Pickled checkpoints (.bin, .pt, .pth, .ckpt) are never opened: unpickling runs arbitrary code.

Also home to the pieces `advisor.sources.hub` shares: header summaries and the spec assembly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor import precision as P
from advisor.errors import (
    ConfigError,
    HeaderError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from advisor.fileio import MAX_CONFIG_BYTES, decode_json, open_regular, read_json_file
from advisor.sources import keys as K
from advisor.spec import KVLayout, ModelSpec
from advisor.textutil import one_line, safe

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_OFFSET = 1 << 62  # 4 EiB: past any file; larger numbers (a shape of 10**400) break float arithmetic later
SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_SAFETENSORS_HEADER = 100_000_000  # the format's own limit
GGUF_FIRST_READ = 2 * 1024 * 1024
GGUF_MAX_PREFIX = 256 * 1024 * 1024
_ROUTED_EXPERT = re.compile(r"\.experts\.|\.experts_|block_sparse_moe\.experts|\.mlp\.experts")
_SHARED_EXPERT = re.compile(r"shared_expert")


# ---------------------------------------------------------------------------------------------------------------
# Header summaries


@dataclass
class HeaderSummary:
    """What the safetensors headers of one checkpoint say, summed over its shards."""

    params_by_dtype: dict[str, int] = field(default_factory=dict)
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    file_sizes: dict[str, int] = field(default_factory=dict)  # shard -> bytes on disk
    tensors: int = 0
    routed_expert_params: int = 0

    @property
    def total_params(self) -> int:
        return sum(self.params_by_dtype.values())

    @property
    def checkpoint_bytes(self) -> int:
        return sum(self.file_sizes.values())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeaderSummary:
        return cls(
            params_by_dtype={str(k): int(v) for k, v in data.get("params_by_dtype", {}).items()},
            bytes_by_dtype={str(k): int(v) for k, v in data.get("bytes_by_dtype", {}).items()},
            file_sizes={str(k): int(v) for k, v in data.get("file_sizes", {}).items()},
            tensors=int(data.get("tensors", 0)),
            routed_expert_params=int(data.get("routed_expert_params", 0)),
        )


def add_header(
    summary: HeaderSummary,
    filename: str,
    file_size: int | None,
    tensors: Iterable[tuple[str, str, list[int], tuple[int, int]]],
    *,
    header_bytes: int | None = None,
    where: str,
) -> None:
    """Add one shard's tensors (name, dtype, shape, (begin, end)) to `summary`, checking them against the file."""
    max_end = 0
    count = 0
    for name, dtype, shape, offsets in tensors:
        try:
            begin, end = int(offsets[0]), int(offsets[1])
            numel = 1
            for dim in shape:
                if int(dim) < 0:
                    raise ValueError("negative dimension")
                numel *= int(dim)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
            reason = one_line(exc, 120)
            raise HeaderError(
                f"The safetensors header of '{filename}' ({where}) is corrupt at tensor '{name}': {reason}. "
                "Re-download the file."
            ) from None
        if begin < 0 or end < begin or end > _MAX_OFFSET or numel > _MAX_OFFSET:
            raise HeaderError(
                f"The safetensors header of '{filename}' ({where}) gives tensor '{name}' the offsets "
                f"[{begin}, {end}] and {numel} elements. Re-download the file."
            )
        dtype = str(dtype)
        bits = P.DTYPE_BITS.get(dtype)
        if bits is not None and numel * bits != (end - begin) * 8:  # the safetensors library's own rule
            raise HeaderError(
                f"The safetensors header of '{filename}' ({where}) gives tensor '{name}' {numel} {dtype} elements "
                f"in {end - begin} bytes. Re-download the file."
            )
        summary.params_by_dtype[dtype] = summary.params_by_dtype.get(dtype, 0) + numel
        summary.bytes_by_dtype[dtype] = summary.bytes_by_dtype.get(dtype, 0) + (end - begin)
        if _ROUTED_EXPERT.search(name) and not _SHARED_EXPERT.search(name):
            summary.routed_expert_params += numel
        max_end = max(max_end, end)
        count += 1
    if file_size is not None:
        data_start = 8 + (header_bytes or 0)
        if data_start + max_end > file_size:
            raise HeaderError(
                f"The safetensors header of '{filename}' ({where}) needs {data_start + max_end} bytes but the file "
                f"has {file_size}: it is truncated or corrupt. Re-download it."
            )
        summary.file_sizes[filename] = int(file_size)
    else:
        summary.file_sizes[filename] = 8 + (header_bytes or 0) + max_end
    summary.tensors += count


def parse_header_json(raw: bytes, filename: str, where: str) -> dict[str, Any]:
    try:
        header = decode_json(bytes(raw))
    except ValueError as exc:
        raise HeaderError(
            f"The safetensors header of '{filename}' ({where}) is not valid JSON ({exc}): the file is truncated "
            "or corrupt. Re-download it."
        ) from None
    if not isinstance(header, dict):
        raise HeaderError(f"The safetensors header of '{filename}' ({where}) is not a JSON object. Re-download it.")
    return header


def header_tensors(header: dict[str, Any], filename: str, where: str):
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or "dtype" not in info or "shape" not in info or "data_offsets" not in info:
            raise HeaderError(
                f"The safetensors header of '{filename}' ({where}) lacks dtype/shape/offsets for '{name}'. "
                "Re-download the file."
            )
        yield name, info["dtype"], info["shape"], info["data_offsets"]


def read_local_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and its length; reads the first 8 + n bytes only."""
    where = f"in {path.parent}"
    try:
        fh = open_regular(path)
    except OSError as exc:
        raise HeaderError(f"'{path}' cannot be read ({exc.strerror or exc}): re-download it.") from None
    size = os.fstat(fh.fileno()).st_size
    with fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise HeaderError(f"'{path}' is {size} bytes, too short to be a safetensors file. Re-download it.")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise HeaderError(
                f"The safetensors header of '{path.name}' ({where}) claims {n} bytes but the file has {size}: "
                "it is truncated or corrupt. Re-download it."
            )
        raw = fh.read(n)
    header = parse_header_json(raw, path.name, where)
    # Let the safetensors library validate the layout too (it maps the file; no tensor data is read).
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            keys = set(handle.keys())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # SafetensorError, an OSError from the mapping, or a Rust panic (BaseException)
        raise HeaderError(
            f"safetensors rejects '{path.name}' ({where}): {' '.join(str(exc).split())[:200]}. Re-download it."
        ) from None
    listed = {k for k in header if k != "__metadata__"}
    if keys != listed:
        raise HeaderError(
            f"The header of '{path.name}' ({where}) and the safetensors library disagree on its tensors. "
            "Re-download it."
        )
    return header, n


# ---------------------------------------------------------------------------------------------------------------
# Spec assembly, shared with the Hub source


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) and text else config


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def _count(cfg: dict[str, Any], *keys: str) -> int | None:
    """The first of `keys` holding a whole positive number (as an int); fields of another kind are skipped."""
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and value.is_integer() and 0 < value < 2**63:
            return int(value)
        if isinstance(value, int) and 0 < value < 2**63:  # 10**400 would overflow floats later
            return value
    return None


def _name(value: Any) -> str | None:
    """A string field, or the first string of a list field (architectures)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def spec_from_counts(
    config: dict[str, Any] | None,
    header: HeaderSummary,
    *,
    model_id: str,
    source: str,
    reason: str,
) -> ModelSpec:
    """A spec from header totals when no model can be built: exact total, no layer breakdown."""
    config = config if isinstance(config, dict) else {}
    cfg = _text_config(config)
    total = header.total_params
    layers = _count(cfg, *K.LAYERS)
    hidden = _count(cfg, *K.HIDDEN)
    heads = _count(cfg, *K.HEADS)
    kv_heads = _count(cfg, *K.KV_HEADS)
    if kv_heads is None and cfg.get("multi_query") is True:
        kv_heads = 1
    if kv_heads is None:
        kv_heads = heads
    head_dim = _count(cfg, "head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads or None
    experts = _count(cfg, *K.EXPERTS)
    per_token = _count(cfg, *K.TOP_K)
    if experts and per_token and per_token > experts:
        per_token = None
    warnings = [reason + " Parameter totals come from the safetensors headers; the per-layer breakdown is missing."]
    active = total
    if experts and per_token and header.routed_expert_params:
        active = total - int(header.routed_expert_params * (1 - per_token / experts))
    elif experts and per_token:
        warnings.append("Active parameters per token are unknown: the model is priced as dense (slower).")
    kv = None
    if layers and kv_heads and head_dim:
        kv = KVLayout(full_elements=2 * layers * kv_heads * head_dim, full_layers=layers)
    quantized = bool(config.get("quantization_config"))
    packed = any(d in ("I32", "U8", "I8") for d in header.params_by_dtype)
    if packed and quantized:
        warnings.append("Packed quantized tensors: the header total counts storage elements, not parameters.")
    window = _count(cfg, "sliding_window")
    dtype = _first(cfg, "torch_dtype", "dtype") or _first(config, "torch_dtype", "dtype")
    return ModelSpec(
        id=model_id,
        source=source,
        exact=not (packed and quantized),
        total_params=total,
        active_params=active,
        architecture=_name(cfg.get("architectures")) or _name(config.get("architectures")),
        model_type=_name(config.get("model_type")),
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=_count(cfg, *K.INTERMEDIATE),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_count(cfg, *K.VOCAB),
        max_context=_count(cfg, *K.CONTEXT),
        sliding_window=window,
        num_experts=experts,
        experts_per_token=per_token,
        native_dtype=dtype if isinstance(dtype, str) else None,
        tied_embeddings=cfg.get("tie_word_embeddings") is True,
        kv=kv,
        warnings=tuple(warnings),
    )


def assemble_spec(
    config: dict[str, Any] | None,
    header: HeaderSummary | None,
    *,
    model_id: str,
    source: str,
    trust_remote_code: bool = False,
    files: dict[str, int] | None = None,
    revision: str | None = None,
    gated: bool | None = None,
    warnings: Iterable[str] = (),
    where: str,
) -> ModelSpec:
    """config.json (architecture) + safetensors headers (what is on disk) -> one ModelSpec."""
    from advisor.sources.quantized import describe_quantization

    if header is not None and header.tensors == 0:
        header = None
    spec: ModelSpec
    if config is not None:
        from advisor.sources.config import spec_from_config

        try:
            spec = spec_from_config(config, model_id=model_id, source=source, trust_remote_code=trust_remote_code)
        except UnsupportedArchitectureError as exc:
            if header is None:
                raise
            spec = spec_from_counts(config, header, model_id=model_id, source=source, reason=str(exc))
    elif header is not None:
        spec = spec_from_counts(None, header, model_id=model_id, source=source, reason=f"No config.json {where}.")
    else:
        pickles = sorted(n for n in (files or {}) if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelNotFoundError(
                f"'{safe(model_id)}' ({where}) holds only pickled weights ({', '.join(pickles[:3])}) and no "
                "config.json: advisor never opens pickles by default (--allow-pickle lets bench and chat load them "
                "from a folder that has its config.json); convert them to safetensors, or point advisor at the "
                "model's own folder."
            )
        raise ModelNotFoundError(
            f"'{safe(model_id)}' ({where}) has no config.json, safetensors or GGUF file: point advisor at a model "
            "folder."
        )

    updates: dict[str, Any] = {}
    extra = list(warnings)
    if header is not None:
        updates.update(
            checkpoint_bytes=header.checkpoint_bytes,
            checkpoint_params_by_dtype=dict(sorted(header.params_by_dtype.items())),
            checkpoint_bytes_by_dtype=dict(sorted(header.bytes_by_dtype.items())),
        )
    try:
        label, loadable, qwarn = describe_quantization(config or {}, header.params_by_dtype if header else {})
    except ConfigError as exc:
        raise ConfigError(f"The config of '{model_id}' ({where}): {exc}") from None
    if label is not None:
        updates["quantization"] = label
        updates["loadable_precisions"] = loadable
    extra.extend(qwarn)
    if files:
        updates["files"] = dict(files)
    if revision is not None:
        updates["revision"] = revision
    if gated is not None:
        updates["gated"] = gated
    spec = dataclasses.replace(spec, **updates)
    return spec.with_warnings(*[w for w in extra if w not in spec.warnings])


def select_safetensors(names: Iterable[str], index: dict[str, Any] | None) -> list[str]:
    """Which safetensors files make up the checkpoint: the index's shards, else model*.safetensors, else all."""
    names = sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)
    if index is not None:
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            return sorted(set(map(str, weight_map.values())))
    preferred = [n for n in names if n.startswith("model")]
    return preferred or names


# ---------------------------------------------------------------------------------------------------------------
# GGUF prefixes


def spec_from_gguf_reader(
    read: Callable[[int], bytes], total_size: int, *, filename: str, model_id: str, where: str
) -> ModelSpec:
    """Read a growing prefix of a GGUF file until `spec_from_gguf_prefix` has all of its header."""
    from advisor.sources.gguf import GGUFPrefixTooShort, spec_from_gguf_prefix

    want = min(GGUF_FIRST_READ, total_size)
    while True:
        prefix = read(want)
        if len(prefix) < want:
            raise HeaderError(
                f"Only {len(prefix)} of the first {want} bytes of '{filename}' ({where}) arrived: the file is "
                "shorter than its listed size, or the transfer was cut. Try again, or re-download it."
            )
        try:
            return spec_from_gguf_prefix(prefix, total_size, filename=filename, model_id=model_id)
        except GGUFPrefixTooShort as exc:
            if want >= total_size or want >= GGUF_MAX_PREFIX:
                raise HeaderError(
                    f"The GGUF header of '{filename}' ({where}) runs past {want:,} bytes: the file is truncated "
                    "or corrupt. Re-download it."
                ) from None
            suggested = int(getattr(exc, "suggested_size", 0) or 0)
            want = min(max(suggested, 2 * want), total_size, GGUF_MAX_PREFIX)


def preferred_gguf(groups: dict[str, tuple[list[str], int]]) -> str:
    """The GGUF to describe a repo by: Q4_K_M if there is one, else the median size."""
    for pattern in ("q4_k_m", "q4_k", "q4_0", "q5_k_m", "q8_0"):
        for name in groups:
            if pattern in name.lower():
                return name
    ordered = sorted(groups, key=lambda n: groups[n][1])
    return ordered[len(ordered) // 2]


# ---------------------------------------------------------------------------------------------------------------
# Local folders


def _load_config(path: Path) -> dict[str, Any]:
    try:
        config = read_json_file(path, limit=MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"Cannot read '{path}': {exc.strerror or exc}. Check its permissions.") from None
    except ValueError as exc:
        raise ConfigError(f"'{path}' is not valid JSON ({exc}). Fix or re-download it.") from None
    if not isinstance(config, dict):
        raise ConfigError(f"'{path}' is not a JSON object. Fix or re-download it.")
    return config


def _local_gguf_spec(path: Path, model_id: str) -> ModelSpec:
    from advisor.sources.gguf import spec_from_gguf

    return spec_from_gguf(path, model_id=model_id)


def spec_from_folder(
    path: str | os.PathLike, *, trust_remote_code: bool = False, model_id: str | None = None
) -> ModelSpec:
    """A ModelSpec (source "local") from a folder: config.json plus safetensors headers, or either alone.

    `model_id` names the model in the spec (default: the folder's name). Pickled weights are listed by size
    and never opened. A folder with only GGUF files is described by its preferred GGUF's header.
    """
    from advisor.sources.crosscheck import cross_check

    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelNotFoundError(f"No such folder '{path}': check the path, or give a Hub id or a catalog name.")
    if folder.is_file():
        if folder.suffix == ".gguf":
            return cross_check(_local_gguf_spec(folder, model_id or folder.name))
        raise ModelNotFoundError(f"'{path}' is a file: give the folder that holds config.json and the weights.")
    name = model_id or folder.resolve().name
    where = f"in {folder}"

    entries: dict[str, int] = {}
    for entry in sorted(folder.iterdir()):
        try:
            if entry.is_file():  # follows the symlinks of a Hugging Face cache snapshot
                entries[entry.name] = entry.stat().st_size
        except OSError:
            continue

    config = _load_config(folder / "config.json") if "config.json" in entries else None
    warnings: list[str] = []
    index = _load_config(folder / SAFETENSORS_INDEX) if SAFETENSORS_INDEX in entries else None
    shards = select_safetensors(entries, index)
    header: HeaderSummary | None = None
    present = [s for s in shards if s in entries]
    missing = [s for s in shards if s not in entries]
    if missing:
        warnings.append(
            f"{len(missing)} of {len(shards)} safetensors shards are missing {where} (e.g. '{missing[0]}'): "
            "checkpoint sizes come from config.json alone."
        )
    elif present:
        header = HeaderSummary()
        for shard in present:
            shard_path = folder / shard
            raw, n = read_local_safetensors_header(shard_path)
            add_header(header, shard, entries[shard], header_tensors(raw, shard, where), header_bytes=n, where=where)

    files = {n: s for n, s in entries.items() if n.endswith(".safetensors") or n.endswith(".gguf")}
    pickles = {n: s for n, s in entries.items() if n.endswith(PICKLE_SUFFIXES)}
    if pickles:
        files.update(pickles)
        warnings.append(
            f"{', '.join(sorted(pickles)[:3])}{' ...' if len(pickles) > 3 else ''} {where}: pickled weights are never "
            "opened (unpickling runs code); only their file sizes are used."
        )

    ggufs = P.gguf_file_groups(entries)
    if config is None and header is None and ggufs:
        first = preferred_gguf(ggufs)
        spec = _local_gguf_spec(folder / first, name)
        spec = dataclasses.replace(spec, files={**dict(spec.files), **files})
        return cross_check(spec.with_warnings(*warnings))

    spec = assemble_spec(
        config,
        header,
        model_id=name,
        source="local",
        trust_remote_code=trust_remote_code,
        files=files,
        warnings=warnings,
        where=where,
    )
    if header is None and pickles and spec.checkpoint_bytes is None and not ggufs:
        spec = dataclasses.replace(spec, checkpoint_bytes=sum(pickles.values()))
    return cross_check(spec)


# ---------------------------------------------------------------------------------------------------------------
# The Hugging Face cache


def list_cached_models(cache_dir: str | os.PathLike | None = None) -> list[tuple[str, ModelSpec | Exception]]:
    """Every model repo in the Hugging Face cache, described from its newest snapshot (or the one `main` names).

    Each entry is (repo id, spec) or (repo id, the error that stopped it); a broken repo does not stop the list.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from advisor.hf import hub_cache_dir

    root = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    out: list[tuple[str, ModelSpec | Exception]] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified)
        main = [r for r in revisions if "main" in r.refs]
        revision = main[-1] if main else revisions[-1]
        try:
            spec = spec_from_folder(revision.snapshot_path, model_id=repo.repo_id)
            out.append((repo.repo_id, dataclasses.replace(spec, revision=revision.commit_hash)))
        except Exception as exc:  # one unreadable repo must not hide the others
            out.append((repo.repo_id, exc))
    return out
