"""The accelerator table (data/accelerators.csv): sourced memory, bandwidth and matrix throughput.

Used for hypothetical hardware (`--device "RTX 4090"`, `--device "2x H100 SXM5"`), never to
guess the figures of the machine advisor runs on (that is measured by `advisor.hardware`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from advisor.errors import DeviceNotFoundError
from advisor.paths import data_dir
from advisor.spec import Device, Hardware

GiB = 1024**3

# NOTE: GPU memory is sold in binary units: an "80GB" H100 has 80 GiB of HBM (nvidia-smi: 81559 MiB), a "24GB"
# RTX 4090 24 GiB (24564 MiB). The table's `memory_gb` is that marketed figure, read as GiB. What CUDA (and so
# torch, vLLM, SGLang) reports as total is less: the driver keeps ~0.5-1.2 GiB, and data-centre GDDR cards with
# ECC on (T4, A10, L4, L40S) give 1/16 to it. Logged totals: H100 80GB 79.19 GiB, A100-SXM4-40GB 39.38-39.49,
# RTX 3090 23.57, RTX 4090 23.53, A10 22.06, T4 14.74, L40S 44.42, H200 139.81 (benchmarks/data/vllm_kv_logs.csv).
# Where the table has no logged total: marketed x (15/16 with ECC on) less 0.85% + 0.2 GiB, which gives those
# figures within 0.5% (H100 79.12, RTX 3090 23.60, A10 22.11, T4 14.67, L40S 44.42, H200 139.6).
DRIVER_RESERVE_FRACTION = 0.0085
DRIVER_RESERVE_BYTES = int(0.2 * GiB)


@dataclass(frozen=True)
class Accelerator:
    name: str
    vendor: str
    memory_gb: float | None  # marketed size, binary units (GiB)
    bandwidth_gbps: float | None
    tflops_16bit: float | None  # dense bf16/fp16 tensor throughput
    source: str
    notes: str
    compute_capability: float | None = None
    memory_type: str | None = None
    ecc_default: str | None = None
    cuda_total_gib: float | None = None
    fp8: bool | None = None
    bf16: bool | None = None

    @property
    def kind(self) -> str:
        return "mps" if self.vendor == "Apple" else "cuda"

    @property
    def memory_bytes(self) -> int | None:
        """The marketed size in bytes (binary units)."""
        return int(self.memory_gb * GiB) if self.memory_gb is not None else None

    @property
    def cuda_total_bytes(self) -> int | None:
        """Total memory as CUDA reports it: a logged figure where the table has one, else derived (see NOTE)."""
        if self.cuda_total_gib:
            return int(self.cuda_total_gib * GiB)
        return cuda_total_from_marketed(self.memory_gb, ecc=self.ecc_default == "on") if self.memory_gb else None

    def cuda_total(self, memory_gb: float | None = None) -> int | None:
        """Total memory as CUDA reports it for this card, or for one of its kind sold as `memory_gb` GB."""
        if memory_gb is None:
            return self.cuda_total_bytes
        return cuda_total_from_marketed(memory_gb, ecc=self.ecc_default == "on")


def cuda_total_from_marketed(memory_gb: float, *, ecc: bool = False) -> int:
    """What CUDA reports as total for a card sold as `memory_gb` GB (binary units)."""
    physical = memory_gb * GiB * (15 / 16 if ecc else 1)
    return int(physical * (1 - DRIVER_RESERVE_FRACTION) - DRIVER_RESERVE_BYTES)


def apple_gpu_working_set(memory_gb: float) -> int:
    """Bytes of unified memory Metal lets the GPU use (`recommendedMaxWorkingSetSize`).

    NOTE: llama.cpp's ggml_metal_init prints it: 21845.34 MB on 32 GB M1/M2 Max (2/3; ollama#434, llama.cpp#2011),
    73728 MB on a 96 GB M2 Max (3/4; llama.cpp#3213), ~47-49 GB on 64 GB machines (3/4; llama.cpp#1870). macOS 26
    on 128 GB M5 Max reports 107.52 GiB (0.84; antirez/ds4#893): newer macOS may allow more, never less.
    """
    share = 2 / 3 if memory_gb <= 32 else 3 / 4
    return int(memory_gb * GiB * share)


def device_class(acc: Accelerator) -> str:
    """A class of devices whose runtimes reach a similar share of their bandwidth (see speed.EFFICIENCY's llama.cpp
    note): NVIDIA HBM data-centre parts, GeForce cards, workstation and GDDR/LPDDR server cards (the same chips as
    workstation cards: A40, L40S, A10G, GB10), Apple chips, and other GPUs."""
    if acc.vendor == "Apple":
        return "mps"
    if acc.vendor != "NVIDIA":
        return "cuda/other"
    if (acc.memory_type or "").upper().startswith("HBM"):
        return "cuda/hbm"
    return "cuda/geforce" if "geforce" in acc.name.lower() else "cuda/pro"


def _flag(text: str | None) -> bool | None:
    value = (text or "").strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    return None


def _num(text: str) -> float | None:
    match = re.search(r"\d+(?:\.\d+)?", text or "")
    return float(match.group()) if match else None


@lru_cache(maxsize=1)
def table() -> tuple[Accelerator, ...]:
    rows = []
    with open(data_dir() / "accelerators.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tflops = _num(row["dense_fp16_bf16_tflops_tensor"])
            if tflops is None and row.get("geforce_fp16_acc_fp16_dense_tflops"):
                # NOTE: GeForce cards run bf16/fp32-accumulate at half their fp16-accumulate rate.
                tflops = _num(row["geforce_fp16_acc_fp16_dense_tflops"]) / 2
            rows.append(
                Accelerator(
                    name=row["name"],
                    vendor=row["vendor"],
                    memory_gb=_num(row["memory_gb"]),
                    bandwidth_gbps=_num(row["memory_bandwidth_gbps"]),
                    tflops_16bit=tflops,
                    source=row["source"],
                    notes=row["notes"],
                    compute_capability=_capability(row.get("compute_capability")),
                    memory_type=(row.get("memory_type") or "").strip() or None,
                    ecc_default=(row.get("ecc_default") or "").strip().lower() or None,
                    cuda_total_gib=_num(row.get("cuda_total_gib") or ""),
                    fp8=_flag(row.get("fp8_tensor_cores")),
                    bf16=_flag(row.get("bf16")),
                )
            )
    return tuple(rows)


def _capability(text: str | None) -> float | None:
    """NVIDIA compute capability ('8.9'); AMD gfx names and blanks give None."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", text or "")
    return float(match.group(1)) if match else None


_BRAND_WORDS = frozenset({"nvidia", "geforce", "tesla", "amd", "radeon", "instinct", "intel", "apple"})


def _bare(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in _BRAND_WORDS]


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.lower())


def lookup(name: str) -> Accelerator:
    """The table row named by `name` ('RTX 4090', 'h100 sxm', 'M2 Max'); DeviceNotFoundError otherwise."""
    wanted = _tokens(name)
    if not wanted:
        raise DeviceNotFoundError(f"Device name '{name}' is empty: try e.g. --device 'RTX 4090'.")
    rows = table()
    exact = [a for a in rows if _tokens(a.name) == wanted]
    if exact:
        return exact[0]
    # 'RTX 4070' names 'GeForce RTX 4070', not its Ti or Laptop siblings: compare without brand words.
    bare = [a for a in rows if _bare(_tokens(a.name)) == _bare(wanted)]
    if len(bare) == 1:
        return bare[0]
    matches = [a for a in rows if all(t in _tokens(a.name) for t in wanted)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(a.name for a in matches[:6])
        raise DeviceNotFoundError(f"Device '{name}' is ambiguous ({names}): name one of them with --device.")
    close = [a.name for a in rows if any(t in _tokens(a.name) for t in wanted if not t.isdigit() or len(t) > 2)]
    hint = f" Close: {', '.join(close[:5])}." if close else ""
    raise DeviceNotFoundError(
        f"Unknown device '{name}': not in the accelerator table.{hint} "
        "Or describe it with --memory-gb and --bandwidth-gbps."
    )


def parse_device_arg(text: str) -> tuple[int, str]:
    """'2x H100 SXM5' -> (2, 'H100 SXM5'); 'RTX 4090' -> (1, 'RTX 4090')."""
    match = re.match(r"^\s*(\d+)\s*[x×*]\s*(.+)$", text, flags=re.IGNORECASE)
    if match:
        count = int(match.group(1))
        if not 1 <= count <= 64:
            raise DeviceNotFoundError(f"Device count in '{text}' must be between 1 and 64.")
        return count, match.group(2).strip()
    return 1, text.strip()


def hardware_from_flags(
    device: str | None,
    *,
    memory_gb: float | None = None,
    bandwidth_gbps: float | None = None,
    base: Hardware | None = None,
) -> Hardware:
    """Hypothetical hardware: table devices, overridden by --memory-gb/--bandwidth-gbps where given."""
    if device:
        count, name = parse_device_arg(device)
        acc = lookup(name)
        memory = memory_gb if memory_gb is not None else acc.memory_gb
        if memory is None:
            raise DeviceNotFoundError(f"The table has no memory size for '{acc.name}': add --memory-gb.")
        bandwidth = bandwidth_gbps if bandwidth_gbps is not None else acc.bandwidth_gbps
        # unified memory (mps): the GPU may wire only the recommended working set
        usable = apple_gpu_working_set(memory) if acc.kind == "mps" else acc.cuda_total(memory_gb) or int(memory * GiB)
        details = {"source": acc.source, "notes": acc.notes, "marketed_bytes": int(memory * GiB),
                   "device_class": device_class(acc)}  # fmt: skip
        if acc.compute_capability:
            details["compute_capability"] = f"{acc.compute_capability:g}"
        devices = tuple(
            Device(
                kind=acc.kind,
                name=acc.name,
                memory_bytes=usable,
                bandwidth_gbps=bandwidth,
                bandwidth_source="user" if bandwidth_gbps is not None else "table",
                matmul_tflops=acc.tflops_16bit,
                matmul_source="table" if acc.tflops_16bit else "unknown",
                index=i,
                theoretical_bandwidth_gbps=acc.bandwidth_gbps,
                details=dict(details),
            )
            for i in range(count)
        )
        host = base.cpu if base is not None else None
        if host is not None and acc.kind != "mps":  # Apple chips share one memory: no separate host
            devices = (*devices, host)
        return Hardware(devices=devices, source="table", notes=(f"{count}x {acc.name} from the accelerator table",))
    if memory_gb is None and bandwidth_gbps is None:
        raise ValueError("hardware_from_flags needs a device or a figure")
    cpu = base.cpu if base is not None else None
    memory = memory_gb if memory_gb is not None else (cpu.memory_bytes / GiB if cpu else None)
    if memory is None:
        raise DeviceNotFoundError("--bandwidth-gbps alone needs this machine's memory: add --memory-gb.")
    bandwidth = bandwidth_gbps if bandwidth_gbps is not None else (cpu.bandwidth_gbps if cpu else None)
    dev = Device(
        kind="cpu",
        name="hypothetical machine (flags)",
        memory_bytes=int(memory * GiB),
        bandwidth_gbps=bandwidth,
        bandwidth_source="user" if bandwidth_gbps is not None else (cpu.bandwidth_source if cpu else "unknown"),
        matmul_tflops=cpu.matmul_tflops if cpu else None,
        matmul_source=cpu.matmul_source if cpu else "unknown",
    )
    return Hardware(devices=(dev,), source="flags", notes=("memory and bandwidth from the command line",))
