"""Deviating parties against real nodes over mutual TLS: what they learn stays within the band.

Three attacks (tests/attackers.py), each played with the budget of at least ten times what it
needed against the nodes before the fix, and each with a negative control that shows the same
attack code succeeding once the defence is removed:

1. a bureau recovers the bank's Paillier prime from a range oracle (CompareMasked, DeliverBand);
2. a bureau binary-searches a packed application's score with non-monotone garbled outputs;
3. a bank shifts its comparison input and forces re-runs to binary-search a score.

Against the fixed nodes the expected outcome is: the bank's answers do not depend on what it
decrypted, a bureau is cut off by counts (runs per application, faults before suspension), and
the bureau gives a bank at most one band per application.

What the attacks needed against the nodes before the fix (d350310, 2048-bit keys, 2 cores):
attack 1 recovered p in 1,083-1,165 CompareMasked calls (3.6-4.8 s; at most 256 + 1,016 for any
key) and, given p to within 2^11, in 78 DeliverBand calls (0.3 s); attack 2 pinned a packed
score to one truncation step in 27 runs (0.5-1 s); attack 3 pinned the distance from a score to
its band's edge in 28 runs (27 forced retries) per application, unary or packed (3-10 s).
The budgets below are ten times that or more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.app.client import score_one
from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.server import start_bank_server
from blindscore.bank_node.store import ResultStore, RunLimits
from blindscore.bureau.applications import DELIVERED, FAILED
from blindscore.bureau.flow import BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.errors import UnavailableError
from blindscore.infra.certs import init_pki
from blindscore.infra.db import Database, RetryPolicy
from blindscore.infra.transport import TransportSecurity, open_channel
from blindscore.protocol import packing
from blindscore.protocol.application import Application, BatchMember, EncryptedApplication, EncryptedBatch
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

import attackers
import waiting
from attackers import (
    DeliveryOracle,
    DeviatingBank,
    MaskedOracle,
    ModelGeometry,
    NaiveBureau,
    VulnerableBank,
    bank_stub,
    packed_score_search,
    recover_prime,
    serve_bank_servicer,
    wait_for,
)
from support import Nodes, NodesFactory

MODEL = default_model()
GEO = ModelGeometry.of(MODEL)
ROWS, _ = load_german_credit()
BUREAU, BANK, PLATFORM = "bureau-1", "bank-1", "platform-1"
#: Codes with which the fixed bank stops a bureau, decided by counts: suspended (PERMISSION_DENIED),
#: or past its runs (FAILED_PRECONDITION, not RESOURCE_EXHAUSTED: that one the bureau retries, and
#: an exhausted application must fail for good; test_attack1_runs_per_application_are_bounded_by_count
#: pins it down).
STOPPED = {"PERMISSION_DENIED", "FAILED_PRECONDITION"}
#: Calls each attack may make: at least ten times what it needed against the vulnerable bank.
PRIME_BUDGET = 13_000
BAND_PRIME_BUDGET = 1_600
PACKED_BUDGET = 280
FORCED_RETRY_BUDGET = 270  # the bank needed 27 forced retries before the fix
#: The fixed bank's defaults (bank_node.store.RunLimits).
MAX_RUNS = 3
MAX_FAULTS = 3
#: A retry policy that lets the bureau's worker retry at once (its rounds still pause 50 ms).
FAST_RETRY = RetryPolicy(base_s=0.005, cap_s=0.02, jitter=0.0)


def sigma_of(row_index: int) -> int:
    """The truncated score floor((s - s_min) / 2^T) of a German credit row (the ground truth)."""
    return GEO.sigma(MODEL.encoded_score(MODEL.spec.encode_row(ROWS[row_index])))


def band_of(row_index: int) -> int:
    return sum(1 for g in GEO.gammas if sigma_of(row_index) >= g)


def secret_prime(keypair: KeyPair) -> int:
    """The prime p that the bank's half decryption reduced by (the test's god view)."""
    return int(keypair.secret_key._sk.p)


# ---------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("attacks-pki")
    init_pki(directory, [("bureau", BUREAU), ("bank", BANK), ("platform", PLATFORM)])
    return directory


def creds(pki: Path, party: str) -> TransportSecurity:
    return TransportSecurity.from_pki(pki, party)


@dataclass
class RealBank:
    node: BankNode
    address: str
    data_dir: Path
    stub: Any  # the bank as the bureau's certificate reaches it


def make_node(
    keypair: KeyPair, dgk: DGKKeyPair, data_dir: Path, *, max_runs: int = 0, max_faults: int = 0
) -> BankNode:
    """A bank node on the session keys, its store in ``data_dir``; limits other than the default
    when the node takes them (bank_node.store.RunLimits)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(data_dir / "results.sqlite3")
    if (max_runs or max_faults) and "limits" in inspect.signature(BankNode).parameters:
        from blindscore.bank_node.store import RunLimits

        limits = RunLimits(max_runs=max_runs or MAX_RUNS, max_faults=max_faults or MAX_FAULTS)
        return BankNode(BANK, keypair, dgk, store, limits=limits)
    return BankNode(BANK, keypair, dgk, store)


@contextlib.contextmanager
def real_bank(pki: Path, node: BankNode, data_dir: Path) -> Iterator[RealBank]:
    server, port = start_bank_server(node, "127.0.0.1:0", security=creds(pki, BANK))
    address = f"127.0.0.1:{port}"
    stub, channel = bank_stub(address, creds(pki, BUREAU), BANK)
    try:
        yield RealBank(node, address, data_dir, stub)
    finally:
        channel.close()
        server.stop(None)
        node.store.close()


@pytest.fixture
def bank(pki: Path, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair) -> Iterator[RealBank]:
    """A fresh bank node (fresh run and fault counts) on the session keys, over mutual TLS."""
    data_dir = tmp_path / "bank"
    with real_bank(pki, make_node(paillier_keypair, dgk_keypair, data_dir), data_dir) as b:
        yield b


@contextlib.contextmanager
def vulnerable_bank(pki: Path, keypair: KeyPair, dgk: DGKKeyPair) -> Iterator[Any]:
    """The bank as it answered before the fix (the negative controls), over mutual TLS."""
    server, address = serve_bank_servicer(VulnerableBank(keypair, dgk), creds(pki, BANK))
    stub, channel = bank_stub(address, creds(pki, BUREAU), BANK)
    try:
        yield stub
    finally:
        channel.close()
        server.stop(None)


def code_of(call: Any, request: Any) -> str:
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        return attackers.status(exc)[0].name
    return "OK"


def masked_probe(pk: Any, m: int, application_id: str, width_bits: int) -> Any:
    return pb.MaskedRequest(
        application_id=application_id,
        key_id=pk.key_id,
        count=1,
        bits=1,
        truncate_bits=0,
        width_bits=width_bits,
        ciphertext=pk.pack([pk.encrypt(m)]),
    )


def half_window(keypair: KeyPair) -> int:
    """The widest width_bits for which the vulnerable bank decrypted only m mod p."""
    return keypair.public_key.bits // 2 - 9


# ---------------------------------------------------------------------- attack 1: the bank's prime


@pytest.mark.parametrize("ids", ["fresh", "same"])
def test_attack1_prime_recovery_by_compare_masked_is_cut_off_and_learns_nothing(
    ids: str, bank: RealBank, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """The attacker names a new application in every probe (so no run limit binds) or always the
    same one; either way it is stopped after the fault limit, with a wrong guess."""
    pk = paillier_keypair.public_key
    oracle = MaskedOracle(
        bank.stub,
        pk,
        dgk_keypair.public_key,
        width_bits=half_window(paillier_keypair),
        budget=PRIME_BUDGET,
        fresh_ids=ids == "fresh",
    )
    result = recover_prime(oracle, n=int(pk.n))
    print(f"\nattack 1 (CompareMasked, {ids} ids) vs real bank: {result.calls} calls, "
          f"{result.seconds:.2f} s, stopped by {result.stopped_by}")  # fmt: skip
    assert not result.recovered(int(pk.n))
    assert result.candidate != secret_prime(paillier_keypair)
    assert result.stopped_by in STOPPED, result.probes[-3:]
    assert not result.out_of_budget
    answered = [p for p in result.probes if p.code == "OK"]
    # No refusal on a decrypted value: every call up to the cut-off got an honest-looking answer,
    # without timing, whatever the plaintext was; and the cut-off came after the fault limit.
    assert [p.code for p in result.probes] == ["OK"] * len(answered) + [result.stopped_by]
    assert all(p.normal and p.server_ms == 0 for p in answered)
    assert len(answered) <= MAX_FAULTS
    # Suspended: an honest-looking request is refused too, until the operator resets the bureau.
    assert code_of(bank.stub.CompareMasked, masked_probe(pk, 5, "after-1", 64)) == "PERMISSION_DENIED"
    standing = bank.node.store.standing(BUREAU)
    assert standing and standing[0].suspended and standing[0].faults >= MAX_FAULTS
    from blindscore.app.cli import main

    assert main(["bank", "trust", "reset", BUREAU, "--data-dir", str(bank.data_dir)]) == 0
    assert code_of(bank.stub.CompareMasked, masked_probe(pk, 5, "after-2", 64)) == "OK"


def test_attack1_answers_do_not_depend_on_the_decrypted_value(
    bank: RealBank, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    """The oracle itself: plaintexts in and out of the declared range, including p + 5 (which the
    half decryption read as 5) and p - 5, get answers of one form; faults are counted by id."""
    pk, p = paillier_keypair.public_key, secret_prime(paillier_keypair)
    width = half_window(paillier_keypair)
    oracle = MaskedOracle(bank.stub, pk, dgk_keypair.public_key, width_bits=width, budget=100)
    probes = [7, p + 5, p - 5, 1 << 1100]  # in range; and three that break the declared width
    answers = [
        bank.stub.CompareMasked(masked_probe(pk, m, f"range-{i}", width), timeout=30)
        for i, m in enumerate(probes)
    ]
    sizes = {(len(a.bit_ciphertexts), len(a.high)) for a in answers}
    assert len(sizes) == 1
    assert all(oracle.normal_answer(a) and a.server_ms == 0 for a in answers)
    # Three faults (ids and the check only, never a value), and the bureau is suspended.
    faults = bank.node.store.faults(BUREAU)
    assert sorted(f.application_id for f in faults) == ["range-1", "range-2", "range-3"]
    assert {f.reason for f in faults} == {"masked_range"}

    # Logged at ERROR (by a thread of the bank node), with ids and the check only.
    def fault_logs() -> list[Any]:
        return [r for r in caplog.records if "protocol fault" in r.getMessage()]

    assert wait_for(lambda: len(fault_logs()) >= 3, timeout=10)
    assert {r.levelname for r in fault_logs()} == {"ERROR"}
    text = " ".join(r.getMessage() for r in fault_logs())
    assert all(f"range-{i}" in text for i in (1, 2, 3))
    assert str(p)[:12] not in text and str(p + 5)[-12:] not in text and str(1 << 1100)[:12] not in text
    assert code_of(bank.stub.CompareMasked, masked_probe(pk, 7, "range-4", width)) == "PERMISSION_DENIED"


def flushes_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken variant: a bank that flushes its disk once more for a faulted run (as one did
    before 35b919b), which a bureau could time."""
    real = ResultStore.begin_runs

    def leaky(self: ResultStore, bureau_id: str, ids: Any, faults: Any, limits: RunLimits, **kw: Any) -> None:
        real(self, bureau_id, ids, faults, limits, **kw)
        if any(faults):
            self._db.write(lambda tx: None)

    monkeypatch.setattr(ResultStore, "begin_runs", leaky)


@pytest.mark.parametrize("variant", ["real", "flushes-a-fault"])
def test_attack1_the_banks_disk_writes_do_not_depend_on_the_decrypted_value(
    variant: str,
    bank: RealBank,
    paillier_keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a bureau could time besides the answer: the bank's writes, a synced one costing a disk
    flush. Per probe, in the declared range or not, the same writes, each synced or not alike; the
    broken variant, which flushes once more for a fault, is caught by the same comparison."""
    if variant != "real":
        flushes_a_fault(monkeypatch)
    writes: list[tuple[str, bool]] = []
    real_write = Database.write

    def spy(self: Database, fn: Any, *, sync: bool = True) -> Any:
        if self.namespace == "bank":
            writes.append((fn.__qualname__, sync))
        return real_write(self, fn, sync=sync)

    monkeypatch.setattr(Database, "write", spy)
    pk, p = paillier_keypair.public_key, secret_prime(paillier_keypair)
    width = half_window(paillier_keypair)
    patterns = []
    for i, m in enumerate([7, p + 5, 1 << 1100, 11]):  # in range, two faults, in range
        writes.clear()
        bank.stub.CompareMasked(masked_probe(pk, m, f"writes-{i}", width), timeout=30)
        patterns.append(list(writes))
    assert patterns[0], "the bank writes nothing for a run: nothing to compare"
    assert [f.application_id for f in bank.node.store.faults(BUREAU)] == ["writes-1", "writes-2"]
    alike = all(pattern == patterns[0] for pattern in patterns)
    assert alike == (variant == "real"), patterns


def test_attack1_prime_recovery_by_deliver_band_is_cut_off(
    bank: RealBank, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """DeliverBand's window is the number of labels (64): given p to within 2^11 (say from a
    CompareMasked phase stopped early), a scan and a binary search would find the rest."""
    pk, p = paillier_keypair.public_key, secret_prime(paillier_keypair)
    oracle = DeliveryOracle(bank.stub, pk, dgk_keypair.public_key, budget=BAND_PRIME_BUDGET)
    result = recover_prime(oracle, n=int(pk.n), start=p - (1 << 11), stop=p + (1 << 11))
    print(f"\nattack 1 (DeliverBand) vs real bank: {result.calls} calls, {result.seconds:.2f} s, "
          f"stopped by {result.stopped_by}")  # fmt: skip
    assert not result.recovered(int(pk.n))
    assert result.stopped_by in STOPPED
    answered = [q for q in result.probes if q.code == "OK"]
    assert [q.code for q in result.probes] == ["OK"] * len(answered) + [result.stopped_by]
    assert all(q.normal and q.server_ms == 0 for q in answered)  # stored=True, no timing
    assert len(answered) <= MAX_FAULTS


def test_attack1_a_changed_band_is_answered_like_a_retry(bank: RealBank, paillier_keypair: KeyPair) -> None:
    """A second, different band for an application would be an equality oracle on decryptions
    if it were refused: it is answered like the first, and the first band is kept."""
    pk = paillier_keypair.public_key
    assert code_of(bank.stub.CompareMasked, masked_probe(pk, 5, "conflict", 64)) == "OK"

    def deliver(band: int) -> Any:
        msg = pb.BandDelivery(
            application_id="conflict",
            key_id=pk.key_id,
            model_id="m",
            band_labels=["A", "B", "C"],
            band_ciphertext=pk.pack([pk.encrypt(band)]),
        )
        return bank.stub.DeliverBand(msg, timeout=30)

    first, second = deliver(1), deliver(2)
    assert (first.application_id, first.stored, first.server_ms) == ("conflict", True, 0)
    assert (second.application_id, second.stored, second.server_ms) == ("conflict", True, 0)
    record = bank.node.store.get("conflict")
    assert record is not None and record.band == 1


def test_attack1_runs_per_application_are_bounded_by_count(bank: RealBank, paillier_keypair: KeyPair) -> None:
    pk = paillier_keypair.public_key
    codes = [
        code_of(bank.stub.CompareMasked, masked_probe(pk, 5, "repeated", 64)) for _ in range(MAX_RUNS + 2)
    ]
    assert codes == ["OK"] * MAX_RUNS + ["FAILED_PRECONDITION"] * 2
    # Counted per application: another one still runs, and nothing faulted.
    assert code_of(bank.stub.CompareMasked, masked_probe(pk, 5, "another", 64)) == "OK"
    assert bank.node.store.faults(BUREAU) == []


def test_attack1_with_the_limits_raised_the_answers_still_carry_nothing(
    pki: Path, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """With the run and fault limits out of the way (1000 each), the attack runs its whole binary
    search: every probe is answered alike, so its guess is wrong."""
    data_dir = tmp_path / "bank"
    node = make_node(paillier_keypair, dgk_keypair, data_dir, max_runs=1000, max_faults=1000)
    pk = paillier_keypair.public_key
    with real_bank(pki, node, data_dir) as b:
        oracle = MaskedOracle(
            b.stub, pk, dgk_keypair.public_key, width_bits=half_window(paillier_keypair), budget=PRIME_BUDGET
        )
        result = recover_prime(oracle, n=int(pk.n))
    print(f"\nattack 1 (CompareMasked) vs real bank, limits 1000: {result.calls} calls, "
          f"{result.seconds:.2f} s, stopped by {result.stopped_by}")  # fmt: skip
    assert not result.recovered(int(pk.n))
    answered = [q for q in result.probes if q.code == "OK"]
    assert len(answered) >= 900  # the limits, not the answers, ended it
    assert all(q.normal and q.server_ms == 0 for q in answered)
    assert "INVALID_ARGUMENT" not in {q.code for q in result.probes}


def test_attack1_works_on_a_vulnerable_bank(
    pki: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Negative control: against a bank that refuses on the decrypted range (half decryption, no
    limits) the same attack code recovers p, by either call."""
    pk, p = paillier_keypair.public_key, secret_prime(paillier_keypair)
    with vulnerable_bank(pki, paillier_keypair, dgk_keypair) as stub:
        masked = recover_prime(
            n=int(pk.n),
            oracle=MaskedOracle(
                stub,
                pk,
                dgk_keypair.public_key,
                width_bits=half_window(paillier_keypair),
                budget=PRIME_BUDGET,
            ),
        )
        delivered = recover_prime(
            DeliveryOracle(stub, pk, dgk_keypair.public_key, budget=BAND_PRIME_BUDGET),
            n=int(pk.n),
            start=p - (1 << 11),
            stop=p + (1 << 11),
        )
    print(f"\nattack 1 vs vulnerable bank: CompareMasked {masked.calls} calls {masked.seconds:.2f} s; "
          f"DeliverBand {delivered.calls} calls {delivered.seconds:.2f} s")  # fmt: skip
    assert masked.recovered(int(pk.n)) and masked.candidate == p
    assert masked.calls <= PRIME_BUDGET // 10
    assert delivered.recovered(int(pk.n)) and delivered.candidate == p
    assert delivered.calls <= BAND_PRIME_BUDGET // 10


# ---------------------------------------------------------------------- attack 2: a packed score

#: The target first (slot 0); the others are ordinary members of the batch.
LOW_TARGET = [2, 3, 1, 5]  # sigma in band 0
HIGH_TARGET = [4, 3, 1, 5]  # sigma in band 4


def packed_batch(keypair: KeyPair, rows: list[int]) -> tuple[list[Any], list[str]]:
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    encoded = [MODEL.spec.encode_row(ROWS[i]) for i in rows]
    cts = packing.encrypt_packed(keypair.public_key, MODEL.spec, slot_bits, encoded)
    return cts, [f"packed-{i}" for i in rows]


@pytest.mark.parametrize("limits", ["default", "raised"])
def test_attack2_packed_score_search_learns_no_more_than_the_band(
    limits: str, pki: Path, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Run against two targets whose scores lie in different bands: the bank's answers (and so the
    attacker's whole transcript) are the same for both, so the attacker learns nothing about
    either; it is cut off after its runs, or (limits raised to 1000) it runs its whole search on
    answers that carry nothing and ends with an interval that does not pin the score."""
    raised = 1000 if limits == "raised" else 0
    pk = paillier_keypair.public_key
    transcripts = []
    for name, rows in (("low", LOW_TARGET), ("high", HIGH_TARGET)):
        data_dir = tmp_path / f"bank-{name}"
        node = make_node(paillier_keypair, dgk_keypair, data_dir, max_runs=raised, max_faults=raised)
        cts, ids = packed_batch(paillier_keypair, rows)
        with real_bank(pki, node, data_dir) as b:
            result = packed_score_search(b.stub, pk, MODEL, cts, ids, budget=PACKED_BUDGET)
        sigma = sigma_of(rows[0])
        band = GEO.band_interval(sigma)
        print(f"\nattack 2 vs real bank ({limits} limits, {name} target): {result.runs} runs, "
              f"{result.seconds:.2f} s, interval width {result.width} vs band width {band[1] - band[0] + 1}, "
              f"stopped by {result.stopped_by}")  # fmt: skip
        # Cut off by the counts, or ended with an interval that does not pin sigma within its band.
        assert result.stopped_by in STOPPED or not result.pins(sigma, band)
        assert not result.out_of_budget
        # A non-monotone slot was never refused: every run before the cut-off was answered alike.
        codes = [obs for obs, _ in result.observations]
        answered = codes if result.stopped_by is None else codes[:-1]
        assert all(c.startswith("OK") and "server_ms=0.0" in c for c in answered)
        if not raised:
            assert len(answered) <= MAX_RUNS
        transcripts.append(result.observations)
    # The bank's answers do not depend on the target's score: the attacker asked the same questions
    # and heard the same answers for both, so whatever it concludes is the same for both targets.
    assert transcripts[0] == transcripts[1]


def test_attack2_works_on_a_vulnerable_bank(
    pki: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Negative control: a bank that refuses non-monotone outputs and re-runs batches without limit
    tells the attacker sigma >= g once per run; the same search pins sigma."""
    cts, ids = packed_batch(paillier_keypair, LOW_TARGET)
    with vulnerable_bank(pki, paillier_keypair, dgk_keypair) as stub:
        result = packed_score_search(stub, paillier_keypair.public_key, MODEL, cts, ids, budget=PACKED_BUDGET)
    sigma = sigma_of(LOW_TARGET[0])
    band = GEO.band_interval(sigma)
    print(f"\nattack 2 vs vulnerable bank: {result.runs} runs, {result.seconds:.2f} s, "
          f"interval {result.lo}..{result.hi} for sigma {sigma} (band {band})")  # fmt: skip
    assert result.pins(sigma, band) and result.width <= 2
    assert result.runs <= PACKED_BUDGET // 10


# ---------------------------------------------------------------------- attack 3: a deviating bank


@dataclass
class DeviantNet:
    bureau: BureauNode
    bank: DeviatingBank
    submit: Any  # the bureau's stub with the platform's certificate
    key_id: str


@contextlib.contextmanager
def deviant_net(
    pki: Path, tmp_path: Path, keypair: KeyPair, dgk: DGKKeyPair, error: str = "unavailable"
) -> Iterator[DeviantNet]:
    """A real bureau (its retry worker on) whose bank is a DeviatingBank, both over mutual TLS. The
    bureau runs the DGK rounds for unary applications (its default), which the DeviatingBank attacks."""
    bureau = BureauNode.open(tmp_path / "bureau", retry=FAST_RETRY, band_protocol="dgk")
    server, port, channels = start_bureau_server(bureau, "127.0.0.1:0", security=creds(pki, BUREAU))
    bureau_addr = f"127.0.0.1:{port}"
    deviant = DeviatingBank(keypair, dgk, budget=FORCED_RETRY_BUDGET, error=error)
    bank_server, bank_addr = serve_bank_servicer(deviant, creds(pki, BANK))
    as_bank = open_channel(bureau_addr, security=creds(pki, BANK).expecting("bureau"))
    as_platform = open_channel(bureau_addr, security=creds(pki, PLATFORM).expecting("bureau"))
    try:
        key_id = (
            pb_grpc.BureauStub(as_bank)
            .RegisterBank(
                pb.RegisterBankRequest(
                    bank_id=BANK,
                    address=bank_addr,
                    paillier_public_key=serde.paillier_key_to_json(keypair.public_key),
                    dgk_public_key=serde.dgk_key_to_json(dgk.public_key),
                    active_key_ids=[keypair.public_key.key_id],
                ),
                timeout=30,
            )
            .key_id
        )
        yield DeviantNet(bureau, deviant, pb_grpc.BureauStub(as_platform), key_id)
    finally:
        as_bank.close()
        as_platform.close()
        bank_server.stop(None)
        server.stop(None)
        channels.close()
        bureau.close()


def pins_score(search: attackers.ShiftSearch, sigma: int) -> bool:
    """Whether a deviating bank's search narrowed sigma below its band."""
    if search.band is None:
        return False
    lo, hi = search.interval(GEO)
    band = GEO.band_interval(sigma)
    return lo - 1 <= sigma <= hi + 1 and hi - lo + 1 < band[1] - band[0] + 1


UNARY_TARGET = 3  # sigma in band 2, about 0.6 band widths below the next cutoff


def test_attack3_unary_deviating_bank_gets_one_band_ciphertext(
    pki: Path, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    pk = paillier_keypair.public_key
    with deviant_net(pki, tmp_path, paillier_keypair, dgk_keypair) as net:
        app = EncryptedApplication(
            application_id="deviant-1",
            platform_id=PLATFORM,
            bank_id=BANK,
            model_id=DEFAULT_MODEL_ID,
            key_id=net.key_id,
            consent_reference="consent",
            ciphertexts=tuple(pk.encrypt(v) for v in MODEL.spec.encode_row(ROWS[UNARY_TARGET])),
        )
        net.submit.SubmitApplication(serde.encrypted_application_to_proto(app, pk), timeout=60)

        def settled() -> bool:
            stored = net.bureau.applications.get(PLATFORM, "deviant-1")
            return stored is not None and stored.state in (DELIVERED, FAILED)

        assert wait_for(settled, timeout=120)
        bank = net.bank
        search = bank.searches["deviant-1"]
        print(f"\nattack 3 (unary) vs real bureau: {bank.masked_runs['deviant-1']} runs, "
              f"{bank.forced} forced retries, {search.stalls} identical re-deliveries")  # fmt: skip
        assert not pins_score(search, sigma_of(UNARY_TARGET))
        assert len(set(bank.band_ciphertexts["deviant-1"])) == 1  # one [band], however often sent
        assert bank.masked_runs["deviant-1"] == 1
        assert bank.masked_after_band.get("deviant-1", 0) == 0
        assert search.band == band_of(UNARY_TARGET)  # what it may learn: the band


PACKED_ROWS = [3, 4, 1, 5]  # bands 2, 4, 3, 2: upward and downward searches


@pytest.mark.parametrize("error", ["unavailable", "ticket_gone"])
def test_attack3_packed_deviating_bank_gets_one_evaluation_round(
    error: str, pki: Path, tmp_path: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    pk = paillier_keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    with deviant_net(pki, tmp_path, paillier_keypair, dgk_keypair, error) as net:
        ids = [f"deviant-p{i}" for i in PACKED_ROWS]
        batch = EncryptedBatch(
            batch_id="b-deviant",
            platform_id=PLATFORM,
            bank_id=BANK,
            model_id=DEFAULT_MODEL_ID,
            key_id=net.key_id,
            model_version="1",
            slot_bits=slot_bits,
            members=tuple(BatchMember(a, "consent") for a in ids),
            ciphertexts=tuple(
                packing.encrypt_packed(
                    pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(ROWS[i]) for i in PACKED_ROWS]
                )
            ),
        )
        with contextlib.suppress(grpc.RpcError):  # the fixed bureau fails the batch at once
            net.submit.SubmitBatch(serde.encrypted_batch_to_proto(batch, pk), timeout=60)

        def settled() -> bool:
            stored = net.bureau.batches.get(PLATFORM, "b-deviant")
            return stored is not None and stored.state in (DELIVERED, FAILED)

        assert wait_for(settled, timeout=120)
        bank = net.bank
        stored = net.bureau.batches.get(PLATFORM, "b-deviant")
        print(f"\nattack 3 (packed, {error}) vs real bureau: {bank.packed_starts} starts, "
              f"{bank.packed_finishes} evaluation rounds, {bank.forced} forced retries, "
              f"batch {stored.state if stored else None}")  # fmt: skip
        for app_id, row in zip(ids, PACKED_ROWS, strict=True):
            search = bank.search_of(app_id)
            assert not pins_score(search, sigma_of(row)), app_id
            assert search.band == band_of(row)
        assert bank.packed_finishes - bank.finish_repeats == 1  # one evaluation round, ever
        assert bank.starts_after_finish == 0  # never run again with fresh masks
        assert stored is not None and stored.state == FAILED


#: Circuit rounds a deviating bank claims to have lost (below the bureau's MAX_CIRCUIT_ROUNDS),
#: then reveals it claims to have lost.
LOST_FINISHES = 3
LOST_REVEALS = 3


@dataclass
class CircuitBankView:
    """What a retry-forcing bank got: rounds it evaluated, and every (round, pad) revealed to it."""

    finishes: int = 0
    starts_after_finish: int = 0
    revealed: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)


def circuit_retry_forcing_bank(nodes: Nodes, monkeypatch: pytest.MonkeyPatch) -> CircuitBankView:
    """The real bank over mTLS, deviating in one way: after evaluating a garbled circuit it answers
    CircuitFinish with UNAVAILABLE (to be sent a new round, on which it could feed shifted inputs),
    and after taking a pad it answers CircuitReveal with UNAVAILABLE (to be sent another round's
    pad), each while its budget lasts. Being the attacker, it ignores the honest bank's run limits."""
    bank = nodes.bank_node
    monkeypatch.setattr(bank, "limits", RunLimits(max_runs=1000, max_faults=1000))
    view = CircuitBankView()
    start, finish, reveal = bank.circuit_start, bank.circuit_finish, bank.circuit_reveal

    def counted_start(call: Any) -> Any:
        view.starts_after_finish += view.finishes > 0
        return start(call)

    def losing_finish(call: Any) -> int:
        view.finishes += 1
        stored = finish(call)
        if view.finishes <= LOST_FINISHES:
            raise UnavailableError("the bank pretends to have lost the reply")
        return stored

    def losing_reveal(call: Any) -> int:
        view.revealed.append((call.garbling_id, call.pad))
        stored = reveal(call)
        if len(view.revealed) <= LOST_REVEALS:
            raise UnavailableError("the bank pretends to have lost the reply")
        return stored

    monkeypatch.setattr(bank, "circuit_start", counted_start)
    monkeypatch.setattr(bank, "circuit_finish", losing_finish)
    monkeypatch.setattr(bank, "circuit_reveal", losing_reveal)
    return view


def submit_unary(nodes: Nodes, app_id: str, row: int) -> str:
    """Submit one German applicant through the platform; wait until the bureau has settled it."""
    app = Application(app_id, "bank-a", DEFAULT_MODEL_ID, nodes.key_id, "consent", ROWS[row])
    with contextlib.suppress(grpc.RpcError):  # an application that fails for good is refused
        score_one(nodes.platform, app, security=nodes.creds("platform-a").expecting("platform"))

    def settled() -> str | None:
        stored = nodes.bureau_obj.applications.get("platform-a", app_id)
        return stored.state if stored is not None and stored.state in (DELIVERED, FAILED) else None

    return waiting.wait_for(settled, timeout=60, what=f"{app_id} delivered or failed")


def test_attack3_unary_circuit_deviating_bank_gets_one_pad(
    make_nodes: NodesFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The circuit band (``--band-protocol circuit``): a bank that claims to lose rounds is sent new
    ones (each under a fresh pad, so it costs a retry, not the application), and a bank that claims
    to lose the pad is sent the same pad of the same round again: it holds several evaluated rounds
    and can read exactly one of them, so it learns one band."""
    nodes = make_nodes("circuit-attack", tls=True, retry=FAST_RETRY, band_protocol="circuit")
    view = circuit_retry_forcing_bank(nodes, monkeypatch)
    state = submit_unary(nodes, "circuit-deviant-1", UNARY_TARGET)
    rounds = {garbling_id for garbling_id, _ in view.revealed}
    print(f"\nattack 3 (unary circuit) vs real bureau: {view.finishes} rounds evaluated, "
          f"{len(view.revealed)} reveals of {len(rounds)} round(s)")  # fmt: skip
    assert view.finishes == LOST_FINISHES + 1  # new rounds while no pad was revealed ...
    assert len(view.revealed) == LOST_REVEALS + 1 and len(rounds) == 1  # ... then one pad, resent
    assert len({pad for _, pad in view.revealed}) == 1
    assert state == DELIVERED
    stored = nodes.bank_node.store.get("circuit-deviant-1", "platform-a", BUREAU)
    assert stored is not None and stored.band == band_of(UNARY_TARGET)  # what it learned: the band


def test_attack3_unary_circuit_works_against_a_bureau_that_forgets_its_pad(
    make_nodes: NodesFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: a bureau whose ledger does not keep the revealed round runs a new round
    after every reveal the bank claims to have lost, and reveals its pad too: the same bank reads
    several rounds (several bands, with shifted inputs a binary search)."""
    nodes = make_nodes("circuit-forget", tls=True, retry=FAST_RETRY, band_protocol="circuit")
    view = circuit_retry_forcing_bank(nodes, monkeypatch)
    ledger = nodes.bureau_obj.ledger
    monkeypatch.setattr(ledger, "revealed_round", lambda *a: None)
    monkeypatch.setattr(
        ledger, "reveal_round", lambda platform, app, garbling_id, pad, **_: (garbling_id, pad)
    )
    monkeypatch.setattr(nodes.bureau_obj, "_count_circuit_round", lambda *a: True)
    submit_unary(nodes, "circuit-forget-1", UNARY_TARGET)
    assert len({garbling_id for garbling_id, _ in view.revealed}) > 1


def test_attack3_works_against_a_bureau_that_reruns(
    pki: Path, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    """Negative control: a bureau that runs a failed application or batch again with fresh masks
    (as before the fix) lets the same deviating bank pin every score well inside its band."""
    pk, dgk = paillier_keypair.public_key, dgk_keypair.public_key
    slot_bits = packing.slot_bits_for(MODEL)
    assert slot_bits is not None
    deviant = DeviatingBank(paillier_keypair, dgk_keypair, budget=FORCED_RETRY_BUDGET)
    server, address = serve_bank_servicer(deviant, creds(pki, BANK))
    stub, channel = bank_stub(address, creds(pki, BUREAU), BANK)
    try:
        naive = NaiveBureau(stub, pk, dgk, MODEL)
        cts = [pk.encrypt(v) for v in MODEL.spec.encode_row(ROWS[UNARY_TARGET])]
        unary_attempts = naive.score("naive-1", cts, attempts=FORCED_RETRY_BUDGET + 1)
        batch_cts = packing.encrypt_packed(
            pk, MODEL.spec, slot_bits, [MODEL.spec.encode_row(ROWS[i]) for i in PACKED_ROWS]
        )
        ids = [f"naive-p{i}" for i in PACKED_ROWS]
        packed_attempts = naive.score_batch(ids, batch_cts, attempts=FORCED_RETRY_BUDGET + 1)
    finally:
        channel.close()
        server.stop(None)
    print(f"\nattack 3 vs re-running bureau: unary {unary_attempts} runs, packed {packed_attempts} runs, "
          f"{deviant.forced} forced retries in all")  # fmt: skip
    assert pins_score(deviant.searches["naive-1"], sigma_of(UNARY_TARGET))
    for app_id, row in zip(ids, PACKED_ROWS, strict=True):
        assert pins_score(deviant.search_of(app_id), sigma_of(row)), app_id
    # It needed at most a tenth of the budget: one honest run, then one forced retry per bit of D.
    forced = [deviant.searches["naive-1"].forced, deviant.search_of(ids[0]).forced]
    assert max(forced) <= FORCED_RETRY_BUDGET // 10
    assert unary_attempts == forced[0] + 1 and packed_attempts <= max(forced) + 1


def test_attack_harness_is_deterministic_in_what_it_asks() -> None:
    """The attackers' choices depend on the answers only: the same answers, the same questions."""

    class Script(attackers._Oracle):
        window_bits = 4

        def __init__(self, p: int) -> None:
            super().__init__(budget=1000)
            self.p = p

        def __call__(self, m: int) -> bool:
            self._spend()
            self.probes.append(attackers.Probe(m, "OK"))
            return self.p <= m < self.p + 16

    p = (1 << 11) + secrets.randbelow(1 << 10)
    a, b = recover_prime(Script(p), half_bits=12), recover_prime(Script(p), half_bits=12)
    assert a.candidate == b.candidate == p
    assert [q.plaintext for q in a.probes] == [q.plaintext for q in b.probes]
