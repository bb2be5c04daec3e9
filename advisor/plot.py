"""`recommend --plot`: memory against context length per precision, and decode speed against depth."""

from __future__ import annotations

from pathlib import Path

from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.errors import UsageError
from advisor.spec import Hardware, Recommendation

GB = 1e9


def _contexts(limit: int, n: int = 40) -> list[int]:
    """Context lengths from 256 to the model's limit, spaced evenly on a log scale."""
    lo, hi = 256, max(limit, 512)
    return sorted({int(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)})


def plot_recommendation(rec: Recommendation, hw: Hardware, path: str, *, calibration=S.NO_CALIBRATION) -> Path:
    """Draw the two panels to a PNG at `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install matplotlib (scripts/setup.sh installs it).") from None
    spec = rec.model
    ctxs = _contexts(spec.max_context or 32768)
    fig, (ax_mem, ax_speed) = plt.subplots(1, 2, figsize=(13, 5))
    budget = sum(S.usable_bytes(d, 0.0) for d in hw.devices if d.kind != "cpu") or (
        hw.cpu.memory_bytes if hw.cpu else 0
    )
    for opt in rec.options:
        kind = next((d.kind for d in hw.devices if d.kind != "cpu"), "cpu")
        totals = [M.estimate(spec, opt.precision, context=c, device_kind=kind).total_bytes / GB for c in ctxs]
        style = "-" if opt.runtime == "transformers" else "--"
        width = 2.5 if opt is rec.recommended else 1.2
        ax_mem.plot(ctxs, totals, style, linewidth=width, label=f"{opt.precision} ({opt.runtime})")
        reach = opt.max_context_offload or opt.max_context or ctxs[-1]
        depths = [c for c in ctxs if c <= reach] or ctxs[:1]
        speeds = []
        for d in depths:
            # the placement that holds at this context: on the GPU while it fits, offloaded past that
            place = S.plan(spec, opt.precision, hw, context=d)
            t, _ = S.decode_seconds(spec, opt.precision, hw, place, depth=d, calibration=calibration)
            speeds.append(1 / t if t else 0.0)
        ax_speed.plot(depths, speeds, style, linewidth=width, label=opt.precision)
    if budget:
        ax_mem.axhline(budget / GB, color="black", linewidth=1, label="device memory")
    ax_mem.set(
        xscale="log",
        yscale="log",
        xlabel="context (tokens)",
        ylabel="memory (GB)",
        title=f"{spec.id}: memory vs context",
    )
    ax_speed.set(
        xscale="log",
        xlabel="context depth (tokens)",
        ylabel="decode tokens/s",
        title="decode speed vs depth (estimate)",
    )
    ax_mem.legend(fontsize=7, ncol=2)
    ax_speed.legend(fontsize=7, ncol=2)
    ax_mem.grid(True, which="both", alpha=0.3)
    ax_speed.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
