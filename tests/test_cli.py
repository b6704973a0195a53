"""The command line: flag and config-file handling, refusals with messages that name the problem."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from blindscore.app import bench
from blindscore.app.cli import _apply_config, build_parser, main


def test_serve_without_transport_choice_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bureau", "serve", "--data-dir", str(tmp_path / "b"), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "--pki DIR" in err and "--insecure" in err
    assert not (tmp_path / "b").exists()  # refused before anything was created


def test_pki_and_insecure_together_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["platform", "serve", "--insecure", "--pki", str(tmp_path), "--listen", "127.0.0.1:0"])
    assert code == 2
    assert "either --pki or --insecure" in capsys.readouterr().err


def test_certs_init(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert main(["certs", "init", str(pki), "--bank-id", "bank-a", "--bank-id", "bank-b"]) == 0
    out = capsys.readouterr().out
    for name in ("bureau-1", "bank-a", "bank-b", "platform-1"):
        assert name in out
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600
    assert main(["certs", "init", str(pki)]) == 2  # never overwrites a CA silently
    err = capsys.readouterr().err
    assert "already holds a CA" in err and "--force" in err


def test_config_file_gives_defaults_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[bank]\ndata-dir = "/srv/bank"\nbank-id = "bank-from-file"\nkey-bits = 3072\n')
    parser = build_parser()
    args = _apply_config(parser, ["--config", str(cfg), "bank", "serve", "--bank-id", "bank-from-flag"])
    assert args.data_dir == "/srv/bank"
    assert args.key_bits == 3072
    assert args.bank_id == "bank-from-flag"


def test_config_file_unknown_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[bank]\ndata_dirr = "/srv/bank"\n')
    assert main(["--config", str(cfg), "bank", "serve", "--insecure"]) == 2
    assert "data_dirr" in capsys.readouterr().err


def test_config_file_missing_and_malformed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "bank", "serve"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[bank\n")
    assert main(["--config", str(bad), "bank", "serve"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_bank_key_id_and_results_without_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bank", "key-id", "--data-dir", str(tmp_path)]) == 2
    assert "no public key" in capsys.readouterr().err
    assert main(["bank", "results", "--data-dir", str(tmp_path)]) == 2
    assert "no results database" in capsys.readouterr().err


def test_score_bad_cutoffs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "score",
            "--model",
            "m.skops",
            "--input",
            "i.csv",
            "--output",
            str(tmp_path / "o.csv"),
            "--cutoffs",
            "a,b",
        ]
    )
    assert code == 2
    assert "--cutoffs" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["bureau", "serve"], "blindscore.bureau.cli"),
        (["bureau", "audit", "list"], "blindscore.bureau.cli"),
        (["bank", "serve"], "blindscore.bank_node.cli"),
        (["bank", "trust", "reset", "bureau-1"], "blindscore.bank_node.cli"),
        (["bank", "key-id"], "blindscore.bank_node.cli"),
        (["platform", "serve"], "blindscore.platform_node.cli"),
        (["certs", "init", "pki"], "blindscore.app.cli"),
    ],
)
def test_each_node_owns_its_commands(argv: list[str], module: str) -> None:
    args = build_parser().parse_args(argv)
    assert args.func.__module__ == module
    assert args.role == argv[0]


def test_bank_serve_bad_limits_refused_before_anything_is_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "bank",
        "serve",
        "--insecure",
        "--data-dir",
        str(tmp_path / "b"),
        "--bureau",
        "",
        "--max-faults",
        "0",
    ]
    assert main(argv) == 2
    assert "--max-runs / --max-faults" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_audit_commands_refuse_a_bad_head_and_a_missing_trail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bureau", "audit", "verify", "--data-dir", str(tmp_path), "--expected-head", "7:abc"]) == 2
    assert "SEQ:HASH" in capsys.readouterr().err
    assert main(["bureau", "audit", "list", "--data-dir", str(tmp_path)]) == 2
    assert (
        f"no audit trail in {tmp_path} (no applications.sqlite3 or audit.sqlite3)" in capsys.readouterr().err
    )


# ---------------------------------------------------------------------- every command's --help


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the real parser, found through argparse's own subparser actions."""
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _command_paths(child, (*path, name))
    return paths


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _command_paths(build_parser())
    assert {("bench",), ("bank", "serve"), ("model", "import"), ("bureau", "audit", "verify")} <= set(paths)
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(" ".join(["usage: blindscore", *path])), path


def test_bench_help_lists_its_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{" + ",".join([*bench.WORKLOADS, "plots"]) + "}" in out and "--applications" in out
    assert {"trees", "mlp"} <= set(bench.WORKLOADS)
    args = build_parser().parse_args(["bench", "batch", "--json", "--applications", "30"])
    assert (args.workload, args.json, args.applications, args.key_bits) == ("batch", True, 30, 2048)


def test_every_flag_and_argument_has_help() -> None:
    parser = build_parser()
    missing = []
    for path in _command_paths(parser):
        sp = parser
        for name in path:
            sub = next(a for a in sp._actions if isinstance(a, argparse._SubParsersAction))
            sp = sub.choices[name]
        missing += [f"{' '.join(path)} {a.option_strings or a.dest}" for a in sp._actions if not a.help]
    assert missing == []


# ---------------------------------------------------------------------- global options, config file


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[bank]\ndata-dir = "{tmp_path / "bank"}"\n')
    options = ["--config", str(cfg), "--log-level", "DEBUG", "--verbose"]
    argv = [*options, "bank", "serve"] if where == "before" else ["bank", "serve", *options]
    args = _apply_config(build_parser(), argv)
    assert (args.config, args.log_level, args.verbose) == (str(cfg), "DEBUG", True)
    assert args.data_dir == str(tmp_path / "bank")
    plain = build_parser().parse_args(["bank", "serve"])
    assert (plain.config, plain.log_level, plain.verbose) == (None, "WARNING", False)


def test_config_after_the_command_through_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[bank]\ndata-dir = "{tmp_path / "from-config"}"\n')
    assert main(["bank", "key-id", "--config", str(cfg)]) == 2
    assert f"no public key in {tmp_path / 'from-config' / 'keys'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("table", "argv", "says"),
    [
        (
            '[bureau]\nmetrics-port = "9100"\n',
            ["bureau", "serve", "--insecure", "--data-dir", "TMP/d"],
            "[bureau] metrics-port: expected an integer (as for --metrics-port), got str '9100'",
        ),
        (
            '[bank]\ninsecure = "yes"\n',
            ["bank", "serve", "--data-dir", "TMP/d"],
            "[bank] insecure: expected true or false (as for --insecure), got str 'yes'",
        ),
        (
            "[bank]\nbank-id = 7\n",
            ["bank", "serve", "--insecure", "--data-dir", "TMP/d"],
            "[bank] bank-id: expected a string (as for --bank-id), got int 7",
        ),
        (
            '[certs]\nbank-id = "bank-a"\n',
            ["certs", "init", "TMP/d"],
            "[certs] bank-id: expected a list of strings (as for --bank-id), got str 'bank-a'",
        ),
        (
            '[model]\nformat = "pickle"\n',
            ["model", "import", "m.json", "--name", "m", "--data-dir", "TMP/d"],
            "[model] format: 'pickle' is not one of auto, blindscore, skops",
        ),
    ],
)
def test_config_values_are_type_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, table: str, argv: list[str], says: str
) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(table)
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    assert main([*argv, "--config", str(cfg)]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_a_serve_table_does_not_break_the_other_commands_of_its_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """[bank] is read by every `bank ...` command: keys only `bank serve` takes are ignored by
    `bank key-id`, the keys it has apply, and a key no bank command takes is still refused."""
    cfg = tmp_path / "node.toml"
    serve_table = '[bank]\nbureau = "10.0.0.1:50051"\nmax-runs = 5\nkey-bits = 3072\ninsecure = true\n'
    cfg.write_text(serve_table + f'data-dir = "{tmp_path / "bank"}"\n')
    assert main(["bank", "key-id", "--config", str(cfg)]) == 2
    assert f"no public key in {tmp_path / 'bank' / 'keys'}" in capsys.readouterr().err
    args = _apply_config(build_parser(), ["bank", "serve", "--config", str(cfg)])
    assert (args.bureau, args.max_runs, args.key_bits, args.insecure) == ("10.0.0.1:50051", 5, 3072, True)
    cfg.write_text(serve_table + "bureau-id = 'bureau-1'\n")  # a [bureau] key in the wrong table
    assert main(["bank", "key-id", "--config", str(cfg)]) == 2
    assert "unknown keys in [bank]: bureau-id" in capsys.readouterr().err


def test_config_flags_on_the_command_line_win_however_written(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[bank]\nbank-id = "from-file"\nkey-bits = 3072\ndata-dir = "/srv/bank"\n')
    argv = ["bank", "serve", "--config", str(cfg), "--bank-id=from-flag", "--key-b", "2048"]
    args = _apply_config(build_parser(), argv)
    assert (args.bank_id, args.key_bits, args.data_dir) == ("from-flag", 2048, "/srv/bank")


# ---------------------------------------------------------------------- start-up lines


@pytest.mark.parametrize("node", ["bureau", "platform"])
def test_start_up_line_is_info(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, node: str
) -> None:
    """A node's "listening on" line is news, not a warning: INFO, so the default level stays quiet."""
    from blindscore.infra import command

    monkeypatch.setattr(command, "_serving_process", lambda: None)  # no umask change in the test process

    def run(self: command.ServeCommand, address: str, stop: object, **ready: str) -> int:
        stop()  # type: ignore[operator]
        return 0

    monkeypatch.setattr(command.ServeCommand, "run", run)
    argv = [node, "serve", "--insecure", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / node)]
    args = build_parser().parse_args(argv)
    with caplog.at_level("INFO", logger="blindscore"):
        assert args.func(args) == 0
    lines = [r for r in caplog.records if "listening on" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO"]
    assert lines[0].getMessage().startswith(f"{node} ")


# ---------------------------------------------------------------------- score and model refusals


def _german_frame() -> tuple[object, list[int]]:
    import pandas as pd

    from blindscore.data.german import load_german_credit

    rows, target = load_german_credit()
    cols = ["duration_in_month", "credit_amount", "age_in_years"]
    return pd.DataFrame([{k: float(r[k]) for k in cols} for r in rows[:200]]), list(target[:200])


def _skops(tmp_path: Path, estimator: object, name: str) -> Path:
    import skops.io as sio

    x, y = _german_frame()
    path = tmp_path / name
    sio.dump(estimator.fit(x, y), path)  # type: ignore[attr-defined]
    return path


def _score_input(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("duration_in_month,credit_amount,age_in_years\n12,1000,30\n")
    return path


def test_score_without_cutoffs_refuses_a_model_that_carries_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    model = _skops(tmp_path, LogisticRegression(max_iter=1000), "lr.skops")
    out = tmp_path / "out.csv"
    argv = ["score", "--model", str(model), "--input", str(_score_input(tmp_path)), "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a scikit-learn model carries no band cutoffs; pass --cutoffs" in err
    assert not out.exists()


def test_score_takes_the_format_its_refusal_asks_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = tmp_path / "model.bin"
    odd.write_text('{"kind": "something-else"}')
    base = [
        "score",
        "--model",
        str(odd),
        "--input",
        str(_score_input(tmp_path)),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(base) == 2
    assert "pass --format (one of blindscore, skops" in capsys.readouterr().err
    assert main([*base, "--format", "scorecardpy"]) == 2  # the flag exists and reaches the reader
    assert "a scorecardpy scorecard file carries no bands" in capsys.readouterr().err


def test_unsupported_model_refusal_is_short_and_verbose_gives_the_lists(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    model = _skops(tmp_path, KNeighborsClassifier(3), "knn.skops")
    argv = [
        "score",
        "--model",
        str(model),
        "--input",
        str(_score_input(tmp_path)),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--cutoffs", "0.3"]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert "unsupported types: " in first and "KNeighborsClassifier" in first
    assert "LogisticRegression" in first and "RandomForest" in first and "MLP" in first  # what is supported
    assert len(err) < 700 and "numpy.float64" not in err
    assert err.splitlines()[1] == "blindscore: run again with --verbose for the details"
    assert main([*argv, "--cutoffs", "0.3", "--verbose"]) == 2
    detailed = capsys.readouterr().err
    assert detailed.splitlines()[0] == first
    assert "  numpy.float64" in detailed.splitlines()  # every allowed type, one a line
    assert any(line.startswith("  Pipeline(ColumnTransformer of") for line in detailed.splitlines())
