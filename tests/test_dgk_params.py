"""DGK subgroup size: keys with t < 224 bits (below 112-bit security) are refused everywhere they enter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from blindscore.crypto.dgk import (
    DEFAULT_T_BITS,
    DGK_SECRET_FILE,
    MIN_T_BITS,
    DGKKeyPair,
    DGKPublicKey,
    check_dgk_key_bits,
    generate_dgk_keypair,
    load_dgk_keypair,
    save_dgk_keypair,
)
from blindscore.crypto.keyfile import Passphrase, write_secret
from blindscore.errors import InvalidInputError, KeySizeError
from blindscore.wire import serde

REFUSAL = r"t=160 bits is refused: at least t=224 bits are required"


def _with_t(public: dict[str, Any], t: int) -> dict[str, Any]:
    return {**public, "t": t}


def test_floor_and_default_are_224() -> None:
    assert MIN_T_BITS == 224
    assert DEFAULT_T_BITS >= MIN_T_BITS


def test_session_key_has_t_224(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    assert pk.t == 224
    assert DGKPublicKey.from_dict(pk.to_dict()) == pk  # at the floor: accepted


@pytest.mark.parametrize("t", [160, 223])
def test_from_dict_refuses_small_t(dgk_keypair: DGKKeyPair, t: int) -> None:
    d = _with_t(dgk_keypair.public_key.to_dict(), t)
    with pytest.raises(KeySizeError, match=rf"t={t} bits is refused: at least t=224 bits are required"):
        DGKPublicKey.from_dict(d)


def test_refusal_is_an_invalid_input_error(dgk_keypair: DGKKeyPair) -> None:
    with pytest.raises(InvalidInputError, match=REFUSAL):
        DGKPublicKey.from_dict(_with_t(dgk_keypair.public_key.to_dict(), 160))


def test_constructor_refuses_small_t(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    with pytest.raises(KeySizeError, match=REFUSAL):
        DGKPublicKey(pk.n, pk.g, pk.h, pk.u, 160)


def test_wire_json_refuses_small_t(dgk_keypair: DGKKeyPair) -> None:
    """What a bank sends in RegisterBank: the bureau must not accept a t = 160 key either."""
    text = json.dumps(_with_t(dgk_keypair.public_key.to_dict(), 160))
    with pytest.raises(KeySizeError, match=REFUSAL):
        serde.dgk_key_from_json(text)
    assert serde.dgk_key_from_json(serde.dgk_key_to_json(dgk_keypair.public_key)) == dgk_keypair.public_key


def _rewrite_secret_with_t(
    directory: Path, keypair: DGKKeyPair, t: int, passphrase: Passphrase | None
) -> None:
    document = keypair.secret_key._export()
    document["public"] = _with_t(document["public"], t)
    write_secret(
        directory / DGK_SECRET_FILE,
        document,
        kind="dgk-secret",
        key_id=keypair.public_key.key_id,
        passphrase=passphrase,
    )


def test_load_refuses_a_saved_key_with_small_t(dgk_keypair: DGKKeyPair, tmp_path: Path) -> None:
    save_dgk_keypair(tmp_path, dgk_keypair)
    assert load_dgk_keypair(tmp_path).public_key == dgk_keypair.public_key  # the file loads as saved
    _rewrite_secret_with_t(tmp_path, dgk_keypair, 160, None)
    with pytest.raises(KeySizeError, match=REFUSAL):
        load_dgk_keypair(tmp_path)


def test_load_refuses_a_sealed_key_with_small_t(dgk_keypair: DGKKeyPair, tmp_path: Path) -> None:
    passphrase = Passphrase("correct horse battery staple")
    _rewrite_secret_with_t(tmp_path, dgk_keypair, 160, passphrase)
    with pytest.raises(KeySizeError, match=REFUSAL):
        load_dgk_keypair(tmp_path, passphrase=passphrase)


@pytest.mark.parametrize("t", [160, 223])
def test_generation_refuses_small_t(t: int) -> None:
    with pytest.raises(KeySizeError, match=rf"t={t} bits is refused: at least t=224"):
        check_dgk_key_bits(2048, t)
    with pytest.raises(KeySizeError, match=rf"t={t} bits is refused"):
        generate_dgk_keypair(2048, t_bits=t)  # refused before any prime is searched


def test_generation_accepts_the_floor_and_refuses_above_the_ceiling() -> None:
    check_dgk_key_bits(2048, 224)
    with pytest.raises(KeySizeError, match=r"t=513 bits is refused: at most t=512"):
        check_dgk_key_bits(2048, 513)
