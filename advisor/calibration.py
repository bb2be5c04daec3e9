"""The calibration store: every `advisor bench` run, kept in SQLite, and the fit it yields.

Each run records the machine's fingerprint, the model, precision, runtime, placement, and the
measured and estimated figures. `load_for(hw)` fits this machine's decode efficiency and fixed
per-layer cost for each (runtime, precision kind, device kind) from its runs:

    seconds per token = bytes read / (bandwidth x efficiency) + layers x fixed cost

which is linear in (1/efficiency, fixed cost): least squares over the runs. One run alone keeps
the default fixed cost and solves the efficiency.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advisor.costmodel.speed import EFFICIENCY, FIXED_PER_LAYER, Calibration
from advisor.paths import cache_dir
from advisor.spec import Hardware

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


def _set_aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, target)
    return target


@contextlib.contextmanager
def connect(path: Path | None = None, *, warnings: list[str] | None = None) -> Iterator[sqlite3.Connection]:
    """Open the store (created on first use); a corrupt file is renamed aside and a new one started."""
    path = path or db_path()
    for attempt in (0, 1):
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            conn.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            if attempt:
                raise
            moved = _set_aside(path)
            if warnings is not None:
                warnings.append(f"calibration store {path} was unreadable ({exc}); moved to {moved.name}, starting anew")
            continue
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()
        return


def record(run: Run, *, path: Path | None = None) -> int:
    """Store one run; returns its id. Safe with several processes writing at once (SQLite locking)."""
    with connect(path) as conn:
        cur = conn.execute(
            "INSERT INTO runs (created_at, fingerprint, model, precision, runtime, kind, device_kind, placement, layers,"
            " bytes_per_token, bandwidth_gbps, measured_tok_s, estimated_tok_s, measured_json, estimated_json)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                run.fingerprint, run.model, run.precision, run.runtime, run.kind, run.device_kind, run.placement,
                run.layers, run.bytes_per_token, run.bandwidth_gbps, run.measured_tok_s, run.estimated_tok_s,
                json.dumps(run.measured or {}, default=str), json.dumps(run.estimated or {}, default=str),
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
    return [
        Run(
            id=r["id"], created_at=r["created_at"], fingerprint=r["fingerprint"], model=r["model"],
            precision=r["precision"], runtime=r["runtime"], kind=r["kind"], device_kind=r["device_kind"],
            placement=r["placement"], layers=r["layers"], bytes_per_token=r["bytes_per_token"],
            bandwidth_gbps=r["bandwidth_gbps"], measured_tok_s=r["measured_tok_s"], estimated_tok_s=r["estimated_tok_s"],
            measured=json.loads(r["measured_json"]), estimated=json.loads(r["estimated_json"]),
        )
        for r in rows
    ]


def clear(*, path: Path | None = None) -> int:
    """Delete every stored run; returns how many there were."""
    if path is None and not db_path().exists():
        return 0
    with connect(path) as conn:
        n = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        conn.execute("DELETE FROM runs")
    return int(n)


def fit(all_runs: list[Run]) -> Calibration:
    """Least-squares fit of efficiency per (runtime, kind, device kind) and fixed per-layer cost per
    (runtime, device kind).

    The fixed cost is shared by every precision on a device, so it is fitted once, from the kind with
    the most varied runs (fp32 and bf16 runs of one model differ in bytes per bandwidth, which
    separates the two unknowns); the other kinds then solve their efficiency alone.
    """
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in all_runs:
        if run.measured_tok_s > 0 and run.bandwidth_gbps > 0 and run.placement in ("cpu", "cuda:0", "mps:0"):
            groups.setdefault((run.runtime, run.kind, run.device_kind), []).append(run)
    eff: dict[tuple[str, str, str], float] = {}
    fixed: dict[tuple[str, str], float] = {}

    def spread(key: tuple[str, str, str]) -> float:
        us = [r.bytes_per_token / r.bandwidth_gbps for r in groups[key]]
        return (max(us) - min(us)) / max(us) if us else 0.0

    for key in sorted(groups, key=lambda k: (k[1] != "float", -spread(k))):
        runtime, kind, device = key
        group = groups[key]
        # Per run: t = u * x + L * f, with u = bytes / bandwidth, x = 1/efficiency, f = fixed per layer.
        us = [r.bytes_per_token / (r.bandwidth_gbps * 1e9) for r in group]
        ls = [float(r.layers) for r in group]
        ts = [1.0 / r.measured_tok_s for r in group]
        known = fixed.get((runtime, device))
        default_f = known if known is not None else FIXED_PER_LAYER.get((runtime, device), 0.3e-3)
        x, f = _solve(us, ls, ts, default_f) if known is None else _solve_x(us, ls, ts, known)
        if x is None:
            continue
        eff[key] = min(max(1.0 / x, 0.02), 1.5)
        if known is None and f is not None:
            fixed[(runtime, device)] = max(f, 0.0)
    return Calibration(efficiency=eff, fixed_per_layer=fixed, runs=len(all_runs))


def _solve_x(us: list[float], ls: list[float], ts: list[float], f: float) -> tuple[float | None, None]:
    """Efficiency alone, the fixed cost known."""
    suu = sum(u * u for u in us)
    if suu <= 0:
        return None, None
    x = sum(u * (t - v * f) for u, v, t in zip(us, ls, ts)) / suu
    return (x if x > 0 else None), None


def _solve(us: list[float], ls: list[float], ts: list[float], default_f: float) -> tuple[float | None, float | None]:
    """Solve t = u*x + l*f by least squares; fall back to the default f when the system is degenerate."""
    suu = sum(u * u for u in us)
    sll = sum(v * v for v in ls)
    sul = sum(u * v for u, v in zip(us, ls))
    sut = sum(u * t for u, t in zip(us, ts))
    slt = sum(v * t for v, t in zip(ls, ts))
    det = suu * sll - sul * sul
    if len(us) >= 2 and det > 1e-12 * max(suu * sll, 1e-300):
        x = (sut * sll - sul * slt) / det
        f = (suu * slt - sul * sut) / det
        if x > 0 and f >= 0:
            return x, f
    # One run (or collinear runs): keep the fixed cost, solve the efficiency.
    resid = [t - v * default_f for t, v in zip(ts, ls)]
    if suu <= 0:
        return None, None
    x = sum(u * r for u, r in zip(us, resid)) / suu
    if x <= 0:  # the fixed cost alone explains the time: the default is too high for this machine
        x = sum(ts) / max(sum(us), 1e-300) * 0.5
        return x, max(0.0, (sum(ts) - x * sum(us)) / max(sum(ls), 1.0))
    return x, None


def load_for(hw: Hardware, *, warnings: list[str] | None = None) -> Calibration:
    """The calibration fitted from this machine's runs; no runs (or another machine) -> defaults."""
    if hw.source != "probe" or not hw.fingerprint:
        return Calibration()
    try:
        return fit(runs(hw.fingerprint, warnings=warnings))
    except sqlite3.Error:
        return Calibration()


def defaults_table() -> dict[str, Any]:
    return {"efficiency": {"/".join(k): v for k, v in EFFICIENCY.items()},
            "fixed_per_layer_s": {"/".join(k): v for k, v in FIXED_PER_LAYER.items()}, "at": time.time()}
