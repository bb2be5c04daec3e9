"""The hardware probe: measured CPU figures, the cached profile, NVML handling, GPU paths (gpu marker)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from rich.console import Console

from advisor import hardware as H
from advisor.paths import cache_dir
from advisor.render_hardware import print_hardware
from advisor.spec import Device, Hardware

MiB = 2**20


def _fake_hw(tag: str = "fake", fingerprint: str | None = None) -> Hardware:
    vm = psutil.virtual_memory()
    cpu = Device(
        kind="cpu",
        name="Fake CPU",
        memory_bytes=vm.total,
        bandwidth_gbps=12.5,
        bandwidth_source="measured",
        free_bytes=vm.available,
        matmul_tflops=0.1,
        matmul_source="measured",
        details={"bandwidth_gbps_by_dtype": {"fp32": 12.5, "bf16": 10.0}},
    )
    return Hardware(
        devices=(cpu,),
        source="probe",
        cpu_name="Fake CPU",
        physical_cores=2,
        logical_cores=4,
        ram_total_bytes=vm.total,
        ram_available_bytes=vm.available,
        disk_read_gbps=1.5,
        disk_path="/tmp",
        measured_at=H._now_iso(),
        fingerprint=fingerprint if fingerprint is not None else H.machine_fingerprint(),
        notes=(tag,),
    )


@pytest.fixture
def fake_probe(monkeypatch):
    """Replace the measurement with a counter returning a fake profile."""
    calls = []

    def probe(**kwargs):
        calls.append(kwargs)
        return _fake_hw(tag=f"probe #{len(calls)}")

    monkeypatch.setattr(H, "probe", probe)
    return calls


def _no_probe(**kwargs):
    raise AssertionError("load_or_probe measured again instead of using the cache")


# --------------------------------------------------------------------------------------------
# The real probe on this machine
# --------------------------------------------------------------------------------------------


def test_probe_measures_cpu_and_ram(tmp_path):
    hw = H.probe()
    cpu = hw.cpu
    assert cpu is not None and cpu.kind == "cpu" and cpu.label == "cpu"
    assert hw.source == "probe"
    # measured bandwidth, fp32 as the headline figure, bf16 alongside
    assert cpu.bandwidth_source == "measured"
    assert cpu.bandwidth_gbps is not None and cpu.bandwidth_gbps > 0
    by_dtype = cpu.details["bandwidth_gbps_by_dtype"]
    assert by_dtype["fp32"] == cpu.bandwidth_gbps and by_dtype["bf16"] > 0
    assert cpu.matmul_source == "measured" and cpu.matmul_tflops > 0
    assert cpu.details["matmul_tflops_by_dtype"]["fp32"] == cpu.matmul_tflops
    # RAM and cores agree with psutil
    vm = psutil.virtual_memory()
    assert cpu.memory_bytes == hw.ram_total_bytes == vm.total
    assert cpu.free_bytes == hw.ram_available_bytes
    assert abs(hw.ram_available_bytes - vm.available) < 0.2 * vm.total
    assert hw.logical_cores == psutil.cpu_count()
    assert hw.physical_cores == psutil.cpu_count(logical=False)
    assert hw.cpu_name and cpu.name == hw.cpu_name
    # bookkeeping
    assert hw.fingerprint == H.machine_fingerprint()
    assert datetime.fromisoformat(hw.measured_at).tzinfo is not None
    # disk: measured on the (isolated) HF cache volume, temp file gone
    assert hw.disk_read_gbps is not None and hw.disk_read_gbps > 0
    assert Path(hw.disk_path).resolve() == tmp_path.resolve()  # nearest existing parent of HF_HUB_CACHE
    assert not list(tmp_path.glob(".advisor-disk-probe-*"))


def test_load_or_probe_uses_cache_on_second_call(monkeypatch):
    # About the cache, not contention: a profile measured while other work shared the CPU would be re-measured.
    monkeypatch.setattr(H, "_contended", lambda hw: False)
    first = H.load_or_probe()
    path = cache_dir() / "hardware.json"
    data = json.loads(path.read_text())
    assert data["schema"] == H.SCHEMA and data["fingerprint"] == first.fingerprint
    monkeypatch.setattr(H, "probe", _no_probe)
    monkeypatch.setattr(H, "measure_cpu_bandwidth", _no_probe)
    second = H.load_or_probe()
    # same measurement; only today's available RAM is refreshed
    assert second.measured_at == first.measured_at
    assert second.cpu.bandwidth_gbps == first.cpu.bandwidth_gbps
    assert second.cpu.details == first.cpu.details
    assert second.devices[1:] == first.devices[1:]
    assert second.ram_total_bytes == first.ram_total_bytes


def test_refresh_remeasures(fake_probe):
    H.load_or_probe()
    H.load_or_probe()
    assert len(fake_probe) == 1
    hw = H.load_or_probe(refresh=True)
    assert len(fake_probe) == 2
    assert hw.notes == ("probe #2",)
    # the refreshed profile replaced the cached one
    assert H.load_or_probe().notes == ("probe #2",)
    assert len(fake_probe) == 2


@pytest.mark.parametrize("content", ["{not json", "[]", '{"devices": 3, "source": "probe"}', "\xff\xfe", ""])
def test_corrupt_cache_is_set_aside_and_rebuilt(fake_probe, content):
    path = cache_dir() / "hardware.json"
    path.write_bytes(content.encode("latin-1"))
    hw = H.load_or_probe()
    assert len(fake_probe) == 1
    aside = list(cache_dir().glob("hardware.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content.encode("latin-1")
    assert any("unreadable" in n and aside[0].name in n for n in hw.notes)
    # the rebuilt file is valid and does not carry the warning forever
    saved = H.hardware_from_json(json.loads(path.read_text()))
    assert saved.notes == ("probe #1",)
    assert H.load_or_probe().notes == ("probe #1",)
    assert len(fake_probe) == 1


def test_corrupt_cache_twice_keeps_both_copies(fake_probe):
    path = cache_dir() / "hardware.json"
    for _ in range(2):
        path.write_text("garbage")
        H.load_or_probe()
    assert len(list(cache_dir().glob("hardware.json.corrupt-*"))) == 2


def test_fingerprint_change_triggers_remeasure(fake_probe, monkeypatch):
    H.load_or_probe()
    assert len(fake_probe) == 1
    monkeypatch.setattr(H, "machine_fingerprint", lambda: "another-machine")
    H.load_or_probe()
    assert len(fake_probe) == 2


def test_old_schema_triggers_remeasure(fake_probe):
    H.load_or_probe()
    path = cache_dir() / "hardware.json"
    data = json.loads(path.read_text())
    data["schema"] = H.SCHEMA - 1
    path.write_text(json.dumps(data))
    H.load_or_probe()
    assert len(fake_probe) == 2
    assert not list(cache_dir().glob("hardware.json.corrupt-*"))  # stale is not corrupt


def test_fingerprint_depends_on_machine(monkeypatch):
    a = H.machine_fingerprint()
    assert a == H.machine_fingerprint() and len(a) == 16
    monkeypatch.setattr(H, "cpu_model_name", lambda: "Some Other CPU")
    assert H.machine_fingerprint() != a


def test_save_is_atomic(monkeypatch):
    path = cache_dir() / "hardware.json"
    H.save_hardware(_fake_hw("old"), path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(OSError):
        H.save_hardware(_fake_hw("new"), path)
    assert path.read_text() == before  # the old profile is intact
    assert sorted(p.name for p in cache_dir().iterdir()) == ["hardware.json"]  # no temp file left


def test_unwritable_cache_is_a_note(fake_probe, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(H, "save_hardware", refuse)
    hw = H.load_or_probe()
    assert any("Could not save" in n for n in hw.notes)


def test_json_round_trip():
    hw = _fake_hw()
    gpu = Device(
        kind="cuda",
        name="NVIDIA H100",
        memory_bytes=80 * 10**9,
        bandwidth_gbps=3000.0,
        bandwidth_source="measured",
        index=1,
        theoretical_bandwidth_gbps=3352.3,
        details={"compute_capability": "9.0", "bandwidth_gbps_by_method": {"matvec_fp16": 3000.0}},
    )
    hw = dataclasses.replace(hw, devices=(*hw.devices, gpu))
    again = H.hardware_from_json(json.loads(json.dumps(hw.to_json())))
    assert again == hw
    assert H.hardware_from_json({**hw.to_json(), "schema": 1, "future_field": 3}) == hw
    with pytest.raises(ValueError):
        H.hardware_from_json({"devices": [{"kind": "cpu"}], "source": "probe"})
    with pytest.raises(ValueError):
        H.hardware_from_json({"devices": []})


# --------------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------------


def test_nvml_init_raising_is_a_note(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    monkeypatch.setattr(sys, "platform", "linux")
    gpus, notes = H.probe_nvml()
    assert gpus == []
    assert len(notes) == 1 and notes[0].startswith("NVML not available:")
    hw = H.probe(measure=False, disk=False)
    assert any(n.startswith("NVML not available:") for n in hw.notes)
    assert hw.cpu is not None
    assert H.machine_fingerprint()  # does not raise either


def test_nvml_missing_library_or_module(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def not_found():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", not_found)
    monkeypatch.setattr(sys, "platform", "linux")
    _, notes = H.probe_nvml()
    assert notes and notes[0].startswith("NVML not available:") and "no NVIDIA GPU" in notes[0]
    assert H.nvml_process_memory(os.getpid()) is None  # bench's GPU peak falls back to torch's figures

    def oserror():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(pynvml, "nvmlInit", oserror)
    _, notes = H.probe_nvml()
    assert notes and notes[0].startswith("NVML not available:")

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    gpus, notes = H.probe_nvml()
    assert gpus == [] and notes[0].startswith("NVML not available:")
    assert H.nvml_process_memory(os.getpid()) is None


def _fake_nvml(monkeypatch, pynvml, count: int = 2):
    """Two H100s; the second one reports no bus width (NotSupported) and no MIG query."""

    def not_supported(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def per_gpu(fn):
        return lambda h, *a: fn(h) if h == 0 else not_supported()

    fns = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlSystemGetCudaDriverVersion": lambda: 12040,
        "nvmlDeviceGetCount": lambda: count,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUUID": lambda h: f"GPU-0000000{h}-1111-2222-3333-444444444444",
        "nvmlDeviceGetMemoryInfo": lambda h, version=None: SimpleNamespace(
            total=85_520_809_984, free=84_000_000_000 - h, used=1
        ),
        "nvmlDeviceGetMemoryBusWidth": per_gpu(lambda h: 5120),
        "nvmlDeviceGetMaxClockInfo": lambda h, t: 2619,
        "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=f"00000000:0{h + 1}:00.0"),
        "nvmlDeviceGetCurrPcieLinkGeneration": lambda h: 1,
        "nvmlDeviceGetCurrPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: 5,
        "nvmlDeviceGetMaxPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetPowerManagementLimit": lambda h: 700_000,
        "nvmlDeviceGetCudaComputeCapability": lambda h: (9, 0),
        "nvmlDeviceGetMigMode": per_gpu(lambda h: [0, 0]),
    }
    for name, fn in fns.items():
        monkeypatch.setattr(pynvml, name, fn)
    monkeypatch.setattr(sys, "platform", "linux")


def test_nvml_gpus_listed_separately_with_driver_figures(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    torch = pytest.importorskip("torch")
    before = H.machine_fingerprint()
    _fake_nvml(monkeypatch, pynvml)
    # as on a machine whose torch is a CPU-only build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    gpus, notes = H.probe_nvml()
    assert [g["index"] for g in gpus] == [0, 1] and notes == []
    g0, g1 = gpus
    # 5120 bit / 8 x 2619 MHz x 2 (DDR) = 3352.3 GB/s, the H100 SXM datasheet figure
    assert g0["theoretical_bandwidth_gbps"] == pytest.approx(3352.3, abs=0.1)
    assert g1["theoretical_bandwidth_gbps"] is None  # bus width not supported: no guess
    assert g0["pcie_theoretical_gbps"] == pytest.approx(63.0, abs=0.1)  # gen 5 x16, not the idle gen 1
    assert g0["power_limit_w"] == 700.0 and g0["compute_capability"] == "9.0"
    assert g0["driver_version"] == "550.54.15" and g0["cuda_driver_version"] == "12.4"
    assert g0["mig_enabled"] is False and g1["mig_enabled"] is None

    hw = H.probe(measure=False, disk=False)
    cuda = [d for d in hw.devices if d.kind == "cuda"]
    assert [d.label for d in cuda] == ["cuda:0", "cuda:1"]
    assert cuda[0].memory_bytes == 85_520_809_984 and cuda[0].free_bytes == 84_000_000_000
    assert cuda[0].bandwidth_gbps == cuda[0].theoretical_bandwidth_gbps
    assert cuda[0].bandwidth_source == "driver" and cuda[0].matmul_tflops is None
    assert cuda[1].bandwidth_gbps is None and cuda[1].bandwidth_source == "unknown"
    d = cuda[0].details
    assert d["pcie_gen"] == 1 and d["pcie_gen_max"] == 5 and d["pcie_width"] == 16
    assert d["uuid"].startswith("GPU-") and d["compute_capability"] == "9.0"
    assert any("torch cannot use" in n for n in hw.notes)
    # the GPUs are part of the machine's identity
    assert H.machine_fingerprint() != before


def test_nvml_per_device_failure_is_a_note(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    _fake_nvml(monkeypatch, pynvml)

    def lost(i):
        if i == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return i

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lost)
    gpus, notes = H.probe_nvml()
    assert [g["index"] for g in gpus] == [0]
    assert any("GPU 1" in n for n in notes)


def test_match_torch_device_to_nvml():
    nvml = [
        {"index": 0, "uuid": "GPU-aaaa", "pci_bus_id": "00000000:01:00.0"},
        {"index": 1, "uuid": "GPU-bbbb", "pci_bus_id": "00000000:41:00.0"},
    ]
    by_uuid = SimpleNamespace(uuid="BBBB")
    assert H._match_nvml(by_uuid, 0, nvml, same_order=False)["index"] == 1
    by_pci = SimpleNamespace(uuid=None, pci_domain_id=0, pci_bus_id=0x41, pci_device_id=0)
    assert H._match_nvml(by_pci, 0, nvml, same_order=False)["index"] == 1
    unknown = SimpleNamespace()
    assert H._match_nvml(unknown, 0, nvml, same_order=False) is None
    assert H._match_nvml(unknown, 1, nvml, same_order=True)["index"] == 1


def test_pcie_theoretical():
    assert H.pcie_theoretical_gbps(4, 16) == pytest.approx(31.5)
    assert H.pcie_theoretical_gbps(3, 8) == pytest.approx(7.9)
    assert H.pcie_theoretical_gbps(None, 16) is None


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_cpu_identity():
    assert H.cpu_model_name()
    if Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        llc = H.last_level_cache_bytes()
        assert llc is None or llc >= 256 * 1024
    assert H.cpu_matvec_size(llc=32 * MiB) == 256 * MiB
    assert H.cpu_matvec_size(llc=96 * MiB) == 768 * MiB
    assert H.cpu_matvec_size(llc=1024 * MiB) == 1024 * MiB
    assert H.cpu_matvec_size(ram_available=512 * MiB, llc=32 * MiB) == 128 * MiB


def test_measure_cpu_bandwidth_small():
    pytest.importorskip("torch")
    with H.CpuContention() as busy:
        r = H.measure_cpu_bandwidth(64 * MiB, reps=3, stream=False)
    assert r["bytes"] == 64 * MiB
    assert r["gbps"]["fp32"] > 0 and r["gbps"]["bf16"] > 0
    assert "stream_gbps" not in r
    assert busy.fraction is not None and 0 <= busy.fraction <= 1
    assert H.measure_cpu_matmul(n=256, reps=2) > 0


def test_disk_probe_cleans_up(tmp_path):
    gbps, where, error = H.measure_disk_read(tmp_path, size=16 * MiB)
    assert error is None and gbps is not None and gbps > 0
    assert Path(where) == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_disk_probe_failure_still_cleans_up(tmp_path, monkeypatch):
    def broken(self, budget_s):
        raise OSError("EIO")

    monkeypatch.setattr(H._DiskProbe, "_read", broken)
    gbps, _, error = H.measure_disk_read(tmp_path, size=8 * MiB)
    assert gbps is None and "EIO" in error
    assert list(tmp_path.iterdir()) == []


def test_disk_probe_unwritable_is_a_note(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(H.tempfile, "mkstemp", refuse)
    gbps, _, error = H.measure_disk_read(tmp_path, size=8 * MiB)
    assert gbps is None and "read-only" in error
    hw = H.probe(measure=False)
    assert hw.disk_read_gbps is None and any(n.startswith("Disk read not measured") for n in hw.notes)


def test_disk_probe_removes_stale_leftovers(tmp_path):
    old = tmp_path / f"{H.DISK_PROBE_PREFIX}dead.tmp"
    young = tmp_path / f"{H.DISK_PROBE_PREFIX}running.tmp"
    other = tmp_path / "model.safetensors"
    for p in (old, young, other):
        p.write_bytes(b"x")
    os.utime(old, (1, 1))
    H.measure_disk_read(tmp_path, size=8 * MiB)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, other.name])


def test_disk_probe_finds_the_hf_cache_volume(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a" / "b" / "hub"))
    assert H._DiskProbe().dir == tmp_path
    (tmp_path / "a").mkdir()
    assert H._DiskProbe().dir == tmp_path / "a"


def test_modules_do_not_import_torch():
    code = (
        "import sys, advisor.hardware, advisor.render_hardware; "
        "advisor.hardware.machine_fingerprint(); print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env={**os.environ}, check=True
    )
    assert out.stdout.strip() == "False"


def test_render_says_where_each_figure_came_from():
    hw = _fake_hw()
    gpu = Device(
        kind="cuda",
        name="NVIDIA H100 80GB HBM3",
        memory_bytes=85_520_809_984,
        bandwidth_gbps=3352.3,
        bandwidth_source="driver",
        index=0,
        theoretical_bandwidth_gbps=3352.3,
        details={"compute_capability": "9.0", "pcie_gen": 5, "pcie_width": 16, "power_limit_w": 700.0},
    )
    table = Device(kind="cuda", name="RTX 4090", memory_bytes=24 * 10**9, bandwidth_gbps=1008, bandwidth_source="table")
    hw = dataclasses.replace(hw, devices=(*hw.devices, gpu, table), notes=("No NVIDIA GPU: NVML library not found",))
    console = Console(record=True, width=200)
    print_hardware(hw, console)
    out = console.export_text()
    for text in (
        "cpu",
        "cuda:0",
        "Fake CPU",
        "measured",
        "from driver",
        "from accelerator table",
        "fp32 12.5 / bf16 10.0 GB/s",
        "3352 GB/s",
        "cc 9.0",
        "PCIe 5 x16",
        "700 W",
        "Disk read",
        "1.50 GB/s",
        hw.measured_at,
        "No NVIDIA GPU: NVML library not found",
    ):
        assert text in out, text


def test_render_real_probe_output():
    hw = H.probe(measure=False, disk=False)
    console = Console(record=True, width=160)
    print_hardware(hw, console)
    assert "cpu" in console.export_text()


# --------------------------------------------------------------------------------------------
# GPUs (run where torch sees one; skipped elsewhere)
# --------------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.gpu
def test_cuda_measured_figures():
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("no CUDA/ROCm device visible to torch")
    m = H.measure_cuda_device(0, matvec_bytes=256 * MiB, reps=5)
    assert m["matvec_gbps"] > 0 and m["copy_gbps"] > 0 and m["matmul_tflops"] > 0
    hw = H.probe(disk=False)
    cuda = [d for d in hw.devices if d.kind == "cuda"]
    assert len(cuda) == torch.cuda.device_count()
    for i, dev in enumerate(cuda):
        assert dev.index == i and dev.label == f"cuda:{i}"
        assert dev.bandwidth_source == "measured" and dev.bandwidth_gbps > 0
        assert dev.matmul_source == "measured" and dev.matmul_tflops > 0
        assert dev.memory_bytes > 0 and 0 < dev.free_bytes <= dev.memory_bytes
        assert set(dev.details["bandwidth_gbps_by_method"]) == {"matvec_fp16", "d2d_copy"}
        if dev.theoretical_bandwidth_gbps:  # NVML present: the measured figure is below the peak
            assert dev.bandwidth_gbps < 1.05 * dev.theoretical_bandwidth_gbps
            assert dev.details["compute_capability"]


@pytest.mark.gpu
def test_mps_measured_figures():
    torch = _torch()
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        pytest.skip("no Apple MPS device")
    m = H.measure_mps(matvec_bytes=128 * MiB, reps=5)
    assert m["matvec_gbps"] > 0 and m["matmul_tflops"] > 0
    hw = H.probe(disk=False)
    mps = [d for d in hw.devices if d.kind == "mps"]
    assert len(mps) == 1 and mps[0].bandwidth_source == "measured"
    assert mps[0].memory_bytes <= psutil.virtual_memory().total
    assert mps[0].details["unified_memory_bytes"] == psutil.virtual_memory().total


def test_nvml_process_memory_reads_this_process_only(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    _fake_nvml(monkeypatch, pynvml)
    me = os.getpid()
    compute = {
        0: [SimpleNamespace(pid=me + 1, usedGpuMemory=9_000_000_000)],  # another process
        1: [SimpleNamespace(pid=me, usedGpuMemory=3_000_000_000), SimpleNamespace(pid=me, usedGpuMemory=None)],
    }

    def graphics(h):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: compute[h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetGraphicsRunningProcesses", graphics)
    closed = []
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: closed.append(True))
    reader = H.nvml_process_memory(me)
    assert reader is not None
    assert reader.read() == {1: 3_000_000_000}
    compute[0].append(SimpleNamespace(pid=me, usedGpuMemory=500))
    assert reader.read() == {0: 500, 1: 3_000_000_000}
    reader.close()
    assert closed == [True]
