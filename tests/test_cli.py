"""The command line: flag and config-file handling, refusals with messages that name the problem."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from blindscore.app.cli import build_parser, main


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
    from blindscore.app.cli import _apply_config

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
    assert f"no audit trail at {tmp_path / 'audit.sqlite3'}" in capsys.readouterr().err
