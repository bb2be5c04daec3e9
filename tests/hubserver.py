"""A stand-in for the Hugging Face Hub: the part of its HTTP API that huggingface_hub 2.4 calls for metadata.

Two stdlib `http.server`s in threads on 127.0.0.1, free ports:

* the Hub (`server.url`): `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true`, `?expand=...` /
  `?expand[]=...`), `GET /api/models/{repo}/tree/{rev}[/{path}]`, `HEAD|GET /{repo}/resolve/{rev}/{file}`
  (200/206 for small git files with `ETag` = git blob id; 302 to the CDN for LFS files with `X-Linked-Size`,
  `X-Linked-Etag`, `Location`; `X-Repo-Commit` on both), errors with `X-Error-Code` / `X-Error-Message`
  (`RepoNotFound`, `GatedRepo`, `RevisionNotFound`, `EntryNotFound`);
* the CDN (`server.cdn_url`, another port, so huggingface_hub treats it as a foreign host as it does the real
  one): `HEAD|GET` with `Range` -> 206 + `Content-Range`, or 416.

Files may be *fake-size*: real leading bytes (e.g. a safetensors header) and a declared size; the rest is
synthesised zeros, so a repo can claim 4 shards of 5 GB. Every body byte is counted per (repo, file).

Faults, per repo or per file: "401", "403", "404", "500", "503" (plain status), "gated401", "gated403",
"repo404", "revision404", "entry404" (with X-Error-Code), "429" (with `Retry-After: retry_after`), "garbage"
(200 with a cut JSON body), "slow" (sleep `delay` s first), "truncate" (close after `keep` body bytes), "reset"
(RST after `keep` body bytes), "stall" (stop `delay` s after `keep` body bytes), "bad_length" (Content-Length
`extra` bytes more than sent), "header_past_eof" (safetensors length prefix claims more than the file),
"ignore_range" (200 + the whole body), "drop" (close without answering). `method="GET"` limits a fault to one
HTTP method (a HEAD that passes, then a GET that fails).

The `hub_server` fixture (or `yield from running_hub(monkeypatch)` in a fixture of your own) starts a
server, points HF_ENDPOINT (and huggingface_hub's import-time constants: ENDPOINT, the resolve URL template,
HF_HUB_CACHE, HF_HUB_OFFLINE) at it, yields the `HubServer`, and stops it after the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
MAX_BODY = 64 * 1024 * 1024  # a response longer than this is a test bug: the server cuts it and records it
CHUNK = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------------
# Safetensors and config helpers


def catalog_config(name: str) -> dict[str, Any]:
    """A config from data/configs, by repo id ('Qwen/Qwen2.5-7B') or file stem."""
    path = CONFIGS / (name.replace("/", "__") + ".json")
    return json.loads(path.read_text())


def safetensors_header(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length + JSON header of a safetensors file holding `tensors` (name -> (dtype, shape)).

    Same layout as the safetensors library writes: tensors in order, contiguous offsets, header padded with
    spaces to a multiple of 8.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype] if shape else DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def safetensors_size(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> int:
    data = sum(math.prod(s) * DTYPE_BYTES[d] if s else DTYPE_BYTES[d] for d, s in tensors.values())
    return len(safetensors_header(tensors, metadata)) + data


def write_fake_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """A sparse safetensors file: real header, declared size, no data written. Returns the size."""
    head = safetensors_header(tensors)
    size = safetensors_size(tensors)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return size


def tensors_from_config(config: dict[str, Any], dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """name -> (dtype, shape) of the parameters a transformers model built from `config` saves.

    Built on the meta device (no memory); tied weights appear once, as `save_pretrained` writes them.
    """
    import torch
    import transformers

    cfg_dict = dict(config)
    model_type = cfg_dict.pop("model_type")
    cfg = transformers.AutoConfig.for_model(model_type, **cfg_dict)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return {name: (dtype, list(p.shape)) for name, p in model.named_parameters()}


_TENSOR_CACHE: dict[tuple[str, str], dict[str, tuple[str, list[int]]]] = {}


def catalog_tensors(name: str, dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """`tensors_from_config` of a catalog config, memoised across tests (a copy each time)."""
    key = (name, dtype)
    if key not in _TENSOR_CACHE:
        _TENSOR_CACHE[key] = tensors_from_config(catalog_config(name), dtype)
    return {k: (d, list(s)) for k, (d, s) in _TENSOR_CACHE[key].items()}


def split_shards(tensors: dict[str, tuple[str, list[int]]], n: int) -> list[dict[str, tuple[str, list[int]]]]:
    """Split tensors, in order, into n shards of about equal bytes."""
    sizes = {k: (math.prod(s) if s else 1) * DTYPE_BYTES[d] for k, (d, s) in tensors.items()}
    target = sum(sizes.values()) / n
    shards: list[dict[str, tuple[str, list[int]]]] = [{}]
    acc = 0
    for name, spec in tensors.items():
        if acc >= target * len(shards) and len(shards) < n:
            shards.append({})
        shards[-1][name] = spec
        acc += sizes[name]
    while len(shards) < n:
        shards.append({})
    return shards


def _sha(data: bytes, algo: str = "sha256") -> str:
    return hashlib.new(algo, data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Repos


@dataclass
class HubFile:
    name: str
    data: bytes = b""  # the real leading bytes (the whole file unless `size` is larger)
    size: int = -1  # declared size; bytes past len(data) are zeros
    path: Path | None = None  # or: serve this file from disk
    lfs: bool | None = None  # stored in LFS (served through the CDN); default: weights and files > 10 MB
    st_header: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.size = self.path.stat().st_size
        elif self.size < 0:
            self.size = len(self.data)
        if self.lfs is None:
            self.lfs = self.size > 10_000_000 or self.name.endswith((".safetensors", ".gguf", ".bin", ".pt"))
        if self.st_header is None and self.name.endswith(".safetensors") and self.size >= 8:
            (n,) = struct.unpack("<Q", self.read(0, 8))
            if 8 + n <= self.size and n <= 25_000_000:
                self.st_header = _parse_st_header(self.read(0, 8 + n))
        key = self.read(0, 4096) + str(self.size).encode()
        self.sha256 = _sha(key + self.name.encode())
        self.blob_id = _sha(b"blob %d\0" % self.size + key, "sha1")

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file, zeros past the real data."""
        end = min(end, self.size)
        if start >= end:
            return b""
        if self.path is not None:
            with open(self.path, "rb") as fh:
                fh.seek(start)
                return fh.read(end - start)
        real = self.data[start:end]
        return real + b"\0" * (end - start - len(real))


def _parse_st_header(prefix: bytes) -> dict[str, Any] | None:
    if len(prefix) < 8:
        return None
    (n,) = struct.unpack("<Q", prefix[:8])
    if 8 + n > len(prefix):
        return None
    try:
        header = json.loads(prefix[8 : 8 + n])
    except (ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


@dataclass
class Fault:
    kind: str
    delay: float = 5.0
    keep: int = 16
    extra: int = 1000
    times: int | None = None  # apply this many times, then stop (None: always)
    method: str | None = None  # apply only to this HTTP method ("GET", "HEAD"); None: every method
    retry_after: str | None = "3600"  # the Retry-After header of a "429"


@dataclass
class HubRepo:
    repo_id: str
    sha: str
    files: dict[str, HubFile] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    gated: bool | str = False  # False | "auto" | "manual": resolve needs an accepted token
    private: bool = False  # everything needs an accepted token
    tokens: set[str] = field(default_factory=set)  # tokens with access
    library_name: str | None = "transformers"
    tags: list[str] = field(default_factory=lambda: ["transformers", "safetensors", "text-generation"])
    faults: dict[str | None, Fault] = field(default_factory=dict)  # None: whole repo; "api": model info; file name

    # -- building ------------------------------------------------------------------------------------------
    def add_file(self, name: str, data: bytes = b"", *, size: int = -1, path: Path | None = None, lfs=None) -> HubFile:
        f = HubFile(name=name, data=data, size=size, path=path, lfs=lfs)
        self.files[name] = f
        return f

    def add_json(self, name: str, obj: Any) -> HubFile:
        return self.add_file(name, json.dumps(obj, indent=2).encode(), lfs=False)

    def add_safetensors(self, name: str, tensors: dict[str, tuple[str, list[int]]]) -> HubFile:
        """A fake-size safetensors file: real header, declared data never materialised."""
        return self.add_file(name, safetensors_header(tensors), size=safetensors_size(tensors))

    def add_sharded(self, tensors: dict[str, tuple[str, list[int]]], shards: int) -> list[HubFile]:
        """model-0000i-of-0000n.safetensors + model.safetensors.index.json, as save_pretrained writes them."""
        if shards == 1:
            return [self.add_safetensors("model.safetensors", tensors)]
        out = []
        weight_map = {}
        for i, part in enumerate(split_shards(tensors, shards), 1):
            name = f"model-{i:05d}-of-{shards:05d}.safetensors"
            out.append(self.add_safetensors(name, part))
            weight_map.update(dict.fromkeys(part, name))
        total = sum(f.size for f in out)
        self.add_json("model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
        return out

    def fault(self, kind: str | None, file: str | None = None, **opts: Any) -> None:
        """Switch a fault on (kind=None: off) for the whole repo, for "api" (model info only), or for one file."""
        if kind is None:
            self.faults.pop(file, None)
        else:
            self.faults[file] = Fault(kind, **opts)

    # -- what the API reports -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any] | None:
        f = self.files.get("config.json")
        if f is None:
            return None
        try:
            return json.loads(f.read(0, f.size))
        except ValueError:
            return None

    def safetensors_summary(self) -> dict[str, Any] | None:
        params: dict[str, int] = defaultdict(int)
        for f in self.files.values():
            if f.st_header and "/" not in f.name:
                for key, t in f.st_header.items():
                    if key == "__metadata__":
                        continue
                    try:  # a deliberately corrupt header (the fuzz tests serve those) has no summary
                        params[str(t["dtype"])] += int(math.prod(t["shape"])) if t["shape"] else 1
                    except (TypeError, KeyError, ValueError, OverflowError):
                        continue
        return {"parameters": dict(params), "total": sum(params.values())} if params else None

    def resolve(self, rev: str) -> str | None:
        if rev == self.sha or rev in self.revisions.values():
            return rev
        return self.revisions.get(rev)


# ---------------------------------------------------------------------------------------------------------------
# The server


class _Abort(Exception):
    """Stop answering this request and close the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1"
    timeout = 30
    hub: HubServer
    role: str

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.hub._track(self.connection, False)

    # -- plumbing ------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self.method = method
        parts = urlsplit(self.path)
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
        self.token = token
        self.hub._log(method, self.path, self.headers.get("Range"), token, self.role)
        try:
            if self.role == "cdn":
                self._cdn(unquote(parts.path))
            elif parts.path.startswith("/api/models/"):
                self._api(parts.path[len("/api/models/") :], parse_qs(parts.query))
            elif "/resolve/" in parts.path:
                self._resolve(parts.path)
            else:
                self._error(404, None, f"No route for {parts.path}")
        except _Abort:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"", *, count: tuple[str, str] | None = None):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.method != "HEAD" and body:
            self.wfile.write(body)
            if count:
                self.hub._count(count, len(body))

    def _json(self, obj: Any, *, count: tuple[str, str], status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self._send(status, {"Content-Type": "application/json"}, body, count=count)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode())

    # -- faults --------------------------------------------------------------------------------------------
    def _fault(self, repo: HubRepo, *scopes: str | None) -> Fault | None:
        """Apply the first matching fault. Returns it when it changes the body (caller handles), else None."""
        for scope in scopes:
            fault = repo.faults.get(scope)
            if fault is None:
                continue
            if fault.method is not None and fault.method != self.method:
                continue
            if fault.times is not None:
                if fault.times <= 0:
                    continue
                fault.times -= 1
            kind = fault.kind
            status_faults = {
                "401": (401, None, "Unauthorized"),
                "403": (403, None, "Forbidden"),
                "404": (404, None, "Not Found"),
                "500": (500, None, "Internal Error"),
                "503": (503, None, "Service Unavailable"),
                "repo404": (404, "RepoNotFound", "Repository not found"),
                "gated401": (401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. Please log in."),
                "gated403": (403, "GatedRepo", f"Access to model {repo.repo_id} is restricted: not authorized."),
                "revision404": (404, "RevisionNotFound", "Invalid rev id"),
                "entry404": (404, "EntryNotFound", "Entry not found"),
            }  # fmt: skip
            if kind in status_faults:
                status, code, message = status_faults[kind]
                self._error(status, code, message, {"X-Repo-Commit": repo.sha} if code == "EntryNotFound" else None)
                raise _Done
            if kind == "429":  # rate limited: huggingface_hub's downloads sleep Retry-After seconds, then retry
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._error(429, None, "You have been rate-limited; you can retry this action later.", extra)
                raise _Done
            if kind == "garbage":  # 200 with a body that is not what the API promises
                self._send(200, {"Content-Type": "application/json"}, b'{"id": [1, 2, {"siblings": "nope"')
                raise _Done
            if kind == "slow":
                self.hub._stopping.wait(fault.delay)
                continue
            if kind == "drop":
                raise _Abort
            return fault
        return None

    # -- the API -------------------------------------------------------------------------------------------
    def _repo_or_error(self, repo_id: str, *, files: bool) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.private and self.token not in repo.tokens:
            if self.token is None:
                self._error(401, "RepoNotFound", "Invalid username or password.")
            else:
                self._error(404, "RepoNotFound", "Repository not found")
            return None
        if files and repo.gated and self.token not in repo.tokens:
            if self.token is None:
                self._error(
                    401, "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and be authenticated.",
                )  # fmt: skip
            else:
                self._error(
                    403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the authorized list."
                )
            return None
        return repo

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        m = re.match(r"^(?P<repo>.+?)/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", rest)
        repo_id, kind, rev = (m["repo"], m["kind"], unquote(m["rev"])) if m else (rest.rstrip("/"), "info", "main")
        repo = self.hub.repos.get(repo_id)
        if repo is not None:
            try:
                self._fault(repo, None, "api")
            except _Done:
                return
        repo = self._repo_or_error(repo_id, files=False)
        if repo is None:
            return
        sha = repo.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if kind == "tree":
            self._tree(repo, sha, (m["path"] or "") if m else "")
        elif kind == "paths-info":
            self._error(404, None, "paths-info is not served by the stand-in")
        else:
            self._info(repo, sha, query)

    def _info(self, repo: HubRepo, sha: str, query: dict[str, list[str]]) -> None:
        blobs = (query.get("blobs") or ["false"])[0].lower() == "true"
        expand = query.get("expand", []) + query.get("expand[]", [])
        siblings = []
        for f in repo.files.values():
            entry: dict[str, Any] = {"rfilename": f.name}
            if blobs:
                entry.update(blobId=f.blob_id, size=f.size)
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        config = repo.config() or {}
        namespace = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        data: dict[str, Any] = {
            "_id": _sha(repo.repo_id.encode())[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": namespace,
            "sha": sha,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "private": repo.private,
            "disabled": False,
            "gated": repo.gated,
            "downloads": 0,
            "likes": 0,
            "library_name": repo.library_name,
            "tags": list(repo.tags),
            "pipeline_tag": "text-generation",
            "config": {k: config[k] for k in ("architectures", "model_type", "quantization_config") if k in config},
            "cardData": {},
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in repo.files.values()),
        }
        summary = repo.safetensors_summary()
        if summary:
            data["safetensors"] = summary
        if expand:
            data = {k: v for k, v in data.items() if k in expand or k in ("_id", "id")}
        self._json(data, count=(repo.repo_id, "<api>"))

    def _tree(self, repo: HubRepo, sha: str, path: str) -> None:
        prefix = path.strip("/")
        entries = []
        dirs = set()
        for f in repo.files.values():
            if prefix and not f.name.startswith(prefix + "/"):
                continue
            rest = f.name[len(prefix) + 1 :] if prefix else f.name
            if "/" in rest:
                dirs.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.name}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": _sha(d.encode(), "sha1"), "size": 0, "path": d} for d in sorted(dirs)]
        self._json(entries, count=(repo.repo_id, "<api>"))

    # -- files ---------------------------------------------------------------------------------------------
    def _resolve(self, path: str) -> None:
        m = re.match(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
        if not m:
            self._error(404, None, "bad resolve path")
            return
        repo_id, rev, filename = m["repo"], unquote(m["rev"]), unquote(m["file"])
        repo = self.hub.repos.get(repo_id)
        fault = None
        if repo is not None:
            try:
                fault = self._fault(repo, None, filename)
            except _Done:
                return
        repo = self._repo_or_error(repo_id, files=True)
        if repo is None:
            return
        sha = repo.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        f = repo.files.get(filename)
        if f is None:
            self._error(404, "EntryNotFound", f'{filename} does not exist on "{rev}"', {"X-Repo-Commit": sha})
            return
        common = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if f.lfs:
            location = f"{self.hub.cdn_url}/{quote(repo.repo_id)}/{quote(f.name)}"
            headers = {
                **common,
                "Location": location,
                "X-Linked-Size": str(f.size),
                "X-Linked-Etag": f'"{f.sha256}"',
                "ETag": f'"{f.blob_id}"',
            }
            self._send(302, headers, b"")
            return
        self._body(repo, f, {**common, "ETag": f'"{f.blob_id}"'}, fault)

    def _cdn(self, path: str) -> None:
        repo = f = None
        for repo_id, candidate in self.hub.repos.items():  # the repo id may itself hold a slash
            name = path[len(repo_id) + 2 :]
            if path.startswith(f"/{repo_id}/") and name in candidate.files:
                repo, f = candidate, candidate.files[name]
                break
        if repo is None or f is None:
            self._send(404, {"Content-Type": "text/plain"}, b"NoSuchKey")
            return
        try:
            fault = self._fault(repo, None, f.name)
        except _Done:
            return
        self._body(repo, f, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"}, fault)

    def _body(self, repo: HubRepo, f: HubFile, headers: dict[str, str], fault: Fault | None) -> None:
        size = f.size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and not (fault and fault.kind == "ignore_range"):
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m[1] == "" and m[2] == ""):
                self._send(416, {"Content-Range": f"bytes */{size}"})
                return
            if m[1] == "":
                start, end = max(0, size - int(m[2])), size
            else:
                start = int(m[1])
                end = min(int(m[2]) + 1, size) if m[2] else size
            if start >= size:
                self._send(416, {"Content-Range": f"bytes */{size}"})
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        length = end - start
        declared = length + (fault.extra if fault and fault.kind == "bad_length" else 0)
        send_upto = length
        if fault and fault.kind == "truncate":
            send_upto = min(length, fault.keep)
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(declared), "Content-Type": "application/octet-stream"}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.method == "HEAD":
            return
        key = (repo.repo_id, f.name)
        sent = 0
        pos = start
        cut = fault.keep if fault and fault.kind in ("reset", "stall") else None
        while sent < send_upto:
            if cut is not None and sent >= cut:
                self.wfile.flush()
                if fault.kind == "reset":  # RST instead of FIN: the client reads ECONNRESET mid-body
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    raise _Abort
                self.hub._stopping.wait(fault.delay)  # "stall": the body stops for `delay` s, then goes on
                cut = None
            if sent >= MAX_BODY:
                self.hub.violations.append(f"{f.name}: body cut at {MAX_BODY} bytes (range {rng!r})")
                raise _Abort
            n = min(CHUNK, send_upto - sent, (cut - sent) if cut is not None else CHUNK)
            chunk = f.read(pos, pos + n)
            if fault and fault.kind == "header_past_eof" and pos < 8:
                claimed = struct.pack("<Q", size + 4096)
                chunk = bytearray(chunk)
                for i in range(pos, min(8, pos + len(chunk))):
                    chunk[i - pos] = claimed[i]
                chunk = bytes(chunk)
            self.wfile.write(chunk)
            self.hub._count(key, len(chunk))
            sent += len(chunk)
            pos += len(chunk)
        if send_upto < declared:
            self.wfile.flush()
            raise _Abort


class _Done(Exception):
    """The fault answered the request."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (or resets) mid-request is part of the faults under test: no stack dump."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class HubServer:
    """The stand-in Hub plus its CDN. Add repos with `add_repo`; read `bytes_served` after a call."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.bytes_served: dict[tuple[str, str], int] = defaultdict(int)
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.cdn_url = ""

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> HubServer:
        for role in ("hub", "cdn"):
            handler = type(f"_{role}Handler", (_Handler,), {"hub": self, "role": role})
            server = _Server(("127.0.0.1", 0), handler)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
            url = f"http://127.0.0.1:{server.server_address[1]}"
            if role == "hub":
                self.url = url
            else:
                self.cdn_url = url
        return self

    def stop(self) -> None:
        """Stop both servers and cut open keep-alive connections: afterwards every request is refused."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._servers.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- repos ---------------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        *,
        config: dict[str, Any] | str | None = None,
        tensors: dict[str, tuple[str, list[int]]] | None = None,
        shards: int = 1,
        gated: bool | str = False,
        private: bool = False,
        tokens: set[str] | None = None,
        branches: dict[str, str] | None = None,
        library_name: str | None = "transformers",
    ) -> HubRepo:
        """A repo with config.json (a dict, or a catalog id such as 'Qwen/Qwen2.5-7B') and fake-size shards."""
        sha = _sha(f"{repo_id}@{len(self.repos)}".encode(), "sha1")
        repo = HubRepo(
            repo_id=repo_id,
            sha=sha,
            gated=gated,
            private=private,
            tokens=set(tokens or ()),
            library_name=library_name,
            revisions={"main": sha, **(branches or {})},
        )
        repo.add_json(".gitattributes", {"note": "*.safetensors filter=lfs"})
        if isinstance(config, str):
            config = catalog_config(config)
        if config is not None:
            repo.add_json("config.json", config)
        if tensors:
            repo.add_sharded(tensors, shards)
        self.repos[repo_id] = repo
        return repo

    # -- counters ------------------------------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self.bytes_served.values())

    def file_bytes(self, repo_id: str) -> dict[str, int]:
        with self._lock:
            return {f: n for (r, f), n in self.bytes_served.items() if r == repo_id}

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()

    def _count(self, key: tuple[str, str], n: int) -> None:
        with self._lock:
            self.bytes_served[key] += n

    def _log(self, method: str, path: str, rng: str | None, token: str | None, role: str) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "range": rng, "token": token, "role": role})

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)


# ---------------------------------------------------------------------------------------------------------------
# The fixture


def running_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """Start a stand-in Hub; point HF_ENDPOINT and huggingface_hub's import-time constants at it; stop it after.

    A generator for `yield from` in a fixture; `hub_server` below is the same as a ready-made fixture.
    """
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import close_session

    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if os.environ.get("HF_HUB_CACHE"):
        monkeypatch.setattr(constants, "HF_HUB_CACHE", os.environ["HF_HUB_CACHE"])
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    close_session()  # no pooled connection from an earlier test
    try:
        yield server
    finally:
        server.stop()
        close_session()


# The fixture, for a conftest.py to import (`from hubserver import hub_server`, with noqa F401).
hub_server = pytest.fixture(name="hub_server")(running_hub)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
