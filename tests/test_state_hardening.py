"""advisor's own state under damage and contention: nothing lost.

* A corrupt calibration store or hardware profile is set aside (renamed, never deleted) and rebuilt, with a
  warning; a busy or unwritable store is NOT set aside (that would hide every stored run).
* Two advisor processes writing the calibration store at once lose no row.
* A full disk while writing leaves the old file intact and says so in one AdvisorError line.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advisor import calibration as C
from advisor import hardware as H
from advisor.errors import AdvisorError
from advisor.paths import cache_dir
from advisor.spec import Device, Hardware


def _run(i: int = 0, **extra) -> C.Run:
    fields = dict(
        fingerprint="fp",
        model=f"model-{i}",
        precision="bf16",
        runtime="transformers",
        kind="float",
        device_kind="cpu",
        placement="cpu",
        layers=30,
        bytes_per_token=2.7e8,
        bandwidth_gbps=20.0,
        measured_tok_s=40.0 + i,
        estimated_tok_s=45.0,
    )
    fields.update(extra)
    return C.Run(**fields)


def _store_with_rows(n: int = 3) -> Path:
    for i in range(n):
        C.record(_run(i))
    return C.db_path()


def _aside(name: str) -> list[Path]:
    return sorted(p for p in cache_dir().iterdir() if p.name.startswith(f"{name}.corrupt-"))


# ---------------------------------------------------------------------------------------------------------------
# Calibration store: corruption


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database " * 100)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 7])


def _scribbled(path: Path) -> None:  # the header survives, a page does not
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page : page * 2] = b"\xa5" * page
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:  # a valid SQLite file of another program's making
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("INSERT INTO runs (what) VALUES ('not ours')")


@pytest.mark.parametrize("damage", [_garbage, _truncated, _scribbled, _foreign], ids=lambda f: f.__name__[1:])
def test_corrupt_store_is_set_aside_and_rebuilt(damage):
    path = _store_with_rows()
    damage(path)
    before = path.read_bytes()

    warnings: list[str] = []
    assert C.runs(warnings=warnings) == []
    aside = [p for p in _aside(C.DB_FILE) if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == before  # renamed, byte for byte, not deleted
    assert len(warnings) == 1 and aside[0].name in warnings[0] and "\n" not in warnings[0]
    assert C.record(_run(9)) >= 1 and [r.model for r in C.runs()] == ["model-9"]  # the new store works


def test_set_aside_takes_the_write_ahead_log_along():
    """A stale -wal left beside a new store would be replayed into it: it moves with the corrupt file."""
    path = C.db_path()
    for suffix, body in (("", b"main"), ("-wal", b"wal"), ("-shm", b"shm")):
        Path(f"{path}{suffix}").write_bytes(body)
    target = C._set_aside(path)
    assert [Path(f"{target}{s}").read_bytes() for s in ("", "-wal", "-shm")] == [b"main", b"wal", b"shm"]
    assert not any(Path(f"{path}{s}").exists() for s in ("", "-wal", "-shm"))


def test_corruption_found_by_record_is_logged(caplog):
    path = _store_with_rows(1)
    _garbage(path)
    with caplog.at_level("WARNING", logger="advisor.calibration"):
        C.record(_run(1))
    assert any("moved to" in r.getMessage() for r in caplog.records)
    assert len(_aside(C.DB_FILE)) == 1


def test_second_corruption_in_the_same_second_keeps_both_copies():
    for i in range(2):
        path = _store_with_rows(1)
        path.write_bytes(f"garbage {i}".encode() * 50)
        C.runs(warnings=[])
    copies = [p for p in _aside(C.DB_FILE) if not p.name.endswith(("-wal", "-shm"))]
    assert sorted(p.read_bytes()[:9] for p in copies) == [b"garbage 0", b"garbage 1"]


def test_busy_store_is_not_set_aside(monkeypatch):
    """SQLite's "database is locked" is an OperationalError, a subclass of DatabaseError: the old code took it
    for corruption and renamed a healthy store aside."""
    path = _store_with_rows(2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    real_connect = sqlite3.connect
    try:
        with monkeypatch.context() as patch, pytest.raises(C.StoreError) as err:
            patch.setattr(C.sqlite3, "connect", lambda p, timeout=30: real_connect(p, timeout=0.2))
            C.record(_run(5))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "another advisor process" in str(err.value) and "\n" not in str(err.value)
    assert not _aside(C.DB_FILE)
    assert len(C.runs()) == 2


def test_store_in_place_of_a_folder_is_one_line():
    C.db_path().mkdir()
    with pytest.raises(C.StoreError, match="calibration store") as err:
        C.record(_run())
    assert isinstance(err.value, AdvisorError) and "\n" not in str(err.value)
    assert C.db_path().is_dir()  # not "set aside": nothing there is ours


def test_hand_edited_rows_are_skipped_not_fatal():
    path = _store_with_rows(2)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET measured_tok_s = 'fast' WHERE model = 'model-0'")
        conn.execute("UPDATE runs SET measured_json = '{broken' WHERE model = 'model-1'")
    warnings: list[str] = []
    rows = C.runs(warnings=warnings)
    assert [r.model for r in rows] == ["model-1"] and rows[0].measured == {}
    assert any("skipped" in w for w in warnings)
    C.fit(rows)


def test_calibration_show_on_a_corrupt_store_warns_and_exits_zero(seeded_hw):
    _garbage(_store_with_rows(1))
    proc = subprocess.run(
        [sys.executable, "-m", "advisor", "calibration", "show"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "moved to" in proc.stderr
    assert len(_aside(C.DB_FILE)) == 1


# ---------------------------------------------------------------------------------------------------------------
# Calibration store: two processes at once

WRITER = """
import os, sys, time
from advisor import calibration as C
tag, n, start, races = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]

def run(i):
    return C.Run(fingerprint=tag, model=f"{tag}-{i}", precision="bf16", runtime="transformers", kind="float",
                 device_kind="cpu", placement="cpu", layers=2, bytes_per_token=1e6, bandwidth_gbps=10.0,
                 measured_tok_s=5.0, measured={"i": i})

main = os.environ["ADVISOR_CACHE_DIR"]
for k, folder in enumerate(races):  # both processes create each of these stores at the same moment
    os.environ["ADVISOR_CACHE_DIR"] = folder
    while time.time() < start + 0.25 * k:
        pass
    for i in range(3):
        C.record(run(i))
os.environ["ADVISOR_CACHE_DIR"] = main
for i in range(n):
    C.record(run(i))
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
def test_two_processes_lose_no_row(existing, tmp_path):
    """Two real processes: first both create the same new stores at the same moment (SQLite refused one of them
    the switch to WAL with "database is locked", at once, and the old code then set the other's new store
    aside), then N records each into one store."""
    n = 100
    if existing:
        _store_with_rows(3)
    races = [tmp_path / f"race-{k}" for k in range(6)]
    start = time.time() + 3.0  # after both have imported advisor
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, tag, str(n), str(start), *map(str, races)],
                         stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    rows = C.runs()
    models = [r.model for r in rows]
    for tag in ("a", "b"):
        assert sorted(m for m in models if m.startswith(f"{tag}-")) == sorted(f"{tag}-{i}" for i in range(n))
    assert len(rows) == 2 * n + (3 if existing else 0)
    assert len({r.id for r in rows}) == len(rows)
    assert not _aside(C.DB_FILE)
    for folder in races:
        assert len(C.runs(path=folder / C.DB_FILE)) == 6, folder
        assert not list(folder.glob("*.corrupt-*"))


# ---------------------------------------------------------------------------------------------------------------
# Full disk


def _fake_hw(tag: str) -> Hardware:
    cpu = Device(kind="cpu", name="Fake CPU", memory_bytes=16 * 10**9, bandwidth_gbps=12.5, free_bytes=8 * 10**9)
    return Hardware(devices=(cpu,), source="probe", fingerprint=H.machine_fingerprint(), notes=(tag,))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["fsync", "write", "mkstemp"])
def test_full_disk_keeps_the_old_hardware_profile(monkeypatch, where):
    path = H.save_hardware(_fake_hw("old"))
    before = path.read_bytes()
    target = {"fsync": (H.os, "fsync"), "write": (H.json, "dump"), "mkstemp": (H.tempfile, "mkstemp")}[where]
    with monkeypatch.context() as patch, pytest.raises(AdvisorError) as err:
        patch.setattr(*target, _enospc)
        H.save_hardware(_fake_hw("new"))
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "free some disk space" in text
    assert "previous profile is kept" in text
    assert isinstance(err.value, H.ProfileWriteError) and isinstance(err.value, OSError)
    assert path.read_bytes() == before  # the old profile, byte for byte
    assert sorted(p.name for p in cache_dir().iterdir()) == ["hardware.json"]  # no temp file left


def test_full_disk_during_a_refresh_is_a_note(monkeypatch):
    path = H.save_hardware(_fake_hw("old"))
    before = path.read_bytes()
    monkeypatch.setattr(H, "probe", lambda **kwargs: _fake_hw("new"))
    monkeypatch.setattr(H.os, "fsync", _enospc)
    hw = H.load_or_probe(refresh=True)
    assert hw.notes[0] == "new" and any("free some disk space" in n for n in hw.notes)
    assert path.read_bytes() == before


def test_full_disk_while_recording_a_run():
    """SQLite reports a full disk as SQLITE_FULL; a page limit on the store makes it say so."""
    path = _store_with_rows(2)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    real_connect = sqlite3.connect

    def limited(p, timeout=30):
        conn = real_connect(p, timeout=timeout)
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    C.sqlite3.connect = limited
    try:
        with pytest.raises(C.StoreError) as err:
            C.record(_run(7, measured={"blob": "x" * 200_000}))
    finally:
        C.sqlite3.connect = real_connect
    assert "free some disk space" in str(err.value) and "\n" not in str(err.value)
    assert [r.model for r in C.runs()] == ["model-0", "model-1"]  # the old rows are intact
    assert not _aside(C.DB_FILE)


# ---------------------------------------------------------------------------------------------------------------
# Hardware profile: damage found by fuzzing


@pytest.mark.parametrize(
    "change",
    [
        {"notes": 5},  # tuple(5): TypeError escaped _read_cache
        {"devices": [{"kind": "cpu", "name": "x", "memory_bytes": 10**400}]},  # OverflowError later
        {"devices": [{"kind": "cpu", "name": "x", "memory_bytes": 8, "bandwidth_gbps": "fast"}]},  # recommend crashed
        {"devices": [{"kind": "cpu", "name": "x", "memory_bytes": 8, "details": {"bandwidth_gbps_by_dtype": "x"}}]},
        {"devices": []},
        {"ram_total_bytes": -1},
    ],
    ids=["int-notes", "400-digit-memory", "string-bandwidth", "string-details", "no-devices", "negative-ram"],
)
def test_damaged_profile_is_set_aside(monkeypatch, change):
    from advisor.recommend import recommend
    from advisor.sources import catalog

    path = H.save_hardware(_fake_hw("old"))
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    monkeypatch.setattr(H, "probe", lambda **kwargs: _fake_hw("new"))
    hw = H.load_or_probe()
    assert hw.notes[0] == "new" and any("unreadable" in n for n in hw.notes)
    aside = _aside("hardware.json")
    assert len(aside) == 1 and aside[0].read_bytes() == before
    recommend(catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct"), hw)


def test_deeply_nested_profile_is_set_aside(monkeypatch):
    H.cache_path().write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError escaped
    monkeypatch.setattr(H, "probe", lambda **kwargs: _fake_hw("new"))
    assert H.load_or_probe().notes[0] == "new"
    assert len(_aside("hardware.json")) == 1
