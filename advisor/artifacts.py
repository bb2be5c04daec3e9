"""Fetching what an engine loads: the files behind a model name, for the runtime that will run it.

- transformers loads a model folder: a local folder as it is, a Hub repo's snapshot (safetensors, configs and
  tokenizer; pickles only with `allow_pickle`), or a GGUF file dequantized once into a safetensors folder in
  advisor's cache;
- llama.cpp loads a GGUF file: a local one, the embedded model's, one file of a Hub repo (downloaded alone), or
  a type made from one of those by llama.cpp's own quantizer, kept in advisor's cache.

Artefacts built in the cache are made under a per-process temporary name, checked, renamed into place, and
guarded by a file lock, so two `advisor bench` runs at once share the work instead of breaking each other; a
damaged artefact (a truncated file) is found by its check and built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

from advisor import precision as P
from advisor.engines.base import Artifact, EngineError
from advisor.errors import ModelNotFoundError, RuntimeLoadError, UsageError
from advisor.fileio import locked
from advisor.paths import cache_dir, embedded_gguf
from advisor.spec import ModelSpec
from advisor.textutil import first_line, safe

# Files a transformers load needs; pickles (*.bin, *.pt) only with allow_pickle.
SAFE_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt", "*.tiktoken"]
CONVERTED = "converted"
QUANTIZED = "quantized"


def file_key(path: Path) -> str:
    """A short key for a file's identity and version: its resolved path, size and modification time."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Artefacts built in the cache


def _sweep_partials(folder: Path) -> None:
    """Remove what killed builds left in `folder` (temporary names whose process is gone)."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(".*.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_once(target: Path, build, check) -> Path:
    """`target` in advisor's cache, built by `build(tmp)` into a temporary path of this process and renamed into
    place under a file lock, unless `check(target)` finds a good one already. A damaged one is moved aside and
    built again; an interrupted build (Ctrl-C, a kill) leaves nothing behind that a later run would use."""
    if check(target):
        return target
    with locked(target):
        _sweep_partials(target.parent)
        if check(target):  # another process built it while this one waited
            return target
        if target.exists():
            aside = target.with_name(f".{target.name}.damaged-{os.getpid()}")
            os.replace(target, aside)  # a process still reading the old one keeps its open files
            _remove(aside)
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        _remove(tmp)
        try:
            build(tmp)
            if not check(tmp):
                raise RuntimeLoadError(f"advisor built {target.name} but it failed its own check")
            os.replace(tmp, target)
        finally:
            _remove(tmp)
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, OSError):
            path.unlink()


def safetensors_ok(path: Path) -> bool:
    """Whether a safetensors file is whole: its header parses and the file holds every byte it declares."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                return False
            (n,) = struct.unpack("<Q", prefix)
            if n > 100_000_000 or 8 + n > size:
                return False
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        return 8 + n + end == size
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def _converted_ok(folder: Path) -> bool:
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return safetensors_ok(folder / "model.safetensors") and (folder / "tokenizer_config.json").is_file()


def convert_gguf(path: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (fp32) in the cache; returns the folder.

    transformers loads GGUF by dequantizing it, but refuses to save such a model, so the state dict goes through
    safetensors directly and the config is written without its GGUF marker.
    """
    target = cache_dir() / CONVERTED / f"{path.stem}-{file_key(path)}"

    def build(tmp: Path) -> None:
        import torch
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from advisor.hf import quiet

        tmp.mkdir(parents=True)
        try:
            with quiet():
                tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            config["dtype"] = "float32"
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": path.name})
            tokenizer.save_pretrained(tmp)
            model.generation_config.save_pretrained(tmp)
        except Exception as exc:
            raise RuntimeLoadError(
                f"Cannot convert GGUF file '{safe(path)}' for transformers: {first_line(exc)}"
            ) from None

    return build_once(target, build, _converted_ok)


def gguf_ok(path: Path) -> bool:
    """Whether a GGUF file made here is whole: its header reads and its tensors end inside the file."""
    try:
        from advisor.sources.gguf import spec_from_gguf

        spec = spec_from_gguf(path)
        return bool(spec.checkpoint_bytes) and spec.checkpoint_bytes <= path.stat().st_size
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Sources


def hub_snapshot(repo_id: str, *, revision: str | None = None, allow_pickle: bool = False) -> Path:
    """The repo's files a transformers load needs, downloaded into the Hugging Face cache (or found there)."""
    from huggingface_hub import snapshot_download

    from advisor import hf

    patterns = SAFE_PATTERNS + (["*.bin", "*.pt"] if allow_pickle else [])
    try:
        with hf.bounded_retry_waits():
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise hf.download_error(exc, repo_id, revision, "the files") from None


def hub_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """One file of a Hub repo (a GGUF of one quantization), downloaded alone into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    from advisor import hf

    try:
        with hf.bounded_retry_waits():
            return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:
        raise hf.download_error(exc, repo_id, revision, f"'{safe(filename)}'") from None


def local_folder(path: Path, *, model_id: str, allow_pickle: bool = False) -> Path:
    if not allow_pickle and not list(path.glob("*.safetensors")) and list(path.glob("*.bin")):
        raise RuntimeLoadError(
            f"Folder '{safe(model_id)}' holds only pickled weights (*.bin), which advisor does not load by "
            "default: convert them to safetensors, or pass --allow-pickle if you trust the files."
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"Folder '{safe(model_id)}' has no config.json: point at a transformers model folder.")
    return path


# ---------------------------------------------------------------------------------------------------------------
# The dispatcher


def _source_gguf(model: str | None, spec: ModelSpec, *, revision: str | None) -> tuple[Path, str]:
    """(the GGUF file `model` names, origin) for the llama.cpp runtime or for a conversion."""
    if model is None:
        return embedded_gguf(), "embedded"
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file '{safe(model)}' does not exist (or is not a file): check the path.")
        return path, "gguf"
    if path.is_dir():
        groups = P.gguf_file_groups({p.name: p.stat().st_size for p in path.iterdir() if p.is_file()})
        read = _read_gguf_name(spec, groups)
        if read:
            return path / read, "gguf"
        raise EngineError(
            f"Folder '{safe(model)}' holds no GGUF file for llama.cpp: run it with --runtime transformers, or give "
            "a .gguf file."
        )
    groups = P.gguf_file_groups({n: s for n, s in spec.files.items() if n.endswith(".gguf")})
    read = _read_gguf_name(spec, groups)
    if read:
        parts = groups[read][0]
        paths = [hub_file(model, part, revision=revision) for part in parts]
        return paths[0], "hub"
    raise EngineError(
        f"'{safe(model)}' has no GGUF file for llama.cpp: give a .gguf file or a GGUF repo (for example one named "
        f"'<org>/{safe(model.split('/')[-1], 60)}-GGUF'), or pass --runtime transformers."
    )


def _read_gguf_name(spec: ModelSpec, groups: dict[str, tuple[list[str], int]]) -> str | None:
    """The GGUF file (first part) the spec was read from, else the only one, else None."""
    if not groups:
        return None
    from advisor.costmodel.memory import gguf_read_file

    read = gguf_read_file(spec)
    if read in groups:
        return read
    return next(iter(groups)) if len(groups) == 1 else None


def fetch(
    model: str | None,
    spec: ModelSpec,
    *,
    runtime: str,
    precision: str,
    revision: str | None = None,
    allow_pickle: bool = False,
) -> Artifact:
    """What `runtime` must load to run `model` (None: the embedded model) in `precision`: downloaded, converted
    or quantized as needed. `spec` is the one `sources.resolve` gave for `model` (it lists a repo's files)."""
    model_id = spec.id
    if spec.source == "label":
        raise UsageError(
            f"'{safe(model)}' is a size label, not a model: name a Hub id, a folder or a .gguf file to load it."
        )
    if spec.source == "config":
        raise UsageError(
            f"'{safe(model)}' is a config.json alone, with no weights: give the model's folder or its Hub id."
        )
    if runtime == "llama.cpp":
        return _fetch_gguf(model, spec, precision=precision, revision=revision)
    path = Path(model).expanduser() if model is not None else None
    is_gguf = (
        model is None
        or model.lower().endswith(".gguf")
        or (
            (spec.quantization or "").startswith("gguf")
            and not (path is not None and path.is_dir() and (path / "config.json").is_file())
        )
    )
    if is_gguf:
        gguf, origin = _source_gguf(model, spec, revision=revision)
        return Artifact(model_id, convert_gguf(gguf), runtime, "embedded" if origin == "embedded" else "converted")
    if path is not None and path.is_dir():
        folder = local_folder(path, model_id=model or model_id, allow_pickle=allow_pickle)
        return Artifact(model_id, folder, runtime, "local", allow_pickle=allow_pickle)
    repo = spec.id if spec.source in ("catalog", "hub") else model
    folder = hub_snapshot(repo, revision=revision, allow_pickle=allow_pickle)
    return Artifact(model_id, folder, runtime, "hub", allow_pickle=allow_pickle)


def _fetch_gguf(model: str | None, spec: ModelSpec, *, precision: str, revision: str | None) -> Artifact:
    prec = P.get(precision, spec)
    if prec.runtime != "llama.cpp":
        raise EngineError(f"Precision '{precision}' runs on transformers, not llama.cpp: pass --runtime transformers.")
    if precision.lower().startswith(P.GGUF_PREFIX):  # another file of the same repo or folder
        name = precision[len(P.GGUF_PREFIX) :]
        path = Path(model).expanduser() if model else None
        if path is not None and path.is_dir():
            return Artifact(spec.id, path / name, "llama.cpp", "gguf")
        if path is not None and model.lower().endswith(".gguf"):
            return Artifact(spec.id, path.with_name(name), "llama.cpp", "gguf")
        return Artifact(spec.id, hub_file(model or spec.id, name, revision=revision), "llama.cpp", "hub")
    source, origin = _source_gguf(model, spec, revision=revision)
    if precision == P.GGUF_FILE:
        return Artifact(spec.id, source, "llama.cpp", origin)
    return Artifact(spec.id, quantized_gguf(source, prec), "llama.cpp", "quantized",
                    note=f"made here from {source.name} by llama.cpp's quantizer")  # fmt: skip


# GGUF tensor types that hold the weights as they are: a quantizer reads them without rounding twice.
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}


def quantized_gguf(source: Path, prec: P.Precision) -> Path:
    """`source` in `prec`'s llama.cpp file type, made by llama.cpp's own quantizer and kept in the cache. A source
    that is itself quantized is first written back to F32 (gguf-py dequantizes it exactly), so every type is
    made from the same weights by llama.cpp's own recipe, never by quantizing twice."""
    from advisor.engines import llamacpp

    ftype = llamacpp.file_type_name(prec)
    folder = cache_dir() / QUANTIZED / f"{source.stem}-{file_key(source)}"
    base = source
    if not _tensor_types(source) <= _FLOAT_TYPES:
        base = dequantized_gguf(source, folder / f"{source.stem}.F32.gguf")
    if ftype == "F32" and base != source:
        return base
    target = folder / f"{source.stem}.{ftype}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> None:
        llamacpp.quantize(base, tmp, ftype)

    return build_once(target, build, gguf_ok)


def _tensor_types(path: Path) -> set[str]:
    from gguf import GGUFReader

    return {t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def dequantized_gguf(source: Path, target: Path) -> Path:
    """`source` with every tensor dequantized to F32 by gguf-py, all metadata kept (file type ALL_F32)."""

    def build(tmp: Path) -> None:
        write_f32_gguf(source, tmp)

    target.parent.mkdir(parents=True, exist_ok=True)
    return build_once(target, build, gguf_ok)


def write_f32_gguf(source: Path, target: Path) -> None:
    """Write `source` to `target` with its tensors dequantized to F32 (gguf-py's own dequantizers) and its
    metadata copied, so llama.cpp's quantizer can make any type from it."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(target), arch=arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer adds these itself
        value = 0 if field.name == "general.file_type" else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for tensor in reader.tensors:
        data = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists dimensions innermost first
        writer.add_tensor(tensor.name, data.reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
