"""A hardware profile measured while other work shared the CPU is measured again on its next use."""

from __future__ import annotations

import dataclasses

from advisor import hardware


def with_cpu(hw, bandwidth, contention):
    cpu = hw.cpu
    details = {**cpu.details, "cpu_contention": contention}
    new_cpu = dataclasses.replace(cpu, bandwidth_gbps=bandwidth, details=details)
    return dataclasses.replace(hw, devices=tuple(new_cpu if d is cpu else d for d in hw.devices))


def probe_returning(monkeypatch, hw) -> list[int]:
    """Replace the probe by one that returns `hw`; the list it returns grows by one per call."""
    calls: list[int] = []

    def fake_probe(**kwargs):
        calls.append(1)
        return hw

    monkeypatch.setattr(hardware, "probe", fake_probe)
    return calls


def test_contended_profile_is_remeasured_and_better_kept(_probed_hardware, monkeypatch):
    hardware.save_hardware(with_cpu(_probed_hardware, 5.0, 0.6))
    calls = probe_returning(monkeypatch, with_cpu(_probed_hardware, 20.0, 0.0))
    hw = hardware.load_or_probe()
    assert calls and hw.cpu.bandwidth_gbps == 20.0
    # The quiet profile replaced the contended one: the next load measures nothing.
    assert hardware.load_or_probe().cpu.bandwidth_gbps == 20.0 and len(calls) == 1


def test_contended_remeasure_keeps_the_less_disturbed(_probed_hardware, monkeypatch):
    hardware.save_hardware(with_cpu(_probed_hardware, 18.0, 0.3))
    monkeypatch.setattr(hardware, "probe", lambda **kw: with_cpu(_probed_hardware, 9.0, 0.7))
    assert hardware.load_or_probe().cpu.bandwidth_gbps == 18.0


def test_quiet_profile_is_used_as_is(_probed_hardware, monkeypatch):
    hardware.save_hardware(with_cpu(_probed_hardware, 21.0, 0.01))

    def boom(**kwargs):
        raise AssertionError("a quiet cached profile must not be measured again")

    monkeypatch.setattr(hardware, "probe", boom)
    assert hardware.load_or_probe().cpu.bandwidth_gbps == 21.0


def test_a_contended_profile_is_measured_again_only_once(_probed_hardware, monkeypatch):
    """On a machine that stays busy the retry is contended too: the better of the two is kept and not measured a
    third time on the next command (each probe costs 30 s or more; `advisor hw --refresh` still re-measures)."""
    hardware.save_hardware(with_cpu(_probed_hardware, 18.0, 0.5))
    calls = probe_returning(monkeypatch, with_cpu(_probed_hardware, 9.0, 0.7))
    assert hardware.load_or_probe().cpu.bandwidth_gbps == 18.0
    assert hardware.load_or_probe().cpu.bandwidth_gbps == 18.0
    assert len(calls) == 1
    hardware.load_or_probe(refresh=True)
    assert len(calls) == 2


def test_a_probe_is_announced_before_it_runs_and_a_cached_profile_is_not(_probed_hardware, monkeypatch):
    """A first probe takes a minute or two: the command says so before it starts, and says nothing when the saved
    profile is used."""
    heard: list[str] = []
    order: list[str] = []

    def fake_probe(**kwargs):
        order.append("probe")
        return with_cpu(_probed_hardware, 20.0, 0.0)

    monkeypatch.setattr(hardware, "probe", fake_probe)
    monkeypatch.setattr(hardware, "_probe_notice", None)
    hardware.on_probe(lambda line: (heard.append(line), order.append("notice")))
    hardware.cache_path().unlink(missing_ok=True)
    hardware.load_or_probe()
    assert order == ["notice", "probe"]
    assert "first run" in heard[0] and str(hardware.cache_path()) in heard[0]
    hardware.load_or_probe()  # the saved, quiet profile: nothing to announce
    assert len(heard) == 1
    hardware.load_or_probe(refresh=True)
    assert len(heard) == 2 and "--refresh" in heard[1]
    hardware.on_probe(None)
    hardware.load_or_probe(refresh=True)
    assert len(heard) == 2


def test_a_damaged_profile_is_announced_as_unusable_not_as_a_first_run(_probed_hardware, monkeypatch):
    heard: list[str] = []
    monkeypatch.setattr(hardware, "probe", lambda **kw: with_cpu(_probed_hardware, 20.0, 0.0))
    monkeypatch.setattr(hardware, "_probe_notice", None)
    hardware.on_probe(heard.append)
    hardware.cache_path().write_text("{ not json", encoding="utf-8")
    try:
        hardware.load_or_probe()
    finally:
        hardware.on_probe(None)
    assert len(heard) == 1 and "cannot be used here" in heard[0] and "first run" not in heard[0]
