"""DGK keys: sizes and refusals, zero test and decryption, homomorphism, wire format, persistence, secrecy."""

from __future__ import annotations

import copy
import itertools
import json
import os
import pickle
import re
import select
import signal
import stat
import threading
import time
from pathlib import Path

import gmpy2
import pytest

from blindscore.crypto.dgk import (
    DGK_PUBLIC_FILE,
    DGK_SECRET_FILE,
    DGKKeyPair,
    DGKPublicKey,
    DGKSecretKey,
    generate_dgk_keypair,
    load_dgk_keypair,
    load_or_generate_dgk_keypair,
    save_dgk_keypair,
)
from blindscore.crypto.pools import RandomnessPool, request_scope, waiting_on_peer
from blindscore.errors import CryptoError, InvalidInputError, KeySizeError, PreconditionError

from waiting import wait_for

# A toy key built by hand (tests/test_dgk.py is its only user): u = 65537, t = 16,
# v_p = 65521, v_q = 65519, p - 1 = 2 u v_p r_p and q - 1 = 2 u v_q r_q with r_p = 2^40 + 12 and
# r_q = 2^40 + 59 (the first cofactors from 2^40 + 1 and 2^40 + 7 giving primes), g and h the
# first elements of exact order u v_p v_q and v_p v_q found from base 2 upwards, CRT-combined.
TOY_U = 65537
TOY_VP = 65521
TOY_VQ = 65519
TOY_P = 9442715320223936806553
TOY_Q = 9442427085853363796011
TOY_N = 89162150903685020557841976839831649060060083
TOY_G = 31457055378313731780270128798040014503361581
TOY_H = 71508599770546272894789163820629883801532169
TOY_FINGERPRINT = "8426163e6662e2c7dd8d8e397f546a85dd270a6de0e9e39b0b470845ad1cb88b"
# g^42 h^123456789012 mod n and g^0 h^987654321 mod n
TOY_C42 = 66311037049337731362991074155106417653544120
TOY_C0 = 70474091707662601231253728033541736586910267


def toy_key() -> DGKKeyPair:
    pk = DGKPublicKey(TOY_N, TOY_G, TOY_H, TOY_U, 16, _min_bits=0, _min_t=1)
    return DGKKeyPair(pk, DGKSecretKey(pk, TOY_P, TOY_Q, TOY_VP, TOY_VQ))


# ---------------------------------------------------------------- fixed vector


def test_toy_vector_structure() -> None:
    assert TOY_P * TOY_Q == TOY_N
    assert (TOY_P - 1) // (2 * TOY_U * TOY_VP) == 2**40 + 12
    assert (TOY_Q - 1) // (2 * TOY_U * TOY_VQ) == 2**40 + 59
    kp = toy_key()
    assert kp.public_key.r_bits == 40  # ceil(2.5 * 16)
    assert kp.public_key.fingerprint == TOY_FINGERPRINT


def test_toy_vector_pins_ciphertexts() -> None:
    kp = toy_key()
    pk, sk = kp.public_key, kp.secret_key
    c42 = pk._encrypt_with(42, 123456789012)
    assert int(c42) == TOY_C42
    # The same value from Python's own pow: the fixed-base tables compute g^m h^r and nothing else.
    assert pow(TOY_G, 42, TOY_N) * pow(TOY_H, 123456789012, TOY_N) % TOY_N == TOY_C42
    assert int(pk._encrypt_with(0, 987654321)) == TOY_C0
    assert sk.decrypt(TOY_C42) == 42
    assert sk.is_zero(TOY_C42) is False
    assert sk.is_zero(TOY_C0) is True
    assert sk.decrypt(TOY_C0) == 0


def test_toy_secret_key_rejects_wrong_factors() -> None:
    pk = toy_key().public_key
    with pytest.raises(CryptoError, match=r"^DGK secret key does not match the public key$"):
        DGKSecretKey(pk, TOY_P, TOY_Q + 2, TOY_VP, TOY_VQ)
    with pytest.raises(
        CryptoError, match=r"^DGK secret key: u v_p does not divide p - 1 \(or u v_q, q - 1\)$"
    ):
        DGKSecretKey(pk, TOY_P, TOY_Q, TOY_VQ, TOY_VP)  # subgroup primes swapped


# ---------------------------------------------------------------- generation


def test_generated_key_sizes(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    exported = dgk_keypair.secret_key._export()
    p, q, vp, vq = (int(exported[k], 16) for k in ("p", "q", "vp", "vq"))
    assert pk.bits == 2048
    assert (pk.u, pk.t, pk.r_bits) == (65537, 224, 560)
    assert (p.bit_length(), q.bit_length()) == (1024, 1024)
    assert (vp.bit_length(), vq.bit_length()) == (224, 224)
    assert gmpy2.is_prime(vp) and gmpy2.is_prime(vq) and vp != vq
    assert (p - 1) % (2 * pk.u * vp) == 0 and (q - 1) % (2 * pk.u * vq) == 0
    # g has order exactly u v_p v_q and h exactly v_p v_q modulo n.
    n = pk.n
    assert pow(int(pk.g), pk.u * vp * vq, int(n)) == 1
    assert all(pow(int(pk.g), pk.u * vp * vq // f, int(n)) != 1 for f in (pk.u, vp, vq))
    assert pow(int(pk.h), vp * vq, int(n)) == 1
    assert all(pow(int(pk.h), vp * vq // f, int(n)) != 1 for f in (vp, vq))
    assert pk.key_id.startswith("dgk-") and len(pk.key_id) == 36


@pytest.mark.parametrize("bits", [512, 1024, 2047, 2560])
def test_small_or_odd_sizes_refused(bits: int) -> None:
    expected = (
        f"DGK key size must be one of (2048, 3072, 4096), not {bits}"
        if bits > 2048
        else f"{bits}-bit DGK keys are refused: at least 2048 bits are required"
    )
    with pytest.raises(KeySizeError, match=f"^{re.escape(expected)}$"):
        generate_dgk_keypair(bits)


def test_short_subgroup_refused() -> None:
    with pytest.raises(
        KeySizeError,
        match=r"^DGK subgroup order of t=128 bits is refused: at least t=224 bits are required \(a t-bit",
    ):
        generate_dgk_keypair(2048, t_bits=128)


def test_insecure_sizes_need_the_explicit_flag() -> None:
    kp = generate_dgk_keypair(1024, allow_insecure_for_tests=True)
    assert kp.public_key.bits == 1024
    assert kp.secret_key.decrypt(kp.public_key.encrypt(7)) == 7
    with pytest.raises(KeySizeError, match=r"^DGK modulus has 1024 bits; at least 2048 required$"):
        DGKPublicKey.from_dict(kp.public_key.to_dict())  # loading enforces the floor again


def test_t224_key() -> None:
    kp = generate_dgk_keypair(2048, t_bits=224)
    assert (kp.public_key.t, kp.public_key.r_bits) == (224, 560)
    assert kp.secret_key.is_zero(kp.public_key.encrypt(0))
    assert not kp.secret_key.is_zero(kp.public_key.encrypt(1))


# ---------------------------------------------------------------- encryption and zero test


@pytest.mark.parametrize("m", [0, 1, 2, 3, 1000, 65535, 65536, -1, -65536])
def test_encrypt_decrypt(dgk_keypair: DGKKeyPair, m: int) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    c = pk.encrypt(m)
    assert 0 < c < pk.n
    assert sk.decrypt(c) == m % 65537
    assert sk.is_zero(c) is (m == 0)


def test_encrypt_is_randomised(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    assert len({int(pk.encrypt(5)) for _ in range(8)}) == 8


@pytest.mark.parametrize("b", [0, 1])
def test_encrypt_bit(dgk_keypair: DGKKeyPair, b: int) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    cs = [pk.encrypt_bit(b) for _ in range(4)]
    assert [sk.decrypt(c) for c in cs] == [b] * 4
    assert len({int(c) for c in cs}) == 4


def test_encrypt_bit_refuses_non_bits(dgk_keypair: DGKKeyPair) -> None:
    with pytest.raises(InvalidInputError, match=r"^encrypt_bit takes 0 or 1, not 2$"):
        dgk_keypair.public_key.encrypt_bit(2)


@pytest.mark.parametrize("m", [65537, -65537, 2**70])
def test_plaintext_outside_range_refused(dgk_keypair: DGKKeyPair, m: int) -> None:
    with pytest.raises(InvalidInputError, match=r"outside \(-u, u\)"):
        dgk_keypair.public_key.encrypt(m)


def test_homomorphic_operations(dgk_keypair: DGKKeyPair) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    a, b = pk.encrypt(300), pk.encrypt(45)
    assert sk.decrypt(pk.add(a, b)) == 345
    assert sk.decrypt(pk.sub(a, b)) == 255
    assert sk.decrypt(pk.sub(b, a)) == 65537 - 255
    assert sk.decrypt(pk.neg(b)) == 65537 - 45
    assert sk.decrypt(pk.add_plain(a, -300)) == 0
    assert sk.is_zero(pk.add_plain(a, -300))
    assert sk.decrypt(pk.mul_plain(b, 3)) == 135
    assert sk.decrypt(pk.mul_plain(b, -1)) == 65537 - 45
    assert sk.decrypt(pk.mul_plain(b, 65537 + 2)) == 90  # multipliers act modulo u
    r = pk.rerandomize(a)
    assert r != a and sk.decrypt(r) == 300


def test_blinding_keeps_zero_and_nonzero(dgk_keypair: DGKKeyPair) -> None:
    """What the comparison relies on: a random multiplier in Z_u^* preserves (non)zeroness."""
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    zero, nonzero = pk.encrypt(0), pk.encrypt(-2)
    for rho in (1, 2, 65536, 40000):
        assert sk.is_zero(pk.rerandomize(pk.mul_plain(zero, rho)))
        assert not sk.is_zero(pk.rerandomize(pk.mul_plain(nonzero, rho)))


# ---------------------------------------------------------------- wire format


def test_pack_unpack_round_trip(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    cs = [pk.encrypt(m) for m in (0, 1, 2, 65536)]
    data = pk.pack(cs)
    assert len(data) == 4 * 256 == 4 * pk.ciphertext_bytes
    assert pk.unpack(data, 4) == cs
    assert pk.unpack(data) == cs
    assert pk.unpack(b"") == []


def test_unpack_refuses_wrong_length(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    data = pk.pack([pk.encrypt(1), pk.encrypt(2)])
    with pytest.raises(InvalidInputError, match="not a multiple of 256"):
        pk.unpack(data[:-1])
    with pytest.raises(InvalidInputError, match="expected 3 DGK ciphertexts, got 2"):
        pk.unpack(data, 3)


def test_unpack_refuses_invalid_ciphertexts(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    p = int(dgk_keypair.secret_key._export()["p"], 16)
    width = pk.ciphertext_bytes
    good = pk.pack([pk.encrypt(1)])
    for bad in (0, int(pk.n), int(pk.n) + 1, 2**2048 - 1, p, 3 * p):
        with pytest.raises(InvalidInputError, match="not a unit modulo n"):
            pk.unpack(good + bad.to_bytes(width, "big"), 2)


def test_validate_refuses_non_integers(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    for bad in ("12345", 1.0, None, b"\x01"):
        with pytest.raises(InvalidInputError, match="must be an integer"):
            pk.validate(bad)


def test_public_key_dict_round_trip(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    d = json.loads(json.dumps(pk.to_dict()))
    assert d["format"] == 1 and d["kind"] == "dgk-public"
    again = DGKPublicKey.from_dict(d)
    assert again == pk and again.fingerprint == pk.fingerprint and hash(again) == hash(pk)
    assert dgk_keypair.secret_key.decrypt(again.encrypt(11)) == 11


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "not a blindscore DGK public key (format 1)"),
        ({"kind": "paillier-public"}, "not a blindscore DGK public key (format 1)"),
        ({"n": "zz"}, "DGK public key: malformed field (invalid literal for int() with base 16: 'zz')"),
        ({"u": "65537"}, "DGK public key: u and t must be integers"),
        ({"g": "0x0"}, "DGK public key: g is not a unit modulo n"),
        ({"u": 65539 * 3}, "DGK plaintext modulus u=196617 is not a prime below 2^32"),
    ],
)
def test_public_key_from_dict_refusals(
    dgk_keypair: DGKKeyPair, change: dict[str, object], message: str
) -> None:
    d = {**dgk_keypair.public_key.to_dict(), **change}
    with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$"):
        DGKPublicKey.from_dict(d)


def test_public_key_pickles_without_tables(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    pk.encrypt(1)  # builds the tables
    data = pickle.dumps(pk)
    assert len(data) < 2000
    assert pickle.loads(data) == pk


def test_validate_many(dgk_keypair: DGKKeyPair) -> None:
    pk = dgk_keypair.public_key
    p = int(dgk_keypair.secret_key._export()["p"], 16)
    good = [pk.encrypt(m) for m in (0, 1, 2)]
    assert pk.validate_many(good) == good
    assert pk.validate_many([int(c) for c in good]) == good
    assert pk.validate_many([]) == []
    for bad, message in [
        ([*good, 0], "ciphertext 3 is not a unit"),
        ([good[0], int(pk.n), good[1]], "ciphertext 1 is not a unit"),
        ([good[0], good[1], 7 * p], "ciphertext 2 is not a unit"),  # in range, but shares p with n
        ([good[0], -1], "ciphertext 1 is not a unit"),
        ([good[0], "5"], "ciphertext 1 must be an integer"),
        ([1.0], "ciphertext 0 must be an integer"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            pk.validate_many(bad)


# ---------------------------------------------------------------- precomputed randomness


@pytest.fixture(scope="module")
def small_key() -> DGKKeyPair:
    """A fresh 256-bit key (t = 16): its pool is its own and a value costs microseconds."""
    return generate_dgk_keypair(256, t_bits=16, allow_insecure_for_tests=True)


def test_pooled_values_are_fresh_powers_of_h(dgk_keypair: DGKKeyPair) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    pk.warm(64)
    assert pk.pooled_randomness >= 64
    exported = sk._export()
    order = int(exported["vp"], 16) * int(exported["vq"], 16)
    values = [pk._fresh_h() for _ in range(16)]
    assert len({int(v) for v in values}) == 16
    assert all(pow(int(v), order, int(pk.n)) == 1 and sk.is_zero(v) for v in values)  # in <h>
    # Every recipe that draws from the pool still decrypts to its plaintext.
    assert [sk.decrypt(pk.encrypt_bit(b)) for b in (0, 1, 1, 0)] == [0, 1, 1, 0]
    assert [sk.decrypt(pk.encrypt(m)) for m in (5, -5, 0)] == [5, 65537 - 5, 0]
    c = pk.encrypt(77)
    assert sk.decrypt(pk.rerandomize(c)) == 77 and pk.rerandomize(c) != c


def test_encryption_consumes_the_pool_in_order(small_key: DGKKeyPair) -> None:
    pk, sk = small_key.public_key, small_key.secret_key
    assert pk.pooled_randomness == 0  # nothing is computed before first use
    pk.warm(10)
    assert pk.pooled_randomness == 10
    queued = list(pk._rand().pool._values)
    cts = [pk.encrypt_bit(1) for _ in range(10)]
    # The first ten draws are exactly the precomputed values (the thread appends behind them).
    assert [int(c * gmpy2.invert(pk.g, pk.n) % pk.n) for c in cts] == [int(v) for v in queued]
    assert [sk.decrypt(c) for c in cts] == [1] * 10


def test_pool_refills_when_idle_and_holds_off_when_busy() -> None:
    made = itertools.count()
    makers: set[str] = set()

    def make() -> int:
        makers.add(threading.current_thread().name)
        return next(made)

    pool = RandomnessPool(make, 50, name="dgk-randomness")
    assert len(pool) == 0
    assert pool.take() == 0 and threading.current_thread().name in makers  # dry: computed inline
    # Idle: the daemon thread fills the pool (other threads' work, e.g. Paillier pools, comes first).
    wait_for(lambda: len(pool) >= 50, what="the filler to fill the pool")
    assert len(pool) == 50 and "dgk-randomness" in makers
    time.sleep(0.2)
    assert len(pool) == 50  # bounded
    taken = [pool.take() for _ in range(50)]
    assert taken == sorted(taken) and len(set(taken)) == 50
    # While a request is in flight, the filler waits instead of competing with it.
    with request_scope():
        before = len(pool)
        time.sleep(0.3)
        assert len(pool) - before <= 1
        with waiting_on_peer():  # ... but a request blocked on another node lets it refill
            wait_for(lambda: len(pool) >= 10, what="the filler to refill while the request waits")
    pool.warm(20)
    assert len(pool) >= 20


def test_pool_is_safe_under_concurrent_use() -> None:
    """Many threads drawing while the filler runs: every value is handed out exactly once."""
    lock = threading.Lock()
    made = itertools.count()

    def make() -> int:
        with lock:
            return next(made)

    pool = RandomnessPool(make, 200, name="dgk-randomness")
    pool.warm(100)
    results: list[list[int]] = [[] for _ in range(8)]

    def worker(out: list[int]) -> None:
        for i in range(300):
            out.append(pool.take())
            if i % 50 == 0:
                time.sleep(0.002)  # idle moments let the filler in

    threads = [threading.Thread(target=worker, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [v for out in results for v in out]
    assert len(taken) == 2400 and len(set(taken)) == 2400


def test_concurrent_encryptions_decrypt_and_never_share_randomness(small_key: DGKKeyPair) -> None:
    pk, sk = small_key.public_key, small_key.secret_key
    pk.warm(200)
    results: list[list[tuple[int, int]]] = [[] for _ in range(6)]

    def worker(k: int) -> None:
        for i in range(100):
            b = (i + k) % 2
            results[k].append((b, int(pk.encrypt_bit(b))))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pairs = [pair for out in results for pair in out]
    assert len(pairs) == 600 and len({c for _, c in pairs}) == 600
    assert all(sk.decrypt(c) == b for b, c in pairs)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_restarts_its_thread_in_a_forked_child(small_key: DGKKeyPair) -> None:
    pk, sk = small_key.public_key, small_key.secret_key
    pk.encrypt_bit(1)  # starts the filling thread in this process
    assert pk._rand().pool._thread is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the thread did not survive, a draw restarts it
        ok = pk._rand().pool._thread is None and sk.decrypt(pk.encrypt_bit(1)) == 1
        thread = pk._rand().pool._thread
        ok = ok and thread is not None and thread.is_alive()
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 20)
    answer = os.read(read, 1) if ready else b""
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"


def test_randomness_is_shared_by_copies_of_a_key_and_never_pickled(small_key: DGKKeyPair) -> None:
    pk = small_key.public_key
    pk.warm(30)
    again = DGKPublicKey(pk.n, pk.g, pk.h, pk.u, pk.t, _min_bits=0, _min_t=1)
    assert again is not pk and again.pooled_randomness == pk.pooled_randomness >= 30
    assert again._rand() is pk._rand()  # one table, one pool and one thread per key
    assert pk.__getstate__().keys() == {"n", "g", "h", "u", "t"}
    data = pickle.dumps(pk)
    assert len(data) < 600 and b"randomness" not in data
    loaded = pickle.loads(data)
    assert loaded == pk and loaded._randomness is None
    assert small_key.secret_key.decrypt(loaded.encrypt(3)) == 3
    assert copy.deepcopy(pk) == pk


# ---------------------------------------------------------------- persistence


def test_persistence_round_trip(tmp_path: Path, dgk_keypair: DGKKeyPair) -> None:
    save_dgk_keypair(tmp_path, dgk_keypair)
    assert stat.S_IMODE(os.stat(tmp_path / DGK_SECRET_FILE).st_mode) == 0o600
    public = json.loads((tmp_path / DGK_PUBLIC_FILE).read_text())
    assert public == dgk_keypair.public_key.to_dict()
    assert "p" not in public and "vp" not in public
    loaded = load_dgk_keypair(tmp_path)
    assert loaded.public_key == dgk_keypair.public_key
    c = dgk_keypair.public_key.encrypt(9)
    assert loaded.secret_key.decrypt(c) == 9
    again, created = load_or_generate_dgk_keypair(tmp_path)
    assert created is False and again.public_key == dgk_keypair.public_key


def test_load_or_generate_creates_once(tmp_path: Path) -> None:
    kp, created = load_or_generate_dgk_keypair(tmp_path / "keys")
    assert created is True and kp.public_key.bits == 2048
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / DGK_SECRET_FILE).st_mode) == 0o600
    again, created = load_or_generate_dgk_keypair(tmp_path / "keys")
    assert created is False and again.public_key == kp.public_key


def test_readable_secret_file_refused(tmp_path: Path, dgk_keypair: DGKKeyPair) -> None:
    save_dgk_keypair(tmp_path, dgk_keypair)
    os.chmod(tmp_path / DGK_SECRET_FILE, 0o644)
    with pytest.raises(PreconditionError, match="chmod 600"):
        load_dgk_keypair(tmp_path)


def test_tampered_secret_file_refused(tmp_path: Path, dgk_keypair: DGKKeyPair) -> None:
    save_dgk_keypair(tmp_path, dgk_keypair)
    path = tmp_path / DGK_SECRET_FILE
    d = json.loads(path.read_text())
    d["vp"] = hex(int(d["vp"], 16) + 2)
    path.write_text(json.dumps(d))
    with pytest.raises(
        CryptoError, match=r"^DGK secret key: u v_p does not divide p - 1 \(or u v_q, q - 1\)$"
    ):
        load_dgk_keypair(tmp_path)
    d["kind"] = "paillier-secret"
    path.write_text(json.dumps(d))
    with pytest.raises(InvalidInputError, match="not a blindscore DGK secret key"):
        load_dgk_keypair(tmp_path)


# ---------------------------------------------------------------- secrecy of the secret key


def test_repr_has_no_secret(dgk_keypair: DGKKeyPair) -> None:
    sk = dgk_keypair.secret_key
    exported = sk._export()
    secrets_ = [int(exported[k], 16) for k in ("p", "q", "vp", "vq")]
    for text in (repr(sk), str(sk), repr(dgk_keypair), f"{sk}"):
        assert dgk_keypair.public_key.key_id in text
        for s in secrets_:
            assert str(s) not in text and hex(s)[2:] not in text and hex(s)[2:18] not in text


def test_pickle_fails(dgk_keypair: DGKKeyPair) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(dgk_keypair.secret_key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(dgk_keypair)


def test_copy_fails(dgk_keypair: DGKKeyPair) -> None:
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(dgk_keypair.secret_key)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(dgk_keypair.secret_key)


def test_zero_flags_match_is_zero(dgk_keypair: DGKKeyPair) -> None:
    pk, sk = dgk_keypair.public_key, dgk_keypair.secret_key
    values = [0, 1, 0, 5, 65536, 0, 2, 3, 0, 7, 11]
    cts = [pk.encrypt(v) for v in values]
    assert sk.zero_flags(cts) == [sk.is_zero(c) for c in cts] == [v == 0 for v in values]
    assert sk.zero_flags([]) == []
