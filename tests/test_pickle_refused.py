"""A pickle model file is refused by name, by its suffix or its first bytes, and never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from blindscore.app.cli import main
from blindscore.errors import ModelFormatError
from blindscore.importers import AUTO, FORMATS, read_model
from blindscore.importers._common import is_pickle
from blindscore.importers.model_file import detect_format
from blindscore.importers.sklearn import load_sklearn_file, load_sklearn_model

ADVICE = (
    "is a pickle file; blindscore never loads pickles (they can run code): save the model with "
    "skops.io.dump(model, "
)


class _Payload:
    """Unpickling this touches ``marker``: the proof that a refused file was never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def _pickle(path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(_Payload(path.with_name("unpickled")), protocol=protocol))
    return path


def _refused(path: Path, fmt: str = AUTO) -> str:
    with pytest.raises(ModelFormatError) as info:
        read_model(path, fmt=fmt)
    message = str(info.value)
    assert message == f"{path} {ADVICE}'model.skops')"
    assert not path.with_name("unpickled").exists()
    return message


@pytest.mark.parametrize(
    "name", ["model.pkl", "model.pickle", "model.joblib", "model.PKL", "model.bin", "model"]
)
@pytest.mark.parametrize("fmt", [AUTO, *FORMATS])
def test_a_pickle_is_refused_by_name_whatever_the_format(tmp_path: Path, name: str, fmt: str) -> None:
    _refused(_pickle(tmp_path / name), fmt=fmt)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_binary_protocol_is_told_by_its_first_bytes(tmp_path: Path, protocol: int) -> None:
    path = _pickle(tmp_path / "model.json", protocol)
    _refused(path)
    assert is_pickle(Path("model.json"), path.read_bytes()[:2])


def test_a_pickle_suffix_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(b'{"kind": "scorecard"}')  # whatever it holds, a pickle's name is refused
    _refused(path)
    with pytest.raises(ModelFormatError, match=r"model\.pkl is a pickle file"):
        detect_format(Path("model.pkl"), {"kind": "scorecard"})


def test_a_pickle_named_skops_is_refused_before_the_zip_reader(tmp_path: Path) -> None:
    path = _pickle(tmp_path / "model.skops")
    _refused(path)
    for load in (load_sklearn_file, load_sklearn_model):
        with pytest.raises(ModelFormatError, match=r"model\.skops is a pickle file"):
            load(path, cutoffs=(0.5,))
    assert not (tmp_path / "unpickled").exists()


def test_other_files_are_not_taken_for_pickles() -> None:
    assert not is_pickle(Path("model.skops"), b"PK")
    assert not is_pickle(Path("model.json"), b'{"')
    assert not is_pickle(Path("model.ubj"), b"{L")
    assert not is_pickle(Path("model.txt"), b"tr")
    assert not is_pickle(Path("model.bin"), b"\x80\x01")  # protocol 1 has no PROTO opcode
    assert not is_pickle(Path("model.bin"), b"\x80")


def test_model_import_and_score_refuse_a_pickle_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _pickle(tmp_path / "dt.pkl")
    data_dir = str(tmp_path / "bureau")
    assert main(["model", "import", str(path), "--name", "dt", "--data-dir", data_dir]) == 2
    assert (
        main(["model", "import", str(path), "--name", "dt", "--format", "skops", "--data-dir", data_dir]) == 2
    )
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("a\n1\n")
    argv = ["score", "--model", str(path), "--cutoffs", "0.5", "--input", str(csv_in), "--output", "o.csv"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"blindscore: error: {path} {ADVICE}'model.skops')"] * 3
    assert not (tmp_path / "unpickled").exists() and not (tmp_path / "bureau").exists()
