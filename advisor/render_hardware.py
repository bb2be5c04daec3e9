"""`advisor hw`: the hardware profile as rich tables. Computes nothing: every figure arrives ready."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from advisor.spec import Device, Hardware
from advisor.textutil import clean

GB = 1e9
MiB = 2**20

SOURCE_WORDS = {
    "measured": "measured",
    "driver": "from driver (peak)",
    "table": "from accelerator table",
    "user": "given on the command line",
    "default": "default",
    "unknown": "unknown",
}
SOURCE_STYLE = {"measured": "green", "driver": "yellow", "table": "yellow", "user": "cyan"}


def _source(source: str | None) -> Text:
    source = source or "unknown"
    return Text(clean(SOURCE_WORDS.get(source, source)), style=SOURCE_STYLE.get(source, "dim"))


def _gb(n: float | None) -> str:
    """Memory in binary units, as it is sold and as CUDA and the OS report it (24 GiB, not 25.8 GB)."""
    if n is None:
        return "-"
    gib = n / 2**30
    return f"{gib:.2f} GiB" if gib < 10 else f"{gib:.1f} GiB"


def _rate(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f} {unit}"
    return f"{x:.1f} {unit}" if x >= 10 else f"{x:.2f} {unit}"


def _bandwidth(dev: Device) -> Text:
    text = Text()
    by_dtype = dev.details.get("bandwidth_gbps_by_dtype") if dev.details else None
    if by_dtype and len(by_dtype) > 1:
        text.append(clean(" / ".join(f"{k} {_rate(v, '')}".strip() for k, v in by_dtype.items()) + " GB/s"))
    else:
        text.append(_rate(dev.bandwidth_gbps, "GB/s"))
    text.append("\n")
    text.append_text(_source(dev.bandwidth_source))
    by_method = dev.details.get("bandwidth_gbps_by_method") if dev.details else None
    if by_method:
        text.append(clean("\n" + ", ".join(f"{k} {_rate(v, 'GB/s')}" for k, v in by_method.items())), style="dim")
    if dev.theoretical_bandwidth_gbps is not None and dev.bandwidth_source != "driver":
        text.append(f"\npeak {_rate(dev.theoretical_bandwidth_gbps, 'GB/s')} (driver)", style="dim")
    return text


def _matmul(dev: Device) -> Text:
    text = Text()
    by_dtype = dev.details.get("matmul_tflops_by_dtype") if dev.details else None
    if by_dtype and len(by_dtype) > 1:
        text.append(clean(" / ".join(f"{k} {_rate(v, '')}".strip() for k, v in by_dtype.items()) + " TFLOPS"))
    else:
        dtype = dev.details.get("matmul_dtype") if dev.details else None
        text.append(clean(_rate(dev.matmul_tflops, "TFLOPS") + (f" {dtype}" if dtype and dev.matmul_tflops else "")))
    text.append("\n")
    text.append_text(_source(dev.matmul_source if dev.matmul_tflops is not None else "unknown"))
    return text


def _extras(dev: Device) -> str:
    d: dict[str, Any] = dev.details or {}
    parts = []
    if d.get("backend") and d["backend"] != dev.kind:
        parts.append(str(d["backend"]))
    if d.get("compute_capability"):
        parts.append(f"cc {d['compute_capability']}")
    if d.get("gcn_arch"):
        parts.append(str(d["gcn_arch"]))
    if d.get("pcie_gen_max") or d.get("pcie_gen"):
        gen, width = d.get("pcie_gen_max") or d.get("pcie_gen"), d.get("pcie_width_max") or d.get("pcie_width")
        link = f"PCIe {gen}" + (f" x{width}" if width else "")
        if d.get("pcie_gen") and d.get("pcie_gen_max") and d["pcie_gen"] != d["pcie_gen_max"]:
            link += f" (now gen {d['pcie_gen']} x{d.get('pcie_width')})"
        parts.append(link)
    if d.get("pcie_gbps"):
        parts.append(f"host->device {_rate(d['pcie_gbps'], 'GB/s')} measured")
    if d.get("power_limit_w"):
        parts.append(f"{d['power_limit_w']:.0f} W limit")
    if d.get("driver_version"):
        parts.append(f"driver {d['driver_version']}")
    if d.get("recommended_max_memory_bytes"):
        parts.append(f"Metal recommended max {_gb(d['recommended_max_memory_bytes'])}")
    if d.get("unified_memory_bytes"):
        parts.append(f"unified memory {_gb(d['unified_memory_bytes'])}")
    if d.get("threads"):
        parts.append(f"{d['threads']} threads")
    if d.get("llc_bytes"):
        parts.append(f"LLC {d['llc_bytes'] / MiB:.0f} MiB")
    if d.get("mig_enabled"):
        parts.append("MIG on")
    if d.get("measured") is False:
        parts.append("not measured (torch cannot use it)")
    return ", ".join(parts)


def device_table(hw: Hardware) -> Table:
    table = Table(title="Devices", title_justify="left", show_lines=True)
    table.add_column("Device", style="bold", no_wrap=True)
    table.add_column("Name")
    table.add_column("Memory (free)", justify="right")
    table.add_column("Read bandwidth")
    table.add_column("Matmul")
    table.add_column("Details", style="dim")
    for dev in hw.devices:
        memory = _gb(dev.memory_bytes)
        if dev.free_bytes is not None:
            memory += f"\n({_gb(dev.free_bytes)} free)"
        table.add_row(dev.label, dev.name, memory, _bandwidth(dev), _matmul(dev), _extras(dev))
    return table


def summary_table(hw: Hardware) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("CPU", hw.cpu_name or "-")
    cores = []
    if hw.physical_cores:
        cores.append(f"{hw.physical_cores} physical")
    if hw.logical_cores:
        cores.append(f"{hw.logical_cores} logical")
    table.add_row("Cores", ", ".join(cores) or "-")
    ram = _gb(hw.ram_total_bytes)
    if hw.ram_available_bytes is not None:
        ram += f" ({_gb(hw.ram_available_bytes)} available)"
    table.add_row("RAM", ram)
    disk = Text(_rate(hw.disk_read_gbps, "GB/s"))
    if hw.disk_read_gbps is not None:
        disk.append(" measured", style="green")
        disk.append(" (cold sequential read)", style="dim")
    if hw.disk_path:
        disk.append(clean(f" on {hw.disk_path}"), style="dim")
    table.add_row("Disk read", disk)
    source = {"probe": "measured on this machine", "table": "accelerator table", "flags": "command-line flags"}
    table.add_row("Profile", source.get(hw.source, hw.source))
    if hw.measured_at:
        table.add_row("Measured at", hw.measured_at)
    if hw.fingerprint:
        table.add_row("Fingerprint", Text(clean(hw.fingerprint), style="dim"))
    return table


def print_hardware(hw: Hardware, console: Console) -> None:
    """Print the profile: one row per device, the machine summary, then the notes."""
    console.print(device_table(hw))
    console.print(summary_table(hw))
    if hw.notes:
        console.print()
        console.print(Text("Notes", style="bold"))
        for note in hw.notes:
            console.print(Text(clean(f"- {note}"), style="yellow"))
