"""scripts/cost_floor.py: the CPU floor of a tree application, as docs/performance.md quotes it."""

from __future__ import annotations

import pytest

from blindscore.crypto.paillier import KeyPair
from scripts.cost_floor import main, measure


def test_the_floor_adds_its_parts_and_divides_by_the_cores(paillier_keypair: KeyPair) -> None:
    got = measure(paillier_keypair, trees=2, depth=2, cores=2, repeats=1)
    parts = [got[k] for k in ("decryptions_ms", "packing_ms", "garbling_ms", "evaluation_ms")]
    assert all(p > 0 for p in parts)
    assert got["total_ms"] == pytest.approx(sum(parts), abs=0.2)
    assert got["max_apps_per_s"] == pytest.approx(2e3 / got["total_ms"], rel=0.01)
    # 2 trees x 3 nodes of 34-bit slots (float32 keys: 33-bit values and the spare bit)
    assert got["slot_bits"] == 34 and got["packing_ms"] == pytest.approx(
        got["squaring_us"] * 6 * 34 / 1e3, abs=0.06
    )
    assert got["decryptions_ms"] == pytest.approx(got["decryption_ms"] * got["packed_ciphertexts"], abs=0.06)


@pytest.mark.parametrize("args", [["--trees", "0"], ["--depth", "9"], ["--cores", "0"]])
def test_bad_arguments_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"^2$"):
        main(args)
    assert "--trees and --cores must be at least 1 and --depth from 1 to 8" in capsys.readouterr().err
