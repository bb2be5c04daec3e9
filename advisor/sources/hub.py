"""Models on the Hugging Face Hub, described from metadata only, through `huggingface_hub`.

One `spec_from_hub` call makes: `model_info(files_metadata=True)` (gated flag, files and sizes, commit),
`hf_hub_download` of config.json (and of the shard index, if any: both small), and one or two range
requests per safetensors shard for its header (`HfApi.parse_safetensors_file_metadata`, the per-shard step of
`get_safetensors_metadata`, done here with the index already in hand and the commit pinned). Tensor data is
never requested.

The metadata is cached as JSON under `advisor.paths.cache_dir()/hub/`, keyed by repo and revision; a second
call is answered from it (branch revisions for a week, commits for ever). With no network (connection
error, timeout, 5xx, `HF_HUB_OFFLINE=1`) the cache is used whatever its age, then the Hugging Face cache;
else `NetworkError`, on which the dispatcher can try the offline catalog.

Settings are read from the environment at call time (HF_ENDPOINT, HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE,
HF_TOKEN through huggingface_hub itself). `ADVISOR_HUB_TIMEOUT` (seconds, default 10) bounds each request.
The token is never logged, cached, or put in a message.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from advisor import hf
from advisor import precision as P
from advisor.errors import (
    AdvisorError,
    ConfigError,
    HeaderError,
    NetworkError,
)
from advisor.fileio import MAX_CONFIG_BYTES, MAX_STATE_BYTES, decode_json, read_json_file, write_atomic
from advisor.paths import cache_dir
from advisor.sources.local import (
    PICKLE_SUFFIXES,
    SAFETENSORS_INDEX,
    HeaderSummary,
    add_header,
    assemble_spec,
    preferred_gguf,
    select_safetensors,
    spec_from_gguf_reader,
)
from advisor.spec import ModelSpec, model_spec_from_json

CACHE_FORMAT = 1
CACHE_TTL_S = 7 * 24 * 3600  # for branch and tag revisions; commits never change
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------------------------
# The metadata cache


def _cache_path(repo_id: str, revision: str) -> Path:
    safe_repo = quote(repo_id.replace("/", "--"), safe="-_.")
    return cache_dir() / "hub" / safe_repo / f"{quote(revision, safe='-_.')}.json"


def _read_cache(repo_id: str, revision: str) -> dict[str, Any] | None:
    path = _cache_path(repo_id, revision)
    try:
        data = read_json_file(path, limit=MAX_STATE_BYTES)
    except (OSError, ValueError):  # unreadable or not JSON: as if absent (the next fetch rewrites it)
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("repo_id") != repo_id:
        return None
    try:
        _build(data, False, [], check_only=True)
    except Exception:  # a hand-edited or half-written cache entry
        return None
    return data


def _write_cache(meta: dict[str, Any], *revisions: str) -> None:
    text = json.dumps(meta, sort_keys=True)
    for revision in dict.fromkeys(r for r in revisions if r):
        path = _cache_path(meta["repo_id"], revision)
        try:
            write_atomic(path, text)
        except OSError:
            pass  # a read-only cache costs a refetch next time, nothing more


def _fresh(meta: dict[str, Any], revision: str) -> bool:
    if _COMMIT.match(revision):
        return True
    return time.time() - float(meta.get("fetched_at", 0)) < CACHE_TTL_S


# ---------------------------------------------------------------------------------------------------------------
# Fetching


def _api(token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hf.endpoint(), token=token, library_name="advisor")


def _siblings(info: Any) -> dict[str, int]:
    """file name -> size in bytes (-1 when the Hub does not say, or says something that is not a size)."""
    out: dict[str, int] = {}
    for sibling in info.siblings or []:
        size = sibling.size if sibling.size is not None else (sibling.lfs.size if sibling.lfs else None)
        name = sibling.rfilename
        if isinstance(name, str) and name:
            out[name] = size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**62 else -1
    return out


def _commit(info: Any, revision: str | None) -> str:
    sha = getattr(info, "sha", None)
    return sha if isinstance(sha, str) and sha else revision or "main"


def _get_bounded(url: str, token: str | None, *, limit: int, range_end: int | None = None) -> bytes:
    """GET `url` (at most `limit` bytes, or the first `range_end` bytes by range request) with ADVISOR_HUB_TIMEOUT
    for every step and 4x it for the whole transfer. No retries: huggingface_hub's downloads retry a 429 after
    sleeping its Retry-After (an hour, if the server says so); advisor falls back to its caches instead."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    timeout = hf.timeout()
    deadline = time.monotonic() + 4 * timeout
    headers = build_hf_headers(token=token, library_name="advisor")
    headers["Accept-Encoding"] = "identity"
    if range_end is not None:
        headers["Range"] = f"bytes=0-{max(range_end, 1) - 1}"
        limit = range_end
    chunks: list[bytes] = []
    got = 0
    with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
        if response.status_code >= 400:
            response.read()
        hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            got += len(chunk)
            if range_end is None and got > limit:  # one byte past the cap: exactly `limit` bytes is still a file
                raise ConfigError(f"'{url.rsplit('/', 1)[-1]}' is over {limit // 2**20} MiB: not a config file.")
            if range_end is not None and got >= limit:
                break  # a server that ignores Range would otherwise send the whole file
            if time.monotonic() > deadline:
                raise TimeoutError(f"the transfer took over {4 * timeout:g}s")
    return b"".join(chunks)[:limit]


def _download_json(repo_id: str, filename: str, sha: str, token: str | None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=sha, endpoint=hf.endpoint())
    raw = _get_bounded(url, token, limit=MAX_CONFIG_BYTES)
    try:
        data = decode_json(raw)
    except ValueError as exc:
        raise ConfigError(
            f"'{filename}' of '{repo_id}' on the Hub is not valid JSON ({hf.scrub(exc, token, 80)}): "
            "report it to the repo, or give a local folder with a fixed copy."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{filename}' of '{repo_id}' on the Hub is not a JSON object.")
    return data


def _read_headers(
    api: Any, repo_id: str, sha: str, shards: list[str], sizes: dict[str, int], token: str | None
) -> HeaderSummary:
    where = f"{repo_id}@{sha[:10]} on the Hub"

    def one(shard: str):
        size = sizes.get(shard, -1)
        if 0 <= size < 8:  # a range request on it would be refused (416): the file itself is the problem
            raise HeaderError(
                f"'{shard}' ({where}) is {size} bytes, too short to be a safetensors file. Re-upload or re-download "
                "it, or use a catalog name."
            )
        try:
            meta = api.parse_safetensors_file_metadata(repo_id, shard, revision=sha, token=token, timeout=hf.timeout())
        except Exception as exc:
            if not _is_corrupt_content(exc):
                raise  # HTTP and transport errors: _translate decides (gated, 404, unreachable...)
            raise _bad_header(shard, where, exc, token) from None
        return shard, meta

    workers = max(1, min(8, len(shards)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, shards))
    summary = HeaderSummary()
    for shard, meta in results:
        try:  # huggingface_hub's parser checks little: a shape may be an int, the metadata nested 900 deep
            tensors = [
                (str(name), str(t.dtype), _listed(t.shape), _listed(t.data_offsets))
                for name, t in dict(meta.tensors).items()
            ]
            floor = _header_length_floor(meta.metadata, tensors)
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise _bad_header(shard, where, exc, token) from None
        size = sizes.get(shard)
        add_header(
            summary,
            shard,
            size if size is not None and size >= 0 else None,
            tensors,
            header_bytes=floor,
            where=where,
        )
    return summary


def _header_length_floor(metadata: dict[str, Any] | None, tensors: list[tuple[str, str, Any, Any]]) -> int:
    """The shortest JSON that encodes this header: the real one (between the 8-byte prefix and the data) is no
    shorter, so `8 + floor + data` bytes must fit in the file."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    for name, dtype, shape, offsets in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    return len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _listed(value: Any) -> Any:
    """A shape or offsets as a list; anything else as it is, for add_header to refuse with the tensor's name."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _is_corrupt_content(exc: BaseException) -> bool:
    """An error about what a file holds (huggingface_hub choking on a header), not about getting it."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, SafetensorsParsingError

    if isinstance(exc, SafetensorsParsingError):
        return False  # _translate words it already
    transport = (AdvisorError, HfHubHTTPError, httpx2.HTTPError, httpx2.TransportError, OSError, TimeoutError)
    return not isinstance(exc, transport)


def _bad_header(shard: str, where: str, exc: BaseException, token: str | None) -> HeaderError:
    reason = hf.scrub(f"{type(exc).__name__}: {exc}", token, 120)
    return HeaderError(
        f"The safetensors header of '{shard}' ({where}) is corrupt ({reason}). Re-upload or re-download the file, "
        "or use a catalog name."
    )


def _hub_summary_header(info: Any, sizes: dict[str, int]) -> HeaderSummary | None:
    """The Hub's own safetensors parameter count, when the headers themselves could not be read."""
    st = getattr(info, "safetensors", None)
    if not st or not st.parameters:
        return None
    params = {str(k): int(v) for k, v in st.parameters.items()}
    return HeaderSummary(
        params_by_dtype=params,
        bytes_by_dtype={d: int(n * P.dtype_bytes(d, default=2)) for d, n in params.items()},
        file_sizes={n: s for n, s in sizes.items() if n.endswith(".safetensors") and s >= 0},
        tensors=1,
    )


def _range_reader(repo_id: str, filename: str, sha: str, token: str | None):
    """read(n) -> the first n bytes of a Hub file, by range request, never more than n bytes."""
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=sha, endpoint=hf.endpoint())

    def read(n: int) -> bytes:
        return _get_bounded(url, token, limit=n, range_end=n)

    return read


def _gguf_spec(repo_id: str, filename: str, total: int, sha: str, token: str | None) -> ModelSpec:
    if total < 24:
        raise HeaderError(
            f"The Hub lists no usable size for '{filename}' of '{repo_id}' ({total}): its header cannot be read by "
            "range request; download the file and pass its path."
        )
    read = _range_reader(repo_id, filename, sha, token)
    return spec_from_gguf_reader(read, total, filename=filename, model_id=repo_id, where=f"{repo_id} on the Hub")


def _fetch(repo_id: str, revision: str | None, token: str | None) -> dict[str, Any]:
    api = _api(token)
    info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=hf.timeout())
    sha = _commit(info, revision)
    sizes = _siblings(info)
    warnings: list[str] = []

    config = _download_json(repo_id, "config.json", sha, token) if "config.json" in sizes else None
    index = _download_json(repo_id, SAFETENSORS_INDEX, sha, token) if SAFETENSORS_INDEX in sizes else None
    shards = select_safetensors(sizes, index)
    header: HeaderSummary | None = None
    missing = [s for s in shards if s not in sizes]
    if missing:
        warnings.append(
            f"The shard index of '{repo_id}' names files the repo lacks (e.g. '{missing[0]}'): "
            "sizes come from the Hub's own summary."
        )
    elif shards:
        header = _read_headers(api, repo_id, sha, shards, sizes, token)
    if header is None:
        header = _hub_summary_header(info, sizes)

    files = {n: s for n, s in sizes.items() if n.endswith((".safetensors", ".gguf")) or n.endswith(PICKLE_SUFFIXES)}
    gguf_spec = None
    ggufs = P.gguf_file_groups({n: s for n, s in sizes.items() if n.endswith(".gguf")})
    if config is None and header is None and ggufs:
        first = preferred_gguf(ggufs)
        gguf_spec = _gguf_spec(repo_id, first, sizes[first], sha, token).to_json()
        warnings.append(f"'{repo_id}' has no config.json: described by its GGUF file '{first}'.")
    if config is None and header is None and not ggufs and info.library_name not in (None, "transformers"):
        warnings.append(f"'{repo_id}' is a {info.library_name} repo, not a transformers checkpoint.")
    if not files and any(n.endswith(".bin") for n in sizes):
        warnings.append("The repo has only pickled weights: advisor never opens them.")

    gated = info.gated
    return {
        "format": CACHE_FORMAT,
        "repo_id": repo_id,
        "revision": revision,
        "sha": sha,
        "fetched_at": time.time(),
        "gated": None if gated is None else bool(gated),
        "library_name": info.library_name,
        "tags": list(info.tags or []),
        "config": config,
        "header": header.to_json() if header is not None else None,
        "files": files,
        "gguf_spec": gguf_spec,
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------------------------
# Building the spec


def _build(meta: dict[str, Any], trust_remote_code: bool, extra: list[str], *, check_only: bool = False) -> ModelSpec:
    """The spec from fetched (or cached) metadata. `check_only`: check the shapes of a cache entry, build nothing."""
    from advisor.sources.crosscheck import cross_check

    sha = meta.get("sha") or "main"
    warnings = [*meta.get("warnings", []), *extra]
    if check_only:
        if not isinstance(sha, str) or not all(isinstance(w, str) for w in warnings):
            raise ValueError("bad sha or warnings")
        if not isinstance(meta.get("files") or {}, dict) or not isinstance(meta.get("config"), (dict, type(None))):
            raise ValueError("bad files or config")
        float(meta.get("fetched_at", 0))
        if meta.get("gguf_spec"):
            model_spec_from_json(meta["gguf_spec"])
        if meta.get("header"):
            HeaderSummary.from_json(meta["header"])
        return None  # type: ignore[return-value]
    if meta.get("gguf_spec"):
        spec = model_spec_from_json(meta["gguf_spec"])
        spec = dataclasses.replace(
            spec, files={**dict(spec.files), **meta.get("files", {})}, revision=sha, gated=meta.get("gated")
        )
        return cross_check(spec.with_warnings(*[w for w in warnings if w not in spec.warnings]))
    header = HeaderSummary.from_json(meta["header"]) if meta.get("header") else None
    spec = assemble_spec(
        meta.get("config"),
        header,
        model_id=meta["repo_id"],
        source="hub",
        trust_remote_code=trust_remote_code,
        files=meta.get("files") or {},
        revision=sha,
        gated=meta.get("gated"),
        warnings=warnings,
        where=f"{meta['repo_id']}@{sha[:10]} on the Hub",
    )
    return cross_check(spec)


def _from_hf_cache(repo_id: str, revision: str | None, trust_remote_code: bool, reason: str) -> ModelSpec | None:
    """The model's snapshot in the Hugging Face cache, if config.json is there."""
    from huggingface_hub import try_to_load_from_cache

    from advisor.sources.local import spec_from_folder

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf.hub_cache_dir(), revision=revision)
    except Exception:
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    spec = spec_from_folder(folder, trust_remote_code=trust_remote_code, model_id=repo_id)
    return dataclasses.replace(spec, revision=folder.name).with_warnings(
        f"The Hub is unreachable ({reason}): '{repo_id}' is described from the Hugging Face cache "
        f"(snapshot {folder.name[:10]})."
    )


def spec_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    token: str | None = None,
    refresh: bool = False,
) -> ModelSpec:
    """A ModelSpec (source "hub") for a Hub repo, from metadata: model info, config.json, safetensors headers.

    `refresh` skips the fresh-cache shortcut (the cache is still the fallback when the Hub is unreachable).
    Raises ModelNotFoundError, GatedModelError, RevisionNotFoundError, HeaderError, ConfigError, NetworkError.
    """
    repo_id = repo_id.strip().strip("/")
    key = revision or "main"
    cached = _read_cache(repo_id, key)
    if cached is not None and not refresh and _fresh(cached, key):
        return _build(cached, trust_remote_code, [])

    hint = "check the connection or HF_ENDPOINT, or use a catalog model"
    if hf.offline():
        reason = "HF_HUB_OFFLINE is set"
        hint = "unset HF_HUB_OFFLINE to go online, or use a catalog model"
    else:
        try:
            meta = _fetch(repo_id, revision, token)
        except Exception as exc:
            mapped = hf.translate(exc, repo_id, revision, token)
            if not isinstance(mapped, hf.Unreachable):
                if mapped is exc:
                    raise
                raise mapped from None
            reason, hint = str(mapped), mapped.hint
        else:
            _write_cache(meta, key, meta.get("sha"))
            return _build(meta, trust_remote_code, [])

    if cached is not None:
        when = time.strftime("%Y-%m-%d", time.localtime(float(cached.get("fetched_at", 0))))
        return _build(cached, trust_remote_code, [f"The Hub is unreachable ({reason}): using metadata cached {when}."])
    local = _from_hf_cache(repo_id, revision, trust_remote_code, reason)
    if local is not None:
        return local
    raise NetworkError(
        f"Cannot reach the Hugging Face Hub for '{repo_id}' ({reason}) and nothing about it is cached: {hint}."
    )


def gguf_specs_from_hub(repo_id: str, *, revision: str | None = None, token: str | None = None) -> dict[str, ModelSpec]:
    """filename -> ModelSpec for each GGUF model in a Hub repo (split files count once, by their first part).

    Reads a growing prefix of each file by range request, just enough for its metadata and tensor table.
    """
    from advisor.sources.crosscheck import cross_check

    repo_id = repo_id.strip().strip("/")
    if hf.offline():
        raise NetworkError(f"HF_HUB_OFFLINE is set: cannot list the GGUF files of '{repo_id}'. Unset it to go online.")
    try:
        info = _api(token).model_info(repo_id, revision=revision, files_metadata=True, timeout=hf.timeout())
        sha = _commit(info, revision)
        sizes = _siblings(info)
        groups = P.gguf_file_groups({n: s for n, s in sizes.items() if n.endswith(".gguf")})
        out: dict[str, ModelSpec] = {}
        for first, (parts, _total) in groups.items():
            spec = _gguf_spec(repo_id, first, sizes[first], sha, token)  # split models: the first part's header
            spec = dataclasses.replace(
                spec,
                revision=sha,
                gated=None if info.gated is None else bool(info.gated),
                files={p: sizes[p] for p in parts},
            )
            out[first] = cross_check(spec)
        return out
    except Exception as exc:
        mapped = hf.translate(exc, repo_id, revision, token)
        if isinstance(mapped, hf.Unreachable):
            raise NetworkError(
                f"Cannot reach the Hugging Face Hub for the GGUF files of '{repo_id}' ({mapped}): {mapped.hint}."
            ) from None
        if mapped is exc:
            raise
        raise mapped from None
