"""Band tables for model owners: counts, bad rates, cumulative shares, KS and AUC/Gini, and a PNG of them.

The report runs on the plaintext model at the model owner's side (it needs the outcomes, which
never travel through the protocol). KS and AUC are computed on the continuous score; the band
KS is the largest gap between the cumulative bad and good shares at the band boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blindscore.errors import InvalidInputError
from blindscore.models.contract import PrivateModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BandRow", "BandTable", "band_figure", "band_table", "write_png"]


@dataclass(frozen=True)
class BandRow:
    label: str
    count: int
    bads: int
    share: float
    bad_rate: float
    cum_share: float
    cum_bad_share: float
    cum_good_share: float


@dataclass(frozen=True)
class BandTable:
    model: str
    rows: tuple[BandRow, ...]
    total: int
    bads: int
    ks: float
    band_ks: float
    auc: float
    higher_is_bad: bool

    @property
    def gini(self) -> float:
        return 2.0 * self.auc - 1.0

    def format(self) -> str:
        """The table as aligned text, the way a risk team reads it."""
        head = (
            f"{'band':>6} {'count':>7} {'share':>7} {'bads':>6} {'bad rate':>9} {'cum %':>7} "
            f"{'cum bad %':>10} {'cum good %':>11}"
        )
        lines = [
            f"model {self.model}: {self.total} rows, {self.bads} bad ({self.bads / self.total:.1%})",
            head,
        ]
        for r in self.rows:
            rate = f"{r.bad_rate:9.1%}" if r.count else f"{'-':>9}"
            lines.append(
                f"{r.label:>6} {r.count:7d} {r.share:7.1%} {r.bads:6d} {rate} {r.cum_share:7.1%} "
                f"{r.cum_bad_share:10.1%} {r.cum_good_share:11.1%}"
            )
        direction = "higher score = more risk" if self.higher_is_bad else "higher score = less risk"
        lines.append(
            f"KS {self.ks:.3f} (bands: {self.band_ks:.3f})   AUC {self.auc:.3f}   "
            f"Gini {self.gini:.3f}   ({direction})"
        )
        return "\n".join(lines)


def _auc(scores: np.ndarray, bad: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` ranking bads above goods, ties counted half."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s), dtype=float)
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty(len(s), dtype=float)
    r[order] = ranks
    n_bad = int(bad.sum())
    n_good = len(bad) - n_bad
    return float((r[bad].sum() - n_bad * (n_bad + 1) / 2.0) / (n_bad * n_good))


def _ks(scores: np.ndarray, bad: np.ndarray) -> float:
    """max |F_bad(s) - F_good(s)| over all score thresholds."""
    order = np.argsort(scores, kind="mergesort")
    s, b = scores[order], bad[order]
    cum_bad = np.cumsum(b) / b.sum()
    cum_good = np.cumsum(~b) / (~b).sum()
    last = np.r_[s[1:] != s[:-1], True]  # evaluate only after the last of each tied score
    return float(np.max(np.abs(cum_bad - cum_good)[last]))


def band_table(
    model: PrivateModel, rows: Sequence[Mapping[str, object]], outcomes: Sequence[bool], *, name: str = ""
) -> BandTable:
    """The band table of ``model`` on ``rows`` whose outcomes are ``outcomes`` (True = bad)."""
    if len(rows) != len(outcomes):
        raise InvalidInputError("rows and outcomes differ in length")
    bad = np.asarray(outcomes, dtype=bool)
    if len(bad) == 0 or bad.all() or not bad.any():
        raise InvalidInputError("the report needs both good and bad outcomes in the data")
    scores = np.array([model.decision_value(r) for r in rows], dtype=float)
    bands = np.array([model.band(r) for r in rows], dtype=int)
    labels = model.policy.labels
    total, n_bad = len(bad), int(bad.sum())
    n_good = total - n_bad
    out: list[BandRow] = []
    cum = cum_b = cum_g = 0
    band_ks = 0.0
    for k, label in enumerate(labels):
        in_band = bands == k
        count, bads = int(in_band.sum()), int(bad[in_band].sum())
        cum, cum_b, cum_g = cum + count, cum_b + bads, cum_g + (count - bads)
        band_ks = max(band_ks, abs(cum_b / n_bad - cum_g / n_good))
        out.append(
            BandRow(
                label=label,
                count=count,
                bads=bads,
                share=count / total,
                bad_rate=bads / count if count else math.nan,
                cum_share=cum / total,
                cum_bad_share=cum_b / n_bad,
                cum_good_share=cum_g / n_good,
            )
        )
    auc = _auc(scores, bad)
    higher_is_bad = auc >= 0.5
    return BandTable(
        model=name or model.name,
        rows=tuple(out),
        total=total,
        bads=n_bad,
        ks=_ks(scores, bad),
        band_ks=band_ks,
        auc=auc if higher_is_bad else 1.0 - auc,
        higher_is_bad=higher_is_bad,
    )


#: Headroom above the largest bad rate on the right axis, so the top point and its label fit.
RATE_HEADROOM = 1.15


def _rate_axis_top(rates: Sequence[float], average: float) -> float:
    """Top of the right axis in percent: the data's largest rate plus headroom, never a fixed 100 %.

    Empty bands (NaN) are ignored; with no rate above zero the axis spans one percent, so a flat
    zero line still sits on the axis rather than in the middle of an arbitrary range.
    """
    finite = [x for x in (*rates, average) if math.isfinite(x)]
    top = RATE_HEADROOM * max(finite, default=0.0)
    return top if top > 0 else 1.0


def band_figure(table: BandTable) -> Figure:
    """The band chart as a matplotlib figure (Agg canvas, no pyplot state): bars of applications
    per band labelled with count and share, the bad rate per band on a right axis scaled to the
    data with each point labelled, the portfolio's average bad rate as a dashed line, one legend."""
    try:
        import matplotlib  # first the package: a submodule found in sys.modules would hide its absence
    except ImportError:
        raise InvalidInputError("writing a PNG needs matplotlib: pip install 'blindscore[report]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    del matplotlib
    fig = Figure(figsize=(7, 4.4), dpi=120)
    FigureCanvasAgg(fig)  # a canvas of its own: savefig and tests never touch pyplot's backend
    ax = fig.add_subplot()
    x = list(range(len(table.rows)))
    counts = [r.count for r in table.rows]
    bars = ax.bar(x, counts, color="#8fb3d9", label="applications")
    ax.bar_label(
        bars, labels=[f"{r.count}\n{r.share:.1%}" for r in table.rows], label_type="center", fontsize=8
    )
    ax.set_xticks(x, [r.label for r in table.rows])
    ax.set_xlabel("band")
    ax.set_ylabel("applications")
    ax.set_ylim(0, max(max(counts, default=0), 1) * 1.1)
    ax2 = ax.twinx()
    rates = [r.bad_rate * 100 if r.count else math.nan for r in table.rows]
    (line,) = ax2.plot(x, rates, color="#c0392b", marker="o", label="bad rate")
    for xi, rate in enumerate(rates):
        if math.isfinite(rate):
            ax2.annotate(
                f"{rate:.1f}%", (xi, rate), textcoords="offset points", xytext=(0, 6), ha="center",
                fontsize=8, color="#c0392b", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            )  # fmt: skip
    average = 100.0 * table.bads / table.total if table.total else math.nan
    handles: list[Any] = [bars, line]  # a BarContainer is no Artist, but legend() takes it
    if math.isfinite(average):
        handles.append(
            ax2.axhline(
                average,
                color="#34495e",
                linestyle="--",
                linewidth=1,
                label=f"portfolio bad rate {average:.1f}%",
            )
        )
    ax2.set_ylabel("bad rate (%)")
    ax2.set_ylim(0, _rate_axis_top(rates, average))
    # Below the axes, one row: inside, it would cover a bar or a point whatever the data.
    ax2.legend(
        handles, [str(h.get_label()) for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.18),
        ncols=len(handles), fontsize=8, frameon=False,
    )  # fmt: skip
    ax.set_title(f"{table.model}: KS {table.ks:.3f}, AUC {table.auc:.3f}, Gini {table.gini:.3f}")
    fig.tight_layout()
    return fig


def write_png(table: BandTable, path: Path) -> None:
    """:func:`band_figure` of ``table`` as a PNG at ``path``, written atomically (a temporary file
    beside it, then a rename)."""
    fig = band_figure(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
