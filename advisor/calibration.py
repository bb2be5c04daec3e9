"""The calibration store: every `advisor bench` run, kept in SQLite, and the fit it yields.

Each run records the machine's fingerprint, the model, precision, runtime, placement, and the
measured and estimated figures. `load_for(hw)` fits, per (runtime, precision, device kind),
the ratio of measured to estimated time per decode step, by which later estimates are multiplied.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advisor.costmodel.speed import Calibration, efficiency_group
from advisor.errors import AdvisorError
from advisor.paths import cache_dir, set_aside
from advisor.spec import Hardware
from advisor.textutil import one_line

_log = logging.getLogger(__name__)
DB_FILE = "calibration.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    model TEXT NOT NULL,
    precision TEXT NOT NULL,
    runtime TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_kind TEXT NOT NULL,
    placement TEXT NOT NULL,
    layers INTEGER NOT NULL,
    bytes_per_token REAL NOT NULL,
    bandwidth_gbps REAL NOT NULL,
    measured_tok_s REAL NOT NULL,
    estimated_tok_s REAL,
    measured_json TEXT NOT NULL,
    estimated_json TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Run:
    fingerprint: str
    model: str
    precision: str
    runtime: str
    kind: str
    device_kind: str
    placement: str
    layers: int
    bytes_per_token: float
    bandwidth_gbps: float
    measured_tok_s: float
    estimated_tok_s: float | None = None
    measured: dict[str, Any] | None = None
    estimated: dict[str, Any] | None = None
    id: int | None = None
    created_at: str | None = None


def db_path() -> Path:
    return cache_dir() / DB_FILE


_COLUMNS = {
    "id", "created_at", "fingerprint", "model", "precision", "runtime", "kind", "device_kind", "placement", "layers",
    "bytes_per_token", "bandwidth_gbps", "measured_tok_s", "estimated_tok_s", "measured_json", "estimated_json",
}  # fmt: skip


class StoreError(AdvisorError):
    """The calibration store cannot be opened or written (disk full, read-only, a folder in its place)."""


class _Corrupt(Exception):
    """The file is not a calibration store advisor can use: set it aside."""


def _set_aside(path: Path) -> Path:
    # A stale write-ahead log would be replayed into the new store: it moves with the file.
    return set_aside(path, companions=("-wal", "-shm"))


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file (SQLITE_CORRUPT, SQLITE_NOTADB), not a busy, full or read-only one."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or type(exc) is sqlite3.DatabaseError


def _store_error(path: Path, exc: BaseException) -> StoreError:
    reason = one_line(exc, 120)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL") or "disk is full" in reason or getattr(exc, "errno", None) == errno.ENOSPC:
        step = "free some disk space"
    elif name.startswith("SQLITE_BUSY") or "locked" in reason:
        step = "another advisor process holds it: try again when it finishes"
    else:
        step = "check that the folder is writable"
    return StoreError(f"Cannot use the calibration store {path} ({reason}): {step}, or set ADVISOR_CACHE_DIR.")


def _open(path: Path) -> sqlite3.Connection:
    """A connection to a usable store, created if absent; _Corrupt if the file is not one; sqlite3.Error else."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        # Read-only checks first: a damaged or foreign file is set aside exactly as it was found.
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise _Corrupt(f"integrity check: {' '.join(str(check[0] if check else 'no answer').split())[:80]}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables - {"runs", "sqlite_sequence"}:
            raise _Corrupt(f"it holds tables advisor never made ({', '.join(sorted(tables))[:80]})")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if columns and columns != _COLUMNS:
            raise _Corrupt(f"its runs table has other columns ({', '.join(sorted(columns ^ _COLUMNS))[:80]})")
        _use_wal(conn)
        conn.executescript(SCHEMA)
        conn.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_corrupt(exc):
            raise _Corrupt(one_line(exc)) from None
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch the store to WAL (once: the mode is kept in the file). SQLite answers "database is locked" at once,
    without waiting, when two processes switch a new store together: retry, as the busy timeout would."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


@contextlib.contextmanager
def connect(path: Path | None = None, *, warnings: list[str] | None = None) -> Iterator[sqlite3.Connection]:
    """Open the store (created on first use). A corrupt file is renamed aside (with its -wal/-shm), never deleted,
    and a new store started, with a warning in `warnings`. A store that cannot be opened or written raises
    StoreError (one line)."""
    path = path or db_path()
    conn = None
    for attempt in (0, 1):
        try:
            conn = _open(path)
            break
        except _Corrupt as exc:
            if attempt:
                raise StoreError(f"The calibration store {path} is still unreadable after a restart ({exc}).") from None
            try:
                moved = _set_aside(path)
            except OSError as move_exc:
                raise _store_error(path, move_exc) from None
            message = f"calibration store {path} was unreadable ({exc}); moved to {moved.name}, starting anew"
            if warnings is not None:
                warnings.append(message)
            else:
                _log.warning(message)
        except (sqlite3.Error, OSError) as exc:
            raise _store_error(path, exc) from None
    assert conn is not None
    try:
        yield conn
        conn.commit()
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        raise _store_error(path, exc) from None
    finally:
        conn.close()


def record(run: Run, *, path: Path | None = None, warnings: list[str] | None = None) -> int:
    """Store one run; returns its id. Safe with several processes writing at once: each insert is one
    `BEGIN IMMEDIATE` transaction (SQLite's write lock, waited for up to 30 s), so no row is lost."""
    with connect(path, warnings=warnings) as conn:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "INSERT INTO runs (created_at, fingerprint, model, precision, runtime, kind, device_kind, placement,"
            " layers, bytes_per_token, bandwidth_gbps, measured_tok_s, estimated_tok_s, measured_json, estimated_json)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                run.fingerprint,
                run.model,
                run.precision,
                run.runtime,
                run.kind,
                run.device_kind,
                run.placement,
                run.layers,
                run.bytes_per_token,
                run.bandwidth_gbps,
                run.measured_tok_s,
                run.estimated_tok_s,
                json.dumps(run.measured or {}, default=str),
                json.dumps(run.estimated or {}, default=str),
            ),
        )
        return int(cur.lastrowid)


def runs(fingerprint: str | None = None, *, path: Path | None = None, warnings: list[str] | None = None) -> list[Run]:
    """Stored runs, oldest first (only this machine's when a fingerprint is given)."""
    if path is None and not db_path().exists():
        return []
    with connect(path, warnings=warnings) as conn:
        query = "SELECT * FROM runs" + (" WHERE fingerprint = ?" if fingerprint else "") + " ORDER BY id"
        conn.row_factory = sqlite3.Row
        rows = conn.execute(query, (fingerprint,) if fingerprint else ()).fetchall()
    out = []
    skipped = 0
    for r in rows:  # SQLite stores any value in any column: a hand-edited row must not break the fit
        numbers = (r["layers"], r["bytes_per_token"], r["bandwidth_gbps"], r["measured_tok_s"])
        if not all(isinstance(v, (int, float)) for v in numbers) or not isinstance(
            r["estimated_tok_s"], (int, float, type(None))
        ):
            skipped += 1
            continue
        out.append(
            Run(
                id=r["id"],
                created_at=str(r["created_at"]),
                fingerprint=str(r["fingerprint"]),
                model=str(r["model"]),
                precision=str(r["precision"]),
                runtime=str(r["runtime"]),
                kind=str(r["kind"]),
                device_kind=str(r["device_kind"]),
                placement=str(r["placement"]),
                layers=int(r["layers"]),
                bytes_per_token=float(r["bytes_per_token"]),
                bandwidth_gbps=float(r["bandwidth_gbps"]),
                measured_tok_s=float(r["measured_tok_s"]),
                estimated_tok_s=r["estimated_tok_s"],
                measured=_json_object(r["measured_json"]),
                estimated=_json_object(r["estimated_json"]),
            )
        )
    if skipped and warnings is not None:
        warnings.append(f"{skipped} stored runs in {path or db_path()} hold non-numeric figures and were skipped")
    return out


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def clear(*, path: Path | None = None) -> int:
    """Delete every stored run; returns how many there were."""
    if path is None and not db_path().exists():
        return 0
    with connect(path) as conn:
        n = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        conn.execute("DELETE FROM runs")
    return int(n)


def why_not_recorded(hw: Hardware, *, placement: str, cpu_contention: float | None, record: bool = True) -> str | None:
    """The one rule bench and chat share for storing a measured run: None to record it, else the reason not to.
    Runs are stored under the placement that was loaded (never the plan), on a profile measured here, and only
    when other processes left the CPU alone while a placement that computes there was timed."""
    from advisor.hardware import too_contended

    if not record:
        return "--no-record"
    if hw.source != "probe" or not hw.fingerprint:
        return "the hardware was not measured here"
    if "cpu" in placement and too_contended(cpu_contention):
        return f"other processes used {cpu_contention:.0%} of the CPU while it was measured, so its speeds read low"
    return None


# A bench of one configuration takes minutes; runs of it within this span of its newest run are one session.
SESSION_SPAN_S = 3600.0


def _when(run: Run) -> float | None:
    try:
        stamp = datetime.fromisoformat(run.created_at or "")
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def latest_sessions(all_runs: list[Run]) -> list[Run]:
    """The runs of each configuration (model, precision, runtime, placement) from its newest bench session
    only: measuring again replaces what an older session measured (after a driver update, or when that
    session ran on a busy machine) instead of averaging with it. Runs without a time are kept."""

    def key(r: Run) -> tuple:
        # chat answers (one depth each) are a source of their own: they never replace a bench's depth sweep
        return (r.model, r.precision, r.runtime, r.device_kind, r.placement, (r.measured or {}).get("source", "bench"))

    stamped = [(r, _when(r), key(r)) for r in all_runs]
    newest: dict[tuple, float] = {}
    for _, when, k in stamped:
        if when is not None:
            newest[k] = max(when, newest.get(k, when))
    return [r for r, when, k in stamped if when is None or when >= newest[k] - SESSION_SPAN_S]


# NOTE: a calibration ratio outside this range is a broken run (a machine that swapped, a stalled process), not a
# correction: the ratios bench fits on a quiet machine stay within 0.5-2.
SCALE_BOUNDS = (0.2, 5.0)


def _uncalibrated_s(run: Run) -> float | None:
    """The estimate's seconds per step before calibration, as stored with the run (None for runs whose estimate
    came from another version of the speed model: their ratio corrects an estimate advisor no longer makes)."""
    from advisor.costmodel.speed import COST_MODEL_VERSION

    basis = (run.estimated or {}).get("basis") or {}
    if basis.get("cost_model") != COST_MODEL_VERSION:
        return None
    value = basis.get("uncalibrated_s")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def fit(all_runs: list[Run]) -> Calibration:
    """This machine's calibration: per (runtime, precision, device kind), the median ratio of measured to estimated
    (uncalibrated) seconds per decode step over the newest bench session of each configuration; per precision
    group as the fall-back for precisions never measured. The estimate's shape comes from the probe's measured
    step costs, so one model's ratio carries to models of other shapes."""
    single = ("cpu", "cuda:0", "mps:0")
    usable = latest_sessions(
        [r for r in all_runs if r.measured_tok_s > 0 and _uncalibrated_s(r) and r.placement in single]
    )
    ratios: dict[tuple[str, str, str], list[float]] = {}
    kinds: dict[tuple[str, str, str], str] = {}
    for r in usable:
        key = (r.runtime, r.precision, r.device_kind)
        ratios.setdefault(key, []).append((1.0 / r.measured_tok_s) / (_uncalibrated_s(r) or 1.0))
        kinds[key] = r.kind
    lo, hi = SCALE_BOUNDS
    scale = {key: min(max(statistics.median(v), lo), hi) for key, v in ratios.items()}
    groups: dict[tuple[str, str, str], list[float]] = {}
    for (runtime, precision, device), value in scale.items():
        group = efficiency_group(precision, kinds[(runtime, precision, device)])
        groups.setdefault((runtime, group, device), []).append(value)
    for key, values in groups.items():
        scale.setdefault(key, statistics.median(values))
    return Calibration(scale=scale, runs=len(all_runs))


def load_for(hw: Hardware, *, warnings: list[str] | None = None) -> Calibration:
    """The calibration fitted from this machine's runs; no runs (or another machine) -> defaults."""
    if hw.source != "probe" or not hw.fingerprint:
        return Calibration()
    try:
        return fit(runs(hw.fingerprint, warnings=warnings))
    except (sqlite3.Error, StoreError) as exc:  # a store that cannot be read leaves the defaults, with a warning
        if warnings is not None:
            warnings.append(f"{exc} The default efficiencies are used.")
        return Calibration()
