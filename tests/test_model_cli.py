"""`blindscore model ...`: import, list, export, verify (three real nodes) and report."""

from __future__ import annotations

import builtins
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from blindscore.app.cli import main
from blindscore.app.model_commands import compare_bands
from blindscore.app.report import BandRow, BandTable, band_figure, band_table, write_png
from blindscore.bureau.flow import BureauNode
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.models.linear import LinearModel
from blindscore.models.registry import load_model_file

GERMAN_CSV = Path(__file__).resolve().parents[1] / "blindscore" / "data" / "germancredit.csv"


@pytest.fixture
def bureau_dir(tmp_path: Path) -> Path:
    BureauNode.open(tmp_path / "bureau")  # installs the default model as v1, like a first start
    return tmp_path / "bureau"


def variant_file(tmp_path: Path, cutoffs: list[float]) -> Path:
    d = default_model().to_dict()
    d["policy"]["cutoffs"] = cutoffs
    del d["encoded"]  # a hand-edited file: the integer section is derived on load
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(d))
    return path


def test_import_list_export(bureau_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = variant_file(tmp_path, [0.1, 0.2, 0.4, 0.6])
    assert main(["model", "import", str(src), "--name", DEFAULT_MODEL_ID, "--data-dir", str(bureau_dir)]) == 0
    assert f"as model {DEFAULT_MODEL_ID} v2" in capsys.readouterr().out
    # Importing the same file again stores nothing new.
    assert main(["model", "import", str(src), "--name", DEFAULT_MODEL_ID, "--data-dir", str(bureau_dir)]) == 0
    assert f"{DEFAULT_MODEL_ID} v2" in capsys.readouterr().out
    assert main(["model", "list", "--data-dir", str(bureau_dir)]) == 0
    listing = capsys.readouterr().out
    assert "A/B/C/D/E on probability at 0.07/0.16/0.32/0.54" in listing
    assert "A/B/C/D/E on probability at 0.1/0.2/0.4/0.6" in listing
    assert " 2 *  blindscore-linear-model" in listing and "20" in listing
    out = tmp_path / "exported.json"
    assert (
        main(
            [
                "model",
                "export",
                DEFAULT_MODEL_ID,
                "--version",
                "1",
                "--output",
                str(out),
                "--data-dir",
                str(bureau_dir),
            ]
        )
        == 0
    )
    assert load_model_file(out) == default_model()


def test_import_reads_the_file_once(
    bureau_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = variant_file(tmp_path, [0.1, 0.2, 0.4, 0.6])
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(str(file)) == src:
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # what pathlib's read_text and read_bytes call
    assert main(["model", "import", str(src), "--name", "once", "--data-dir", str(bureau_dir)]) == 0
    assert "as model once v1" in capsys.readouterr().out
    assert len(opened) == 1


def test_import_refusals(bureau_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(bureau_dir)]
    assert main(["model", "import", str(tmp_path / "nope.json"), "--name", "m", *base]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01")
    assert main(["model", "import", str(junk), "--name", "m", *base]) == 2
    assert "--format" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "blindscore-linear-model", "format": 2}))
    assert main(["model", "import", str(bad), "--name", "m", *base]) == 2
    assert "missing field" in capsys.readouterr().err
    src = variant_file(tmp_path, [0.1, 0.2, 0.3, 0.4])
    assert main(["model", "import", str(src), "--name", "bad name", *base]) == 2
    assert "not a valid identifier" in capsys.readouterr().err
    assert main(["model", "import", str(src), "--name", "m", "--cutoffs", "0.3", *base]) == 2
    assert "own band policy" in capsys.readouterr().err
    assert not (bureau_dir / "models" / "m").exists()
    assert main(["model", "export", "nope", "--output", str(tmp_path / "x.json"), *base]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["model", "list", "--data-dir", str(tmp_path / "missing")]) == 2


def test_types_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "types"]) == 0
    out = capsys.readouterr().out
    assert "blindscore-linear-model" in out and "blindscore.models.linear.LinearModel" in out


def test_compare_bands_fails_outside_the_margin_only() -> None:
    model = default_model()
    rows, _ = load_german_credit()
    rows = rows[:50]
    ids = [f"r{i}" for i in range(len(rows))]
    plain = {i: model.band(r) for i, r in zip(ids, rows, strict=True)}
    ok = compare_bands(model, ids, rows, plain)
    assert ok.ok and ok.agree == 50 and ok.worst_fixed_point_error <= ok.margin
    wrong = dict(plain)
    wrong["r3"] = (wrong["r3"] + 1) % model.policy.n_bands
    bad = compare_bands(model, ids, rows, wrong)
    assert not bad.ok and bad.disagreements == ("r3",) and bad.agree == 49


@pytest.mark.slow
def test_verify_through_three_nodes(
    bureau_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rows.csv"
    with open(GERMAN_CSV, newline="") as src, open(data, "w", newline="") as dst:
        lines = src.readlines()[:41]
        dst.writelines(lines)
    args = ["model", "verify", DEFAULT_MODEL_ID, "--data", str(data), "--data-dir", str(bureau_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "band agreement with the plaintext model: 40/40 (100.00%)" in out
    assert "disagreements outside that margin: 0" in out


def test_verify_refuses_bad_rows_before_starting_nodes(
    bureau_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _ = load_german_credit()
    data = tmp_path / "rows.csv"
    with open(data, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerow(rows[0])
        w.writerow({**rows[1], "duration_in_month": "forever"})
    assert (
        main(["model", "verify", DEFAULT_MODEL_ID, "--data", str(data), "--data-dir", str(bureau_dir)]) == 2
    )
    err = capsys.readouterr().err
    assert "row 2" in err and "duration_in_month" in err
    assert (
        main(
            [
                "model",
                "verify",
                DEFAULT_MODEL_ID,
                "--data",
                str(tmp_path / "none.csv"),
                "--data-dir",
                str(bureau_dir),
            ]
        )
        == 2
    )


def test_report_numbers_match_independent_computations(tmp_path: Path) -> None:
    model: LinearModel = default_model()
    rows, labels = load_german_credit()
    bad = [y == 1 for y in labels]
    table = band_table(model, rows, bad)
    assert [r.count for r in table.rows] == [195, 204, 202, 197, 202]
    assert [round(r.bad_rate * 100, 1) for r in table.rows] == [2.6, 11.3, 22.8, 42.6, 70.3]
    assert table.rows[-1].cum_share == pytest.approx(1.0) and table.rows[-1].cum_bad_share == pytest.approx(
        1.0
    )
    scores = np.array([model.linear_score(r) for r in rows])
    y = np.array(bad)
    assert table.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert table.gini == pytest.approx(2 * roc_auc_score(y, scores) - 1, abs=1e-12)
    assert table.ks == pytest.approx(ks_2samp(scores[y], scores[~y]).statistic, abs=1e-12)
    assert table.higher_is_bad
    png = tmp_path / "bands.png"
    write_png(table, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table.format()
    assert "KS 0.5" in text and "Gini" in text


def chart_table(rows: list[tuple[str, int, int]]) -> BandTable:
    """A band table by hand: (label, count, bads) per band; the statistics are placeholders."""
    total, bads = sum(c for _, c, _ in rows), sum(b for _, _, b in rows)
    return BandTable(
        model="m",
        rows=tuple(
            BandRow(label, c, b, c / total if total else 0.0, b / c if c else math.nan, 0.0, 0.0, 0.0)
            for label, c, b in rows
        ),
        total=total,
        bads=bads,
        ks=0.5,
        band_ks=0.5,
        auc=0.8,
        higher_is_bad=True,
    )


def chart_parts(fig: Any) -> tuple[list[str], list[str], list[Any], list[str], tuple[float, float]]:
    """What a reader sees: bar labels, rate labels, the average line(s), legend entries, right-axis range."""
    ax, ax2 = fig.axes
    averages = [line for line in ax2.lines if line.get_label().startswith("portfolio bad rate")]
    legend = ax2.get_legend()
    return (
        [t.get_text() for t in ax.texts],
        [t.get_text() for t in ax2.texts],
        averages,
        [t.get_text() for t in legend.get_texts()],
        ax2.get_ylim(),
    )


def test_report_chart_labels_bars_and_rates_draws_the_average_and_scales_the_axis() -> None:
    rows, labels = load_german_credit()
    table = band_table(default_model(), rows, [y == 1 for y in labels])
    bar_texts, rate_texts, averages, legend, (bottom, top) = chart_parts(band_figure(table))
    assert bar_texts == ["195\n19.5%", "204\n20.4%", "202\n20.2%", "197\n19.7%", "202\n20.2%"]
    assert rate_texts == ["2.6%", "11.3%", "22.8%", "42.6%", "70.3%"]
    assert len(averages) == 1 and list(averages[0].get_ydata()) == pytest.approx([30.0, 30.0])  # 300/1000
    assert legend == ["applications", "bad rate", "portfolio bad rate 30.0%"]
    assert (bottom, top) == (0.0, pytest.approx(1.15 * 100 * 142 / 202))


def test_report_chart_axis_fits_low_rates_and_skips_empty_bands() -> None:
    """Negative control for the old axis: a portfolio whose worst band is 12 % bad gets 0-13.8 %,
    not 0-100 %. An empty band has no rate point and no label; the average counts only the others."""
    table = chart_table([("A", 100, 2), ("B", 0, 0), ("C", 50, 6)])
    bar_texts, rate_texts, averages, legend, ylim = chart_parts(band_figure(table))
    assert ylim == (0.0, pytest.approx(13.8)) and ylim[1] < 100
    assert bar_texts == ["100\n66.7%", "0\n0.0%", "50\n33.3%"]
    assert rate_texts == ["2.0%", "12.0%"]
    assert list(averages[0].get_ydata()) == pytest.approx([100 * 8 / 150] * 2)
    assert legend[-1] == "portfolio bad rate 5.3%"


def test_report_chart_without_any_rate() -> None:
    """No band holds an application: no rate labels, no average line, a one-percent axis (not NaN)."""
    bar_texts, rate_texts, averages, legend, ylim = chart_parts(
        band_figure(chart_table([("A", 0, 0), ("B", 0, 0)]))
    )
    assert (rate_texts, averages, legend, ylim) == ([], [], ["applications", "bad rate"], (0.0, 1.0))
    assert bar_texts == ["0\n0.0%", "0\n0.0%"]
    # A portfolio without a single bad: a flat zero line on a one-percent axis.
    assert chart_parts(band_figure(chart_table([("A", 10, 0), ("B", 5, 0)])))[4] == (0.0, 1.0)


def test_report_png_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = chart_table([("A", 10, 1), ("B", 10, 4)])
    png = tmp_path / "out" / "bands.png"
    write_png(table, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(p.name for p in png.parent.iterdir()) == [
        "bands.png"
    ]
    before = png.read_bytes()
    from matplotlib.figure import Figure

    def broken(self: Any, fname: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        write_png(chart_table([("A", 10, 9)]), png)
    assert png.read_bytes() == before  # the old chart stays whole; no temporary file is left
    assert sorted(p.name for p in png.parent.iterdir()) == ["bands.png"]


def test_report_cli(bureau_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "r.png"
    args = ["model", "report", DEFAULT_MODEL_ID, "--data", str(GERMAN_CSV), "--target", "creditability"]
    assert main([*args, "--png", str(png), "--data-dir", str(bureau_dir)]) == 0
    out = capsys.readouterr().out
    assert "1000 rows, 300 bad (30.0%)" in out and png.exists()
    assert main([*args[:-1], "no_such_column", "--data-dir", str(bureau_dir)]) == 2
    assert "not a column" in capsys.readouterr().err
    assert main([*args, "--bad", "terrible", "--data-dir", str(bureau_dir)]) == 2
    assert "does not occur" in capsys.readouterr().err


def test_import_on_a_fresh_machine_creates_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import stat

    fresh = tmp_path / "blindscore-data" / "bureau"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01")
    assert main(["model", "import", str(junk), "--name", "m", "--data-dir", str(fresh)]) == 2
    assert not (tmp_path / "blindscore-data").exists()  # a refused file leaves nothing behind
    capsys.readouterr()
    src = variant_file(tmp_path, [0.1, 0.2, 0.4, 0.6])
    assert main(["model", "import", str(src), "--name", "first", "--data-dir", str(fresh)]) == 0
    captured = capsys.readouterr()
    assert "as model first v1" in captured.out
    assert f"created the bureau's data directory {fresh} (owner-only)" in captured.err
    for directory in (tmp_path / "blindscore-data", fresh, fresh / "models"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    # The bureau opens the store the import made and serves the model.
    node = BureauNode.open(fresh)
    try:
        assert node.models.resolve("first", None).model.policy.cutoffs == (0.1, 0.2, 0.4, 0.6)
    finally:
        node.close()


def test_commands_that_read_the_store_say_how_to_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "list", "--data-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path / 'missing'}: no such directory" in err
    assert "'blindscore model import' or 'blindscore bureau serve' creates it" in err
    assert not (tmp_path / "missing").exists()
