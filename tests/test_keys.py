"""Key hygiene: sealed key files, passphrases, secrets kept out of reprs, and the bank's key ring."""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import pickle
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.app.cli import main
from blindscore.app.client import score_one
from blindscore.bank_node.calls import Run
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.keyring import KEYS_DIR, LOCK_FILE, RING_FILE, BankKey, KeyRing
from blindscore.bank_node.server import KeyWatcher, register_keys, register_with_bureau
from blindscore.crypto.dgk import (
    DGK_PUBLIC_FILE,
    DGK_SECRET_FILE,
    DGKKeyPair,
    load_dgk_keypair,
    save_dgk_keypair,
)
from blindscore.crypto.keyfile import (
    ENVELOPE_FORMAT,
    PASSPHRASE_ENV,
    Passphrase,
    passphrase_from,
    read_passphrase_file,
    seal,
    secret_is_sealed,
)
from blindscore.crypto.paillier import PUBLIC_FILE, SECRET_FILE, KeyPair, load_keypair, save_keypair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import (
    AlreadyExistsError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
)
from blindscore.protocol.application import Application, BandDelivery
from blindscore.protocol.comparison import BandComparison

from support import Nodes as Net
from support import NodesFactory

PASSWORD = "correct horse battery staple"
SECRET_FILES = (SECRET_FILE, DGK_SECRET_FILE)
CUTOFFS = [300, 500, 650, 800]


def secret_numbers(kp: KeyPair, dgk: DGKKeyPair) -> list[str]:
    """Decimal and hex renderings of every secret integer of both key pairs."""
    values = [kp.secret_key._sk.p, kp.secret_key._sk.q]
    sk = dgk.secret_key
    values += [sk._p, sk._q, sk._vp, sk._vq]
    return [f(int(v)) for v in values for f in (str, lambda x: format(x, "x"))]


def save_legacy(keys: Path, kp: KeyPair, dgk: DGKKeyPair, passphrase: Passphrase | None = None) -> None:
    """The single-key layout of earlier releases: all four files directly under keys/."""
    save_keypair(keys, kp, passphrase=passphrase)
    save_dgk_keypair(keys, dgk, passphrase=passphrase)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def passphrase_file(path: Path, text: str = PASSWORD + "\n", file_mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, file_mode)
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def band_round_trip(node: BankNode, key_id: str, key: BankKey, score: int, app_id: str) -> int:
    """Run the bureau's side of the band protocol against ``node`` under ``key_id``; return the band."""
    pk, dgk = key.paillier.public_key, key.dgk.public_key
    bureau = BandComparison(pk, dgk, pk.encrypt(score), CUTOFFS, -1000, 5000, 0)
    bits = node.compare_masked(Run(key_id, app_id), bureau.masked_request())
    final = node.compare_blinded(Run(key_id, app_id), bureau.blinded_request(bits))
    delivery = BandDelivery(
        application_id=app_id,
        key_id=key_id,
        model_id="m",
        band_labels=("A", "B", "C", "D", "E"),
        band_ciphertext=bureau.band_ciphertext(final),
    )
    record = node.deliver_band(delivery)
    assert record is not None
    return record.band


# ---------------------------------------------------------------- sealed key files


def test_sealed_round_trip(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    pw = Passphrase(PASSWORD)
    save_legacy(tmp_path, paillier_keypair, dgk_keypair, pw)
    for name, kind, key_id in (
        (SECRET_FILE, "paillier-secret", paillier_keypair.public_key.key_id),
        (DGK_SECRET_FILE, "dgk-secret", dgk_keypair.public_key.key_id),
    ):
        path = tmp_path / name
        assert mode(path) == 0o600
        text = path.read_text()
        envelope = json.loads(text)
        assert envelope["format"] == ENVELOPE_FORMAT and envelope["version"] == 1
        assert envelope["kind"] == kind and envelope["key_id"] == key_id
        assert envelope["aead"] == "AES-256-GCM"
        assert {k: envelope["kdf"][k] for k in ("name", "n", "r", "p")} == {
            "name": "scrypt",
            "n": 2**15,
            "r": 8,
            "p": 1,
        }
        assert len(base64.b64decode(envelope["kdf"]["salt"])) == 16
        assert len(base64.b64decode(envelope["nonce"])) == 12
        assert not any(number in text for number in secret_numbers(paillier_keypair, dgk_keypair))
    assert mode(tmp_path / PUBLIC_FILE) == 0o644 and mode(tmp_path / DGK_PUBLIC_FILE) == 0o644
    loaded = load_keypair(tmp_path, passphrase=Passphrase(PASSWORD))
    assert loaded.public_key == paillier_keypair.public_key
    assert loaded.secret_key.decrypt(paillier_keypair.public_key.encrypt(4711)) == 4711
    dgk = load_dgk_keypair(tmp_path, passphrase=Passphrase(PASSWORD))
    assert dgk.public_key == dgk_keypair.public_key
    assert dgk.secret_key.decrypt(dgk_keypair.public_key.encrypt(9)) == 9
    # A fresh salt and nonce each time: sealing the same key twice gives different files.
    before = (tmp_path / SECRET_FILE).read_text()
    save_keypair(tmp_path, paillier_keypair, passphrase=pw)
    assert (tmp_path / SECRET_FILE).read_text() != before
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_missing_passphrase_is_refused(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    save_legacy(tmp_path, paillier_keypair, dgk_keypair, Passphrase(PASSWORD))
    with pytest.raises(PreconditionError, match="is encrypted") as info:
        load_keypair(tmp_path)
    assert "--passphrase-file" in str(info.value) and PASSPHRASE_ENV in str(info.value)
    assert str(tmp_path / SECRET_FILE) in str(info.value)
    with pytest.raises(PreconditionError, match="is encrypted"):
        load_dgk_keypair(tmp_path)


def test_wrong_passphrase_is_refused_without_details(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    save_legacy(tmp_path, paillier_keypair, dgk_keypair, Passphrase(PASSWORD))
    for load in (load_keypair, load_dgk_keypair):
        with pytest.raises(CryptoError, match="wrong passphrase, or the file was modified") as info:
            load(tmp_path, passphrase=Passphrase("tr0ub4dor&3"))
        message = str(info.value)
        assert "tr0ub4dor" not in message and PASSWORD not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__


def _flip_b64(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "tamper",
    ["ciphertext", "salt", "nonce", "key_id", "kdf_cost"],
)
def test_tampered_sealed_file_is_refused(tmp_path: Path, paillier_keypair: KeyPair, tamper: str) -> None:
    save_keypair(tmp_path, paillier_keypair, passphrase=Passphrase(PASSWORD))
    path = tmp_path / SECRET_FILE
    envelope = json.loads(path.read_text())
    if tamper == "ciphertext":
        envelope["ciphertext"] = _flip_b64(envelope["ciphertext"])
    elif tamper == "salt":
        envelope["kdf"]["salt"] = _flip_b64(envelope["kdf"]["salt"])
    elif tamper == "nonce":
        envelope["nonce"] = _flip_b64(envelope["nonce"])
    elif tamper == "key_id":
        envelope["key_id"] = "pk-" + "0" * 32
    else:
        envelope["kdf"]["n"] = 2**14
    path.write_text(json.dumps(envelope))
    with pytest.raises(CryptoError, match="wrong passphrase, or the file was modified"):
        load_keypair(tmp_path, passphrase=Passphrase(PASSWORD))


def test_malformed_envelopes_name_the_problem(tmp_path: Path, paillier_keypair: KeyPair) -> None:
    save_keypair(tmp_path, paillier_keypair, passphrase=Passphrase(PASSWORD))
    path = tmp_path / SECRET_FILE
    good = json.loads(path.read_text())
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "version": 2}, "version 2 is not supported"),
        ({**good, "kind": "dgk-secret"}, "not a 'paillier-secret'"),
        ({**good, "kdf": {**good["kdf"], "n": 2**30}}, "scrypt parameters outside the accepted range"),
        ({**good, "kdf": {**good["kdf"], "name": "pbkdf2"}}, "unsupported KDF"),
        ({**good, "nonce": "%%%"}, "'nonce' is not base64"),
    ]
    for document, message in cases:
        path.write_text(json.dumps(document))
        with pytest.raises(InvalidInputError, match=message):
            load_keypair(tmp_path, passphrase=Passphrase(PASSWORD))


def test_sealed_file_must_hold_the_key_its_header_names(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    # Authentic (sealed with the passphrase) but bound to another key id than the one inside.
    document = seal(
        paillier_keypair.secret_key._export(),
        Passphrase(PASSWORD),
        kind="paillier-secret",
        key_id="pk-" + "1" * 32,
    )
    path = tmp_path / SECRET_FILE
    path.write_text(json.dumps(document))
    os.chmod(path, 0o600)
    with pytest.raises(CryptoError, match="holds a different key than its header names"):
        load_keypair(tmp_path, passphrase=Passphrase(PASSWORD))


def test_sealed_file_readable_by_others_is_refused(tmp_path: Path, dgk_keypair: DGKKeyPair) -> None:
    save_dgk_keypair(tmp_path, dgk_keypair, passphrase=Passphrase(PASSWORD))
    os.chmod(tmp_path / DGK_SECRET_FILE, 0o640)
    with pytest.raises(PreconditionError, match="chmod 600"):
        load_dgk_keypair(tmp_path, passphrase=Passphrase(PASSWORD))


def test_plaintext_file_with_passphrase_loads_and_warns(
    tmp_path: Path, paillier_keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    save_keypair(tmp_path, paillier_keypair)
    with caplog.at_level(logging.WARNING, logger="blindscore.crypto.keyfile"):
        loaded = load_keypair(tmp_path, passphrase=Passphrase(PASSWORD))
    assert loaded.public_key == paillier_keypair.public_key
    assert "is not encrypted" in caplog.text and "blindscore bank encrypt-keys" in caplog.text
    assert PASSWORD not in caplog.text


def test_malformed_plaintext_secret_does_not_quote_it(tmp_path: Path, paillier_keypair: KeyPair) -> None:
    save_keypair(tmp_path, paillier_keypair)
    path = tmp_path / SECRET_FILE
    d = json.loads(path.read_text())
    d["p"] = d["p"][:-3] + "xyz"
    path.write_text(json.dumps(d))
    with pytest.raises(InvalidInputError, match="malformed Paillier secret key") as info:
        load_keypair(tmp_path)
    assert d["p"][2:40] not in str(info.value)


# ---------------------------------------------------------------- passphrases


def test_passphrase_file(tmp_path: Path, paillier_keypair: KeyPair) -> None:
    save_keypair(tmp_path, paillier_keypair, passphrase=Passphrase(PASSWORD))
    # One trailing newline is not part of the passphrase.
    from_file = read_passphrase_file(passphrase_file(tmp_path / "pw"))
    assert load_keypair(tmp_path, passphrase=from_file).public_key == paillier_keypair.public_key
    # Two are: the second newline belongs to it.
    with pytest.raises(
        CryptoError, match=r"^cannot decrypt key file .*: wrong passphrase, or the file was modified$"
    ):
        load_keypair(
            tmp_path, passphrase=read_passphrase_file(passphrase_file(tmp_path / "pw2", PASSWORD + "\n\n"))
        )


@pytest.mark.parametrize("file_mode", [0o640, 0o604, 0o660])
def test_passphrase_file_readable_by_others_is_refused(tmp_path: Path, file_mode: int) -> None:
    path = passphrase_file(tmp_path / "pw", file_mode=file_mode)
    with pytest.raises(PreconditionError, match=f"chmod 600 {path}") as info:
        read_passphrase_file(path)
    assert PASSWORD not in str(info.value)


def test_passphrase_sources(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        read_passphrase_file(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="is empty"):
        read_passphrase_file(passphrase_file(tmp_path / "empty", "\n"))
    assert passphrase_from(None, {}) is None
    assert isinstance(passphrase_from(None, {PASSPHRASE_ENV: PASSWORD}), Passphrase)
    with pytest.raises(InvalidInputError, match="set but empty"):
        passphrase_from(None, {PASSPHRASE_ENV: ""})
    # The file wins over the environment.
    path = passphrase_file(tmp_path / "pw", file_mode=0o644)
    with pytest.raises(
        PreconditionError, match=r"pw is accessible by other users \(mode 0644\); run: chmod 600 "
    ):
        passphrase_from(path, {PASSPHRASE_ENV: PASSWORD})


def test_passphrase_is_unprintable_and_unpicklable() -> None:
    pw = Passphrase(PASSWORD)
    assert PASSWORD not in repr(pw) and PASSWORD not in str(pw) and PASSWORD not in f"{pw}"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(pw)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(pw)
    with pytest.raises(InvalidInputError, match="must not be empty"):
        Passphrase("")


# ---------------------------------------------------------------- no secrets in reprs


def test_reprs_show_no_secret(tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> None:
    save_legacy(tmp_path / KEYS_DIR, paillier_keypair, dgk_keypair, Passphrase(PASSWORD))
    node = BankNode.open("bank-r", tmp_path, passphrase=Passphrase(PASSWORD))
    ring = KeyRing(tmp_path / KEYS_DIR, passphrase=Passphrase(PASSWORD))
    key = node.current
    texts = [
        repr(node),
        str(node),
        repr(ring),
        repr(key),
        str(key),
        repr(node.all_keys()),
        repr(KeyWatcher(node)),
        repr(key.paillier),
        repr(key.dgk),
        repr(key.paillier.secret_key),
        str(key.paillier.secret_key),
        repr(key.dgk.secret_key),
        str(key.dgk.secret_key),
    ]
    assert key.key_id in repr(node) and key.key_id in repr(key)
    numbers = secret_numbers(paillier_keypair, dgk_keypair)
    for text in texts:
        assert PASSWORD not in text
        assert not any(number in text for number in numbers), text
    for secret in (key, key.paillier.secret_key, key.dgk.secret_key, key.paillier, key.dgk):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(secret)
    node.store.close()


# ---------------------------------------------------------------- the key ring


def test_migration_from_single_key_layout(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    keys = tmp_path / KEYS_DIR
    save_legacy(keys, paillier_keypair, dgk_keypair)
    key_id = paillier_keypair.public_key.key_id
    # Reading the ring (and 'bank key-id') leaves the old layout as it is.
    assert KeyRing(keys).ids() == [key_id] and KeyRing(keys).current_id() == key_id
    code, out, _ = run_cli(["bank", "key-id", "--data-dir", str(tmp_path)])
    assert code == 0 and out == key_id + "\n"
    assert (keys / SECRET_FILE).exists()
    # A previous start was interrupted half-way through the move: the DGK files already moved.
    (keys / key_id).mkdir(mode=0o700)
    for name in (DGK_SECRET_FILE, DGK_PUBLIC_FILE):
        os.replace(keys / name, keys / key_id / name)
    node = BankNode.open("bank-m", tmp_path)
    assert node.key_id == key_id and [k.key_id for k in node.all_keys()] == [key_id]
    assert node.dgk.public_key == dgk_keypair.public_key
    assert sorted(p.name for p in keys.iterdir()) == [LOCK_FILE, key_id, RING_FILE]  # .lock: changes
    assert sorted(p.name for p in (keys / key_id).iterdir()) == sorted(
        [SECRET_FILE, PUBLIC_FILE, DGK_SECRET_FILE, DGK_PUBLIC_FILE]
    )
    assert all(mode(keys / key_id / name) == 0o600 for name in SECRET_FILES)
    assert json.loads((keys / RING_FILE).read_text()) == {"format": 1, "current": key_id}
    node.store.close()
    # Later starts find the new layout.
    again = BankNode.open("bank-m", tmp_path)
    assert again.key_id == key_id
    again.store.close()


def test_sealed_single_key_layout_migrates(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    save_legacy(tmp_path / KEYS_DIR, paillier_keypair, dgk_keypair, Passphrase(PASSWORD))
    with pytest.raises(PreconditionError, match="is encrypted"):
        BankNode.open("bank-s", tmp_path)
    with pytest.raises(CryptoError, match="wrong passphrase"):
        BankNode.open("bank-s", tmp_path, passphrase=Passphrase("not it"))
    node = BankNode.open("bank-s", tmp_path, passphrase=Passphrase(PASSWORD))
    assert node.key_id == paillier_keypair.public_key.key_id
    assert all(secret_is_sealed(tmp_path / KEYS_DIR / node.key_id / name) for name in SECRET_FILES)
    node.store.close()


@dataclass
class Rotated:
    """A data directory whose old-layout key (the session key) was rotated with the CLI."""

    data_dir: Path
    old_id: str
    new_id: str
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def rotated(
    tmp_path_factory: pytest.TempPathFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Rotated:
    data_dir = tmp_path_factory.mktemp("rotated") / "bank"
    save_legacy(data_dir / KEYS_DIR, paillier_keypair, dgk_keypair)
    # The one fresh key generation of the module without a passphrase.
    code, out, err = run_cli(["bank", "rotate-key", "--data-dir", str(data_dir)])
    assert code == 0, err
    return Rotated(data_dir, paillier_keypair.public_key.key_id, out.strip(), out, err)


def copy_of(rotated: Rotated, tmp_path: Path) -> Path:
    target = tmp_path / "bank"
    shutil.copytree(rotated.data_dir, target)  # copies permission bits too
    return target


@pytest.fixture(scope="module")
def new_key(rotated: Rotated) -> BankKey:
    return KeyRing(rotated.data_dir / KEYS_DIR).load_key(rotated.new_id)


def test_cli_rotate_key_and_key_id(rotated: Rotated) -> None:
    keys = rotated.data_dir / KEYS_DIR
    assert rotated.new_id.startswith("pk-") and rotated.new_id != rotated.old_id
    assert "now the current key" in rotated.stderr and "1 older key(s) kept" in rotated.stderr
    # The old single-key layout was migrated first and kept.
    expected = [LOCK_FILE, rotated.old_id, rotated.new_id, RING_FILE]
    assert sorted(p.name for p in keys.iterdir()) == sorted(expected)
    assert mode(keys / rotated.new_id) == 0o700
    assert all(mode(keys / rotated.new_id / name) == 0o600 for name in SECRET_FILES)
    code, out, err = run_cli(["bank", "key-id", "--data-dir", str(rotated.data_dir)])
    assert code == 0 and out == rotated.new_id + "\n"
    assert err.startswith("fingerprint sha256:" + rotated.new_id[3:])
    code, out, _ = run_cli(["bank", "key-id", "--all", "--data-dir", str(rotated.data_dir)])
    assert code == 0
    assert sorted(out.splitlines()) == sorted([rotated.old_id, f"{rotated.new_id}\tcurrent"])


def test_cli_rotate_refuses_small_keys(tmp_path: Path) -> None:
    code, _, err = run_cli(["bank", "rotate-key", "--data-dir", str(tmp_path), "--key-bits", "1024"])
    assert code == 2 and "at least 2048 bits" in err
    assert not (tmp_path / KEYS_DIR).exists()


def test_bank_node_answers_old_and_new_key(rotated: Rotated, new_key: BankKey, tmp_path: Path) -> None:
    node = BankNode.open("bank-k", copy_of(rotated, tmp_path))
    assert node.key_id == rotated.new_id
    assert [k.key_id for k in node.all_keys()] == sorted([rotated.old_id, rotated.new_id])
    old_key = node.key(rotated.old_id)
    assert old_key.paillier.public_key.key_id == rotated.old_id
    assert node.key(rotated.new_id).paillier.public_key == new_key.paillier.public_key
    # An application under the old key finishes; a new one uses the new key.
    assert band_round_trip(node, rotated.old_id, old_key, 520, "app-old") == 2
    assert band_round_trip(node, rotated.new_id, new_key, 820, "app-new") == 4
    assert {r.application_id: r.key_id for r in node.store.all()} == {
        "app-old": rotated.old_id,
        "app-new": rotated.new_id,
    }
    # Each key answers only its own ciphertexts: the old key's ciphertext under the new key id
    # decrypts to garbage, which the bank records as a protocol fault (never a refusal, which would
    # be an oracle on what it decrypted).
    pk_old = old_key.paillier.public_key
    bureau = BandComparison(pk_old, old_key.dgk.public_key, pk_old.encrypt(1), CUTOFFS, -1000, 5000, 0)
    # Reduced modulo the new key's n^2 so that it passes the boundary's range check whichever
    # modulus is larger (the keys are random): what is tested is the decryption, not the range.
    masked = bureau.masked_request()
    masked = dataclasses.replace(masked, ciphertext=masked.ciphertext % new_key.paillier.public_key.nsquare)
    node.compare_masked(Run(rotated.new_id, "app-x"), masked)
    assert node.store.runs("", "app-x") == (1, True, "")
    unknown = "pk-" + "0" * 32
    with pytest.raises(NotFoundError, match=unknown):
        node.compare_masked(Run(unknown, "app-x"), masked)
    with pytest.raises(NotFoundError, match=unknown):
        node.deliver_band(
            BandDelivery(
                application_id="app-x",
                key_id=unknown,
                model_id="m",
                band_labels=("A", "B"),
                band_ciphertext=1,
            )
        )
    node.store.close()


def test_running_node_picks_up_rotation_and_retirement(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, new_key: BankKey
) -> None:
    save_legacy(tmp_path / KEYS_DIR, paillier_keypair, dgk_keypair)
    old_id = paillier_keypair.public_key.key_id
    node = BankNode.open("bank-w", tmp_path)
    watcher = KeyWatcher(node)
    assert watcher.poll() == [] and node.refresh_keys() == []
    ring = KeyRing(tmp_path / KEYS_DIR)
    with pytest.raises(AlreadyExistsError, match=rf"^key {node.current.key_id} is already in "):
        ring.add(node.current)
    # 'rotate-key' in another process: the running node finds the new key on first use of its id.
    ring.add(new_key)
    assert node.key_id == old_id
    assert node.key(new_key.key_id).paillier.public_key == new_key.paillier.public_key
    assert node.key_id == new_key.key_id
    assert band_round_trip(node, old_id, node.key(old_id), 100, "app-1") == 0
    with pytest.raises(PreconditionError, match="is the current key"):
        ring.retire(new_key.key_id)
    with pytest.raises(NotFoundError, match=r"^no key pk-2{32} in "):
        ring.retire("pk-" + "2" * 32)
    with pytest.raises(InvalidInputError, match="not a bank key id"):
        ring.retire("../etc")
    ring.retire(old_id)
    assert not (tmp_path / KEYS_DIR / old_id).exists() and ring.ids() == [new_key.key_id]
    assert node.key(old_id).key_id == old_id  # still in memory until the ring is reread
    assert watcher.poll() == []  # the watcher rereads it (nothing to register: no bureau)
    with pytest.raises(NotFoundError, match=old_id):
        node.key(old_id)
    assert [k.key_id for k in node.all_keys()] == [new_key.key_id]
    node.store.close()


def test_node_without_passphrase_reports_sealed_new_key_once(
    tmp_path: Path,
    paillier_keypair: KeyPair,
    dgk_keypair: DGKKeyPair,
    new_key: BankKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    save_legacy(tmp_path / KEYS_DIR, paillier_keypair, dgk_keypair)
    old_id = paillier_keypair.public_key.key_id
    node = BankNode.open("bank-p", tmp_path)
    KeyRing(tmp_path / KEYS_DIR, passphrase=Passphrase(PASSWORD)).add(new_key)
    watcher = KeyWatcher(node)
    with caplog.at_level(logging.ERROR, logger="blindscore.bank_node.server"):
        assert watcher.poll() == [] and watcher.poll() == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "is encrypted" in errors[0].getMessage()
    # The node goes on with the keys it has.
    assert node.key_id == old_id and node.key(old_id).key_id == old_id
    with pytest.raises(NotFoundError, match=rf"^bank 'bank-p' has no key '{new_key.key_id}'$"):
        node.key(new_key.key_id)
    node.store.close()


@pytest.fixture
def net(make_nodes: NodesFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Net:
    """Three nodes; the bank opens a data directory holding the session key in the old layout and
    is left for the test to register."""

    def bank(data_dir: Path) -> BankNode:
        save_legacy(data_dir / KEYS_DIR, paillier_keypair, dgk_keypair)
        return BankNode.open("bank-n", data_dir)

    return make_nodes("keys", bank=bank, register=False, bank_id="bank-n", platform_id="platform-n")


def test_rotation_end_to_end_over_grpc(net: Net, new_key: BankKey, paillier_keypair: KeyPair) -> None:
    old_id = paillier_keypair.public_key.key_id
    assert register_with_bureau(net.bank_node, net.bureau, net.bank) == old_id
    assert sorted(net.bureau_obj.banks.get("bank-n").keys) == [old_id]

    def register(key: BankKey) -> object:
        return register_keys(net.bank_node, [key], net.bureau, net.bank, attempts=1)

    watcher = KeyWatcher(net.bank_node, register=register)
    KeyRing(net.bank_dir / KEYS_DIR).add(new_key)  # 'bank rotate-key' while the bank serves
    assert watcher.poll() == [new_key.key_id]
    assert sorted(net.bureau_obj.banks.get("bank-n").keys) == sorted([old_id, new_key.key_id])
    assert watcher.poll() == []  # registered once
    # A restarted bank registers every key of its ring, the current one last.
    assert register_with_bureau(net.bank_node, net.bureau, net.bank) == new_key.key_id

    rows, _ = load_german_credit()
    model = default_model()
    for i, key_id in ((0, old_id), (1, new_key.key_id)):
        app = Application(
            application_id=f"app-{i}",
            bank_id="bank-n",
            model_id=DEFAULT_MODEL_ID,
            key_id=key_id,
            consent_reference=f"consent-{i}",
            features=rows[i],
        )
        outcome = score_one(net.platform, app)
        assert outcome.accepted
        record = net.bank_node.store.get(f"app-{i}")
        assert record is not None and record.key_id == key_id
        assert record.band == model.band(rows[i])

    # 'bank retire-key OLD' while the bank serves: the watcher republishes the ring and the bureau
    # drops the old key, so a new application under it is refused at submission, not at the bank.
    KeyRing(net.bank_dir / KEYS_DIR).retire(old_id)
    assert watcher.poll() == [new_key.key_id]
    assert sorted(net.bureau_obj.banks.get("bank-n").keys) == [new_key.key_id]
    assert watcher.poll() == []
    late = Application(
        application_id="app-late",
        bank_id="bank-n",
        model_id=DEFAULT_MODEL_ID,
        key_id=old_id,
        consent_reference="consent-late",
        features=rows[2],
    )
    with pytest.raises(grpc.RpcError) as info:
        score_one(net.platform, late)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and old_id in (info.value.details() or "")


def test_watcher_retries_registration(
    tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, new_key: BankKey
) -> None:
    save_legacy(tmp_path / KEYS_DIR, paillier_keypair, dgk_keypair)
    node = BankNode.open("bank-r", tmp_path)
    calls: list[str] = []

    def register(key: BankKey) -> object:
        calls.append(key.key_id)
        if len(calls) == 1:
            raise NotFoundError("bureau refused")  # any BlindscoreError: retried next round
        return key.key_id

    watcher = KeyWatcher(node, register=register)
    KeyRing(tmp_path / KEYS_DIR).add(new_key)
    assert watcher.poll() == []
    assert watcher.poll() == [new_key.key_id]
    assert watcher.poll() == []
    assert calls == [new_key.key_id, new_key.key_id]
    node.store.close()


# ---------------------------------------------------------------- passphrase-sealed rings via the CLI


def test_cli_encrypt_keys_then_rotate_with_env_passphrase(
    rotated: Rotated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    data_dir = copy_of(rotated, tmp_path)
    keys = data_dir / KEYS_DIR
    pw_file = passphrase_file(tmp_path / "pw")
    code, _, err = run_cli(["bank", "encrypt-keys", "--data-dir", str(data_dir)])
    assert code == 2 and "needs a passphrase" in err
    code, _, err = run_cli(
        [
            "bank",
            "encrypt-keys",
            "--data-dir",
            str(data_dir),
            "--passphrase-file",
            str(passphrase_file(tmp_path / "o", file_mode=0o644)),
        ]
    )
    assert code == 2 and "chmod 600" in err
    code, out, err = run_cli(
        ["bank", "encrypt-keys", "--data-dir", str(data_dir), "--passphrase-file", str(pw_file)]
    )
    assert code == 0, err
    assert len(out.splitlines()) == 4 and all(line.startswith("encrypted ") for line in out.splitlines())
    assert "is not encrypted" not in caplog.text  # no advice to run the command being run
    for key_id in (rotated.old_id, rotated.new_id):
        for name in SECRET_FILES:
            assert secret_is_sealed(keys / key_id / name) and mode(keys / key_id / name) == 0o600
    assert PASSWORD not in out + err
    code, out, _ = run_cli(
        ["bank", "encrypt-keys", "--data-dir", str(data_dir), "--passphrase-file", str(pw_file)]
    )
    assert code == 0 and "already encrypted" in out
    wrong = passphrase_file(tmp_path / "wrong", "something else\n")
    code, _, err = run_cli(
        ["bank", "encrypt-keys", "--data-dir", str(data_dir), "--passphrase-file", str(wrong)]
    )
    assert code == 2 and "wrong passphrase" in err and "something else" not in err

    # Sealed ring: no passphrase, no new key (and nothing generated).
    code, _, err = run_cli(["bank", "rotate-key", "--data-dir", str(data_dir)])
    assert code == 2 and "is encrypted" in err and PASSPHRASE_ENV in err
    node = BankNode.open("bank-e", data_dir, passphrase=Passphrase(PASSWORD))
    with pytest.raises(PreconditionError, match="so must the new one be"):
        KeyRing(keys).add(node.current)
    node.store.close()
    assert sorted(KeyRing(keys).ids()) == sorted([rotated.old_id, rotated.new_id])

    # The passphrase from the environment: the second (and last) fresh key generation here.
    monkeypatch.setenv(PASSPHRASE_ENV, PASSWORD)
    code, out, err = run_cli(["bank", "rotate-key", "--data-dir", str(data_dir)])
    assert code == 0, err
    third = out.strip()
    assert all(secret_is_sealed(keys / third / name) for name in SECRET_FILES)
    monkeypatch.delenv(PASSPHRASE_ENV)
    node = BankNode.open("bank-e", data_dir, passphrase=read_passphrase_file(pw_file))
    assert node.key_id == third and len(node.all_keys()) == 3
    node.store.close()

    code, _, err = run_cli(["bank", "retire-key", third, "--data-dir", str(data_dir)])
    assert code == 2 and "is the current key" in err
    code, out, _ = run_cli(["bank", "retire-key", rotated.old_id, "--data-dir", str(data_dir)])
    assert code == 0 and rotated.old_id in out
    code, out, _ = run_cli(["bank", "key-id", "--all", "--data-dir", str(data_dir)])
    assert sorted(out.splitlines()) == sorted([rotated.new_id, f"{third}\tcurrent"])


def test_a_key_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / KEYS_DIR)
    good = "pk-" + "0" * 32
    with pytest.raises(InvalidInputError, match="is not a bank key id"):
        ring._key_dir(good + "\n")
    assert ring._key_dir(good).name == good
