"""Deviating parties for tests/test_attacks.py: a bureau that probes the bank, a bank that probes the
bureau, and reference nodes with the defences removed (the negative controls).

Everything here talks real gRPC over mutual TLS and builds its messages from the wire format and
the low-level building blocks (Paillier, DGK, garbling, OT), not from the nodes' flow code, so the
same attack runs unchanged against the vulnerable and the fixed nodes. Each attack is a function
that returns what the attacker learned; the tests decide whether that is more than allowed.

The attacks (numbers as in tests/test_attacks.py):

1. :func:`recover_prime`: a bureau recovers the bank's Paillier prime p from a one-bit range
   oracle. A bank that decrypts only m mod p (the p-half of CRT) and refuses a value of 2^width
   or more accepts an m in [2^1023, 2^1024) exactly when p <= m < p + 2^width: a scan in steps of
   2^width and a binary search give p. :class:`MaskedOracle` asks CompareMasked (window
   2^width_bits), :class:`DeliveryOracle` asks DeliverBand (window = number of band labels).
2. :func:`packed_score_search`: a bureau learns a packed application's score. It garbles, for
   the target slot, outputs [0, [sigma >= g], 0, ...], which are non-monotone exactly when
   sigma >= g; a bank that refuses non-monotone outputs and lets the batch run again (fresh
   masks) answers "sigma >= g?" once per run, and a binary search finds sigma.
3. :class:`DeviatingBank`: a bank shifts its comparison input (the DGK bits of beta, or the OT
   choice bits of a packed slot) by d, so the bureau's comparison is evaluated on sigma + d, and
   fails the call after it has learned the outcome so that the bureau runs again; a binary search
   over d finds the distance from sigma to the next cutoff.

Negative controls: :class:`VulnerableBank` answers like the bank before the fix (range and
monotonicity refusals, half decryption, no limits); :class:`NaiveBureauNode` retries like the bureau
before the fix (a failed application or batch runs again with fresh masks, however far it got).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from blindscore.crypto import garble, ot
from blindscore.crypto.dgk import DGKKeyPair, DGKPublicKey
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.infra.transport import TransportSecurity, create_server, open_channel
from blindscore.models.linear import LinearModel
from blindscore.protocol import packing
from blindscore.protocol.comparison import (
    BandComparison,
    BitsResponse,
    BlindedRequest,
    FinalResponse,
    answer_blinded,
)
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

RPC_TIMEOUT_S = 30.0
#: How far the comparison of a packed slot may reach: the bank decodes b = z' mod 2^(l+1) with the
#: l the bureau declares, so a bureau that declares one more bit than its model needs makes every
#: threshold in [0, H + 1] an exact comparison.
WIDEN_BITS = 1


class CutOff(Exception):
    """The bank refused to go on (suspended, exhausted, or refused the run)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class OutOfBudget(Exception):
    """The attacker used up the calls it allowed itself."""


# ---------------------------------------------------------------------- network


def serve_bank_servicer(
    servicer: pb_grpc.BankServicer, security: TransportSecurity
) -> tuple[grpc.Server, str]:
    """Serve a Bank servicer on a free loopback port over ``security``; returns (server, address)."""
    server, port = create_server(
        "127.0.0.1:0",
        [partial(pb_grpc.add_BankServicer_to_server, servicer)],
        security=security,
        service_names=("blindscore.v1.Bank",),
    )
    return server, f"127.0.0.1:{port}"


def bank_stub(address: str, security: TransportSecurity, bank_id: str) -> tuple[Any, grpc.Channel]:
    """A client of the bank at ``address`` that presents ``security``'s certificate."""
    channel = open_channel(address, security=security.expecting("bank", bank_id))
    return pb_grpc.BankStub(channel), channel


def status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return code, details or ""


def has_field(message: type[Any], name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


# ---------------------------------------------------------------------- attack 1: the secret prime


@dataclass
class Probe:
    """One question the attacker asked and what came back."""

    plaintext: int
    code: str  # "OK" or the status name
    #: For an answer: it had the form of an honest one (sizes, valid ciphertexts under the keys).
    normal: bool = False
    server_ms: float = 0.0


@dataclass
class PrimeRecovery:
    """What attack 1 learned: its guess for p (None: no guess), and how it went."""

    candidate: int | None
    calls: int
    seconds: float
    #: The status that stopped the attack early, None if it ran to the end (or out of budget).
    stopped_by: str | None
    out_of_budget: bool
    probes: list[Probe]

    def recovered(self, n: int) -> bool:
        """Whether the guess is a factor of n, i.e. the attacker holds the secret key."""
        c = self.candidate
        return c is not None and 1 < c < n and n % c == 0


class _Oracle:
    """Counts calls, enforces the budget, records probes; subclasses ask one concrete RPC."""

    window_bits = 0

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.calls = 0
        self.probes: list[Probe] = []

    def _spend(self, calls: int = 1) -> None:
        if self.calls + calls > self.budget:
            raise OutOfBudget
        self.calls += calls

    def __call__(self, m: int) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class MaskedOracle(_Oracle):
    """Asks "is m mod p < 2^width_bits?" through CompareMasked: answered, or refused (INVALID_ARGUMENT).

    ``fresh_ids``: one new application id per probe (so no per-application run limit binds);
    else every probe names the same application.
    """

    def __init__(
        self,
        stub: Any,
        pk: PublicKey,
        dgk: DGKPublicKey,
        *,
        width_bits: int,
        budget: int,
        fresh_ids: bool = True,
        prefix: str = "probe",
    ) -> None:
        super().__init__(budget)
        self.stub, self.pk, self.dgk = stub, pk, dgk
        self.window_bits = width_bits
        self.fresh_ids = fresh_ids
        self.prefix = prefix

    def request(self, m: int, application_id: str) -> Any:
        return pb.MaskedRequest(
            application_id=application_id,
            key_id=self.pk.key_id,
            count=1,
            bits=1,
            truncate_bits=0,
            width_bits=self.window_bits,
            ciphertext=self.pk.pack([self.pk.encrypt(m)]),
        )

    def normal_answer(self, resp: Any, bits: int = 1) -> bool:
        """The answer has the form of an honest round-1 answer: l DGK and one Paillier ciphertext."""
        try:
            self.dgk.unpack(resp.bit_ciphertexts, bits)
            self.pk.unpack(resp.high, 1)
        except Exception:
            return False
        return True

    def __call__(self, m: int) -> bool:
        self._spend()
        app = f"{self.prefix}-{self.calls}" if self.fresh_ids else self.prefix
        try:
            resp = self.stub.CompareMasked(self.request(m, app), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            code, details = status(exc)
            self.probes.append(Probe(m, code.name))
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return False
            raise CutOff(code, details) from None
        self.probes.append(Probe(m, "OK", self.normal_answer(resp), resp.server_ms))
        return True


class DeliveryOracle(_Oracle):
    """Asks "is m mod p < len(labels)?" through DeliverBand: stored, or refused (INVALID_ARGUMENT).

    Each probe names a new application, first opened with one honest-looking CompareMasked (an
    in-range masked value), as a bureau would have to before delivering its band.
    """

    def __init__(
        self,
        stub: Any,
        pk: PublicKey,
        dgk: DGKPublicKey,
        *,
        labels: int = 64,
        budget: int,
        prefix: str = "band",
    ) -> None:
        super().__init__(budget)
        self.stub, self.pk = stub, pk
        self.labels = tuple(f"L{i}" for i in range(labels))
        self.window_bits = (labels - 1).bit_length()
        self._masked = MaskedOracle(stub, pk, dgk, width_bits=64, budget=10**9, prefix=prefix)
        self.prefix = prefix

    def __call__(self, m: int) -> bool:
        self._spend(2)
        app = f"{self.prefix}-{self.calls}"
        try:
            opening = self._masked.request(secrets.randbits(63), app)
            opening.count = len(self.labels) - 1
            self.stub.CompareMasked(opening, timeout=RPC_TIMEOUT_S)
            delivery = pb.BandDelivery(
                application_id=app,
                key_id=self.pk.key_id,
                model_id="probe-model",
                band_labels=list(self.labels),
                band_ciphertext=self.pk.pack([self.pk.encrypt(m)]),
            )
            resp = self.stub.DeliverBand(delivery, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            code, details = status(exc)
            self.probes.append(Probe(m, code.name))
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return False
            raise CutOff(code, details) from None
        self.probes.append(Probe(m, "OK", bool(resp.stored), resp.server_ms))
        return True


def recover_prime(
    oracle: _Oracle,
    *,
    n: int | None = None,
    half_bits: int = 1024,
    start: int | None = None,
    stop: int | None = None,
) -> PrimeRecovery:
    """Find p in [start, stop) (default [2^(half_bits-1), 2^half_bits)) with a range oracle.

    For start <= m < 2p the bank's half decryption m mod p is m - p when m >= p and m itself (too
    wide to pass) when m < p, so the oracle accepts exactly for p <= m < p + 2^window: the scan
    in steps of 2^window meets that interval once, and a binary search below the first accepted
    m finds p. With ``n`` the attacker checks each guess (p divides n) and, if it is wrong (the
    oracle lied), scans on from where it was. Its candidate is its current guess when stopped.
    """
    lo_end = 1 << (half_bits - 1) if start is None else start
    hi_end = 1 << half_bits if stop is None else stop
    step = 1 << oracle.window_bits
    t0 = time.perf_counter()
    candidate: int | None = None
    stopped_by: str | None = None
    out_of_budget = False
    try:
        m = lo_end
        while m < hi_end + step:
            if not oracle(m):
                m += step
                continue
            lo, hi = max(lo_end, m - step + 1), m  # p in [lo, hi]; accepted iff probe >= p
            candidate = lo
            while lo < hi:
                mid = (lo + hi) // 2
                if oracle(mid):
                    hi = mid
                else:
                    lo = mid + 1
                candidate = lo
            if n is None or n % candidate == 0:
                break
            m += step
    except CutOff as exc:
        stopped_by = exc.code.name
    except OutOfBudget:
        out_of_budget = True
    return PrimeRecovery(
        candidate, oracle.calls, time.perf_counter() - t0, stopped_by, out_of_budget, oracle.probes
    )


# ---------------------------------------------------------------------- OT helpers (bureau side)


def ot_sender(stub: Any) -> ot.OtSender:
    """Set up an OT session with the bank as the bureau does (the bank is the extension receiver)."""
    offer_msg = stub.OtSetupStart(pb.OtSetupStartRequest(), timeout=RPC_TIMEOUT_S)
    offer = ot.SetupOffer(session_id=bytes(offer_msg.session_id), c=int.from_bytes(offer_msg.c, "big"))
    setup, choice = ot.SenderSetup.start(offer)
    reply_msg = stub.OtSetupFinish(
        pb.OtSetupChoice(session_id=choice.session_id, pk0=[int(x).to_bytes(256, "big") for x in choice.pk0]),
        timeout=RPC_TIMEOUT_S,
    )
    reply = ot.SetupReply(
        session_id=bytes(reply_msg.session_id),
        gr=int.from_bytes(reply_msg.gr, "big"),
        e0=tuple(int.from_bytes(x, "big") for x in reply_msg.e0),
        e1=tuple(int.from_bytes(x, "big") for x in reply_msg.e1),
    )
    return setup.finish(reply)


# ---------------------------------------------------------------------- attack 2: a packed score


@dataclass(frozen=True)
class ModelGeometry:
    """What the bureau knows of its model's comparison: T, l, H = ceil(W / 2^T) and the sorted
    truncated cutoffs gamma_k (see blindscore/protocol/comparison.py); sigma lies in [0, H]."""

    truncate_bits: int
    bits: int
    top: int
    gammas: tuple[int, ...]
    score_min: int
    score_max: int

    @classmethod
    def of(cls, model: LinearModel) -> ModelGeometry:
        s_min, s_max = model.encoded_score_bounds
        t = model.truncate_bits
        top = -(-(s_max - s_min) >> t)
        gammas = tuple(sorted(min(max(-((s_min - c) >> t), 0), top + 1) for c in model.encoded_cutoffs))
        return cls(t, model.comparison_bits, top, gammas, s_min, s_max)

    def sigma(self, score: int) -> int:
        """The truncated score floor((s - s_min) / 2^T) (the protocol adds a random carry 0 or 1)."""
        return (score - self.score_min) >> self.truncate_bits

    def band_interval(self, sigma: int) -> tuple[int, int]:
        """The sigma values [lo, hi] of the band that ``sigma`` is in: what the band reveals."""
        band = sum(1 for g in self.gammas if sigma >= g)
        lo = self.gammas[band - 1] if band else 0
        hi = self.gammas[band] - 1 if band < len(self.gammas) else self.top
        return lo, hi


@dataclass
class SearchResult:
    """An attacker's interval [lo, hi] for a hidden value after its runs."""

    lo: int
    hi: int
    runs: int
    seconds: float
    stopped_by: str | None
    out_of_budget: bool
    observations: list[tuple[str, int]] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    def pins(self, truth: int, band: tuple[int, int], slack: int = 1) -> bool:
        """Whether the interval holds ``truth`` (within ``slack``: the random truncation carry) and
        is narrower than ``band``: the attacker learned more than the band."""
        holds = self.lo - slack <= truth <= self.hi + slack
        return holds and self.width < band[1] - band[0] + 1


class PackedMasker:
    """The bureau's first step of a packed batch (blindscore.protocol.packing.PackedBand), with its masks in
    the open so that the attacker can garble any comparison it likes."""

    def __init__(self, pk: PublicKey, model: LinearModel, ciphertexts: Sequence[Any], count: int) -> None:
        geo = ModelGeometry.of(model)
        self.geo = geo
        self.count = count
        self.slot_bits = packing.slot_bits_for(model) or 0
        offset = (1 << (geo.bits + geo.truncate_bits)) - geo.score_min  # C, as the honest bureau's
        mask_bits = (geo.score_max - geo.score_min).bit_length() + 1 + 40
        lows = [lo for lo, _ in model.spec.encoded_bounds]
        weights = model.encoded_weights
        base = model.encoded_intercept + sum(w * lo for w, lo in zip(weights, lows, strict=True)) + offset
        self.masks = [secrets.randbits(mask_bits) for _ in range(count)]
        constant = sum((base + r) << (a * self.slot_bits) for a, r in enumerate(self.masks))
        self.ciphertext = int(pk.rerandomize(pk.add_plain(pk.dot(list(ciphertexts), weights), constant)))

    def threshold_value(self, slot: int, g: int, bits: int) -> int:
        """The garbler value that makes slot ``slot``'s comparison output [sigma >= g] when the bank
        decodes b = z' mod 2^(bits+1) (z' = R' + 2^l + sigma, l the model's): exact for
        |sigma - g| < 2^bits."""
        r = self.masks[slot] >> self.geo.truncate_bits
        return (r + (1 << self.geo.bits) + g - (1 << bits)) % (1 << (bits + 1))


def packed_score_search(
    stub: Any,
    pk: PublicKey,
    model: LinearModel,
    ciphertexts: Sequence[Any],
    application_ids: Sequence[str],
    *,
    target: int = 0,
    budget: int = 280,
    model_id: str = "german-credit-lr",
) -> SearchResult:
    """Attack 2: binary search for the target slot's sigma, one batch run per question.

    Each run re-masks the stored batch (fresh R_a) and garbles, for the target slot, outputs
    [0, [sigma >= g], 0, ...] (non-monotone exactly when sigma >= g) and honest comparisons for
    the others. A bank that refuses a non-monotone slot (INVALID_ARGUMENT on PackedFinish)
    answers the question; any answer in the normal form is read as "sigma < g".
    """
    geo = ModelGeometry.of(model)
    bits = geo.bits + WIDEN_BITS
    count = len(application_ids)
    labels = [chr(ord("A") + i) for i in range(len(geo.gammas) + 1)]
    sender = ot_sender(stub)
    lo, hi = 0, geo.top
    runs = 0
    stopped_by = None
    observations: list[tuple[str, int]] = []
    t0 = time.perf_counter()
    while lo < hi and runs < budget:
        g = (lo + hi + 1) // 2
        runs += 1
        masker = PackedMasker(pk, model, ciphertexts, count)
        start_fields: dict[str, Any] = {
            "key_id": pk.key_id,
            "ot_session_id": sender.session_id,
            "ciphertext": pk.pack([masker.ciphertext]),
            "count": count,
            "slot_bits": masker.slot_bits,
            "cutoffs": len(geo.gammas),
            "bits": bits,
            "truncate_bits": geo.truncate_bits,
        }
        if has_field(pb.PackedStartRequest, "application_ids"):
            start_fields["application_ids"] = list(application_ids)
        values = []
        for a in range(count):
            if a == target:
                zero = masker.threshold_value(a, geo.top + 1, bits)  # sigma >= H + 1: never
                row = [zero] * len(geo.gammas)
                row[1 if len(row) > 1 else 0] = masker.threshold_value(a, g, bits)
            else:
                row = [masker.threshold_value(a, gamma, bits) for gamma in geo.gammas]
            values.append(row)
        try:
            start = stub.PackedStart(pb.PackedStartRequest(**start_fields), timeout=RPC_TIMEOUT_S)
            request = ot.ExtensionRequest(
                session_id=sender.session_id,
                nonce=bytes(start.ot_nonce),
                count=start.ot_count,
                u=bytes(start.ot_u),
                check=bytes(start.ot_check),
            )
            circuit, pairs = garble.garble_comparisons(values, bits + 1)
            reply = sender.reply(request, pairs)
            finish = pb.PackedFinishRequest(
                key_id=pk.key_id,
                ticket=bytes(start.ticket),
                ot_y0=reply.y0,
                ot_y1=reply.y1,
                garbling_id=circuit.garbling_id,
                tables=circuit.tables,
                garbler_labels=circuit.garbler_labels,
                decode=circuit.decode,
                model_id=model_id,
                band_labels=labels,
                application_ids=list(application_ids),
                count=circuit.instances,
                cutoffs=circuit.count,
                width=circuit.width,
            )
            done = stub.PackedFinish(finish, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            code, _ = status(exc)
            observations.append((code.name, g))
            if code != grpc.StatusCode.INVALID_ARGUMENT:
                stopped_by = code.name
                break
            lo = g  # the bank refused the non-monotone slot: sigma >= g
            continue
        observations.append((f"OK stored={done.stored} server_ms={done.server_ms}", g))
        hi = g - 1
    return SearchResult(
        lo, hi, runs, time.perf_counter() - t0, stopped_by, lo < hi and runs >= budget, observations
    )


# ---------------------------------------------------------------------- attack 3: a deviating bank


@dataclass
class ShiftSearch:
    """A deviating bank's search for D, the distance from an application's sigma to the edge of its
    band: D = gamma_B - sigma (the next cutoff above, B < K) or sigma - gamma_{K-1} + 1 (top band).

    Run 1 is honest (shift 0) and gives the band B. Later runs compare sigma + d (d > 0, or
    sigma - d for the top band): the answer changes exactly when d >= D, for every d in
    [1, 2^l], so a binary search over that range pins D.
    """

    bits: int
    count: int
    band: int | None = None
    lo: int = 1
    hi: int = 0
    runs: int = 0
    #: Runs that brought nothing new (the bureau sent back an outcome it had sent before).
    stalls: int = 0
    forced: int = 0

    def __post_init__(self) -> None:
        self.hi = 1 << self.bits

    @property
    def done(self) -> bool:
        return self.band is not None and self.lo >= self.hi

    @property
    def upward(self) -> bool:
        return self.band is not None and self.band < self.count

    def next_shift(self) -> int:
        if self.band is None or self.done:
            return 0
        d = (self.lo + self.hi) // 2
        return d if self.upward else -d

    def observe(self, shift: int, band: int | None, bits: Sequence[int] | None = None) -> None:
        """Record one run: the decrypted band (unary) or the slot's output bits (packed)."""
        self.runs += 1
        if bits is not None:
            band = sum(bits)
        if self.band is None:
            if shift == 0 and band is not None and 0 <= band <= self.count:
                self.band = band
            return
        if shift == 0:
            self.stalls += 1
            return
        assert band is not None
        if bits is not None:
            # Packed: the one output bit at the band's edge is exact over the whole search range.
            moved = bits[self.band] == 1 if self.upward else bits[self.band - 1] == 0
        else:
            moved = band > self.band if self.upward else band < self.band
        d = abs(shift)
        if moved:
            self.hi = d
        else:
            self.lo = d + 1

    def interval(self, geo: ModelGeometry) -> tuple[int, int]:
        """The attacker's interval for sigma given D in [lo, hi] (for the test's god view: the bank
        does not know the cutoffs, it learns sigma's distance to one)."""
        assert self.band is not None
        if self.upward:
            edge = geo.gammas[self.band]
            return edge - min(self.hi, edge), edge - self.lo
        edge = geo.gammas[-1]
        return edge + self.lo - 1, min(edge + self.hi - 1, geo.top)


class _BankOt(pb_grpc.BankServicer):
    """The bank's side of the base-OT setup, honest, for the servicers below."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._setups: dict[bytes, ot.ReceiverSetup] = {}
        self._receivers: dict[bytes, ot.OtReceiver] = {}

    def OtSetupStart(self, request: pb.OtSetupStartRequest, context: grpc.ServicerContext) -> pb.OtSetupOffer:
        setup, offer = ot.ReceiverSetup.start()
        with self.lock:
            self._setups[offer.session_id] = setup
        return pb.OtSetupOffer(session_id=offer.session_id, c=int(offer.c).to_bytes(256, "big"))

    def OtSetupFinish(self, request: pb.OtSetupChoice, context: grpc.ServicerContext) -> pb.OtSetupReply:
        choice = ot.SetupChoice(
            session_id=bytes(request.session_id), pk0=tuple(int.from_bytes(x, "big") for x in request.pk0)
        )
        with self.lock:
            setup = self._setups.pop(choice.session_id)
        receiver, reply = setup.finish(choice)
        with self.lock:
            self._receivers[receiver.session_id] = receiver
        return pb.OtSetupReply(
            session_id=reply.session_id,
            gr=int(reply.gr).to_bytes(256, "big"),
            e0=[int(x).to_bytes(16, "big") for x in reply.e0],
            e1=[int(x).to_bytes(16, "big") for x in reply.e1],
        )


def _circuit(request: pb.PackedFinishRequest) -> garble.GarbledComparisons:
    return garble.GarbledComparisons(
        garbling_id=bytes(request.garbling_id),
        instances=request.count,
        count=request.cutoffs,
        width=request.width,
        tables=bytes(request.tables),
        garbler_labels=bytes(request.garbler_labels),
        decode=bytes(request.decode),
    )


class DeviatingBank(_BankOt):
    """Attack 3: a bank that compares shifted scores and makes the bureau run again.

    Unary: CompareMasked sends the DGK bits of beta and [z_h] for z' + d instead of z'; DeliverBand
    decrypts the band and answers ``error`` while the search is not done and the budget of forced
    retries lasts. Packed: PackedStart asks the OT for the bits of z'_a + d_a (each slot its own
    search, keyed by slot position); PackedFinish evaluates the circuit, reads every output bit and
    answers ``error``. Everything else is an honest bank's answer.
    """

    def __init__(
        self,
        keypair: KeyPair,
        dgk: DGKKeyPair,
        *,
        budget: int = 220,
        error: str = "unavailable",
    ) -> None:
        super().__init__()
        self.pk = keypair.public_key
        self._sk = keypair.secret_key
        self.dgk = dgk
        self.budget = budget
        self.error = error
        self.forced = 0
        self.changed = threading.Condition(self.lock)
        self.searches: dict[str, ShiftSearch] = {}
        self._shift: dict[str, int] = {}
        self.masked_runs: dict[str, int] = {}
        self.masked_after_band: dict[str, int] = {}
        self.band_ciphertexts: dict[str, list[int]] = {}
        self.accepted: set[str] = set()
        self._tickets: dict[bytes, tuple[bytes, list[int], list[int]]] = {}
        self.packed_starts = 0
        self.packed_finishes = 0
        self.starts_after_finish = 0
        #: PackedFinish calls naming a ticket already used (an identical evaluation round resent).
        self.finish_repeats = 0
        self.slot_ids: dict[int, str] = {}

    # -- helpers -----------------------------------------------------------------------------

    def _abort(self, context: grpc.ServicerContext) -> None:
        if self.error == "ticket_gone":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, packing.TICKET_GONE)
        context.abort(grpc.StatusCode.UNAVAILABLE, "bank is busy; try again")

    def _force(self, search: ShiftSearch) -> bool:
        """Whether to fail this call so that the bureau runs again (holding the lock)."""
        if search.done or self.forced >= self.budget:
            return False
        self.forced += 1
        search.forced += 1
        return True

    # -- unary ---------------------------------------------------------------------------------

    def CompareMasked(self, request: pb.MaskedRequest, context: grpc.ServicerContext) -> pb.BitsResponse:
        pk, app = self.pk, request.application_id
        (ct,) = pk.unpack(request.ciphertext, 1)
        bits, t = request.bits, request.truncate_bits
        with self.lock:
            search = self.searches.setdefault(app, ShiftSearch(bits, request.count))
            shift = search.next_shift()
            self._shift[app] = shift
            self.masked_runs[app] = self.masked_runs.get(app, 0) + 1
            if self.band_ciphertexts.get(app):
                self.masked_after_band[app] = self.masked_after_band.get(app, 0) + 1
        z = (self._sk.decrypt(ct) >> t) + shift
        beta = z & ((1 << bits) - 1)
        dgk = self.dgk.public_key
        return pb.BitsResponse(
            bit_ciphertexts=dgk.pack([dgk.encrypt_bit((beta >> i) & 1) for i in range(bits)]),
            high=pk.pack([pk.encrypt(z >> bits)]),
        )

    def CompareBlinded(self, request: pb.BlindedRequest, context: grpc.ServicerContext) -> pb.FinalResponse:
        dgk = self.dgk.public_key
        width = request.bits + 1
        flat = dgk.unpack(request.groups, request.count * width)
        groups = tuple(tuple(flat[k * width : (k + 1) * width]) for k in range(request.count))
        final: FinalResponse = answer_blinded(self.pk, self.dgk.secret_key, BlindedRequest(groups=groups))
        return pb.FinalResponse(deltas=self.pk.pack(list(final.deltas)))

    def DeliverBand(self, request: pb.BandDelivery, context: grpc.ServicerContext) -> pb.BandReceipt:
        app = request.application_id
        (ct,) = self.pk.unpack(request.band_ciphertext, 1)
        band = self._sk.decrypt_signed(ct)
        with self.changed:
            search = self.searches.setdefault(app, ShiftSearch(1, len(request.band_labels) - 1))
            self.band_ciphertexts.setdefault(app, []).append(int(ct))
            shift = self._shift.pop(app, None)
            if shift is None:
                search.stalls += 1  # the same [band] again: no new comparison behind it
            else:
                search.observe(shift, band)
            force = self._force(search)
            if not force:
                self.accepted.add(app)
            self.changed.notify_all()
        if force:
            self._abort(context)
        return pb.BandReceipt(application_id=app, stored=True)

    # -- packed --------------------------------------------------------------------------------

    def PackedStart(
        self, request: pb.PackedStartRequest, context: grpc.ServicerContext
    ) -> pb.PackedStartResponse:
        (ct,) = self.pk.unpack(request.ciphertext, 1)
        plain = self._sk.decrypt(ct)
        w, bits, count = request.slot_bits, request.bits, request.count
        width = bits + 1
        with self.lock:
            self.packed_starts += 1
            if self.packed_finishes:
                self.starts_after_finish += 1
            receiver = self._receivers[bytes(request.ot_session_id)]
            shifts = []
            for a in range(count):
                search = self.searches.setdefault(f"slot-{a}", ShiftSearch(bits, request.cutoffs))
                shifts.append(search.next_shift())
        values = [
            (((plain >> (a * w)) & ((1 << w) - 1)) >> request.truncate_bits) + shifts[a] for a in range(count)
        ]
        choices = [(v >> i) & 1 for v in values for i in range(width)]
        ext = receiver.request(choices)
        with self.lock:
            self._tickets[ext.nonce] = (bytes(request.ot_session_id), choices, shifts)
        return pb.PackedStartResponse(
            ticket=ext.nonce, ot_nonce=ext.nonce, ot_count=ext.count, ot_u=ext.u, ot_check=ext.check
        )

    def PackedFinish(
        self, request: pb.PackedFinishRequest, context: grpc.ServicerContext
    ) -> pb.PackedFinishResponse:
        nonce = bytes(request.ticket)
        with self.lock:
            self.packed_finishes += 1
            ticket = self._tickets.pop(nonce, None)
            if ticket is None:
                self.finish_repeats += 1
        if ticket is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, packing.TICKET_GONE)
        session, choices, shifts = ticket
        with self.lock:
            receiver = self._receivers[session]
        circuit = _circuit(request)
        labels = receiver.receive(
            nonce, choices, ot.ExtensionReply(y0=bytes(request.ot_y0), y1=bytes(request.ot_y1))
        )
        outputs = garble.evaluate_comparisons(circuit, labels)
        force = False
        with self.changed:
            for a, bits in enumerate(outputs):
                self.slot_ids[a] = request.application_ids[a]
                self.searches[f"slot-{a}"].observe(shifts[a], None, bits)
            force = any(self._force(self.searches[f"slot-{a}"]) for a in range(len(outputs)))
            if not force:
                self.accepted.update(request.application_ids)
            self.changed.notify_all()
        if force:
            self._abort(context)
        return pb.PackedFinishResponse(stored=len(outputs))

    def search_of(self, application_id: str) -> ShiftSearch:
        """The search for an application (unary: by id; packed: by the slot it was seen in)."""
        if application_id in self.searches:
            return self.searches[application_id]
        slot = next(a for a, app in self.slot_ids.items() if app == application_id)
        return self.searches[f"slot-{slot}"]


# ---------------------------------------------------------------------- negative controls


class VulnerableBank(_BankOt):
    """The bank's answers as they were before the fix, from the primitives: CompareMasked and
    DeliverBand decrypt only m mod p when the value is declared small and refuse a value outside
    the declared range; PackedStart refuses a set guard bit; PackedFinish refuses non-monotone
    outputs; no limit on runs, no suspension. Reference for the negative controls only."""

    def __init__(self, keypair: KeyPair, dgk: DGKKeyPair) -> None:
        super().__init__()
        self.pk = keypair.public_key
        self._sk = keypair.secret_key
        self._p = int(keypair.secret_key._sk.p)  # the prime the half (CRT p-part) decryption used
        self.dgk = dgk
        self._tickets: dict[bytes, tuple[bytes, list[int]]] = {}
        self.bands: dict[str, int] = {}

    def _half_decrypt(self, ct: Any, width: int) -> int:
        """m mod p for a value declared below the prime, as ``decrypt_small`` gave it; else m."""
        m = self._sk.decrypt(ct)
        return m % self._p if width < self.pk.bits // 2 - 8 else m

    def CompareMasked(self, request: pb.MaskedRequest, context: grpc.ServicerContext) -> pb.BitsResponse:
        (ct,) = self.pk.unpack(request.ciphertext, 1)
        z = self._half_decrypt(ct, request.width_bits)
        if z >> request.width_bits:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the masked score is wider than width_bits")
        zt = z >> request.truncate_bits
        beta = zt & ((1 << request.bits) - 1)
        dgk = self.dgk.public_key
        return pb.BitsResponse(
            bit_ciphertexts=dgk.pack([dgk.encrypt_bit((beta >> i) & 1) for i in range(request.bits)]),
            high=self.pk.pack([self.pk.encrypt(zt >> request.bits)]),
        )

    def DeliverBand(self, request: pb.BandDelivery, context: grpc.ServicerContext) -> pb.BandReceipt:
        (ct,) = self.pk.unpack(request.band_ciphertext, 1)
        band = self._sk.decrypt(ct) % self._p
        if not 0 <= band < len(request.band_labels):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed")
        with self.lock:
            self.bands.setdefault(request.application_id, band)
        return pb.BandReceipt(application_id=request.application_id, stored=True)

    def PackedStart(
        self, request: pb.PackedStartRequest, context: grpc.ServicerContext
    ) -> pb.PackedStartResponse:
        (ct,) = self.pk.unpack(request.ciphertext, 1)
        plain = self._sk.decrypt(ct)
        w, width, count = request.slot_bits, request.bits + 1, request.count
        if plain >> (w * count):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed")
        values = []
        for a in range(count):
            z = (plain >> (a * w)) & ((1 << w) - 1)
            if z >> (w - 1):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed")
            values.append((z >> request.truncate_bits) & ((1 << width) - 1))
        choices = [(v >> i) & 1 for v in values for i in range(width)]
        with self.lock:
            receiver = self._receivers[bytes(request.ot_session_id)]
        ext = receiver.request(choices)
        with self.lock:
            self._tickets[ext.nonce] = (bytes(request.ot_session_id), choices)
        return pb.PackedStartResponse(
            ticket=ext.nonce, ot_nonce=ext.nonce, ot_count=ext.count, ot_u=ext.u, ot_check=ext.check
        )

    def PackedFinish(
        self, request: pb.PackedFinishRequest, context: grpc.ServicerContext
    ) -> pb.PackedFinishResponse:
        nonce = bytes(request.ticket)
        with self.lock:
            session, choices = self._tickets.pop(nonce)
            receiver = self._receivers[session]
        circuit = _circuit(request)
        labels = receiver.receive(
            nonce, choices, ot.ExtensionReply(y0=bytes(request.ot_y0), y1=bytes(request.ot_y1))
        )
        new = 0
        for app, bits in zip(
            request.application_ids, garble.evaluate_comparisons(circuit, labels), strict=True
        ):
            band = sum(bits)
            if list(bits) != [1] * band + [0] * (len(bits) - band):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cryptographic check failed")
            with self.lock:
                new += app not in self.bands
                self.bands.setdefault(app, band)
        return pb.PackedFinishResponse(stored=new)


class NaiveBureau:
    """The bureau's retry behaviour before the fix, for the negative control of attack 3: an
    application or batch whose band protocol fails anywhere runs again from the start with fresh
    masks (and a fresh [band]), up to ``attempts`` times."""

    def __init__(self, stub: Any, pk: PublicKey, dgk: DGKPublicKey, model: LinearModel) -> None:
        self.stub, self.pk, self.dgk, self.model = stub, pk, dgk, model
        self.labels = list(model.policy.labels)

    def score(self, application_id: str, ciphertexts: Sequence[Any], attempts: int) -> int:
        """Run the unary protocol until the bank stores the band; returns the attempts used."""
        pk, dgk, model = self.pk, self.dgk, self.model
        score = model.evaluate_encrypted(pk, list(ciphertexts))
        for attempt in range(1, attempts + 1):
            proto = BandComparison(
                pk, dgk, score, model.encoded_cutoffs, *model.encoded_score_bounds, model.truncate_bits
            )
            masked = proto.masked_request()
            try:
                bits_msg = self.stub.CompareMasked(
                    pb.MaskedRequest(
                        application_id=application_id,
                        key_id=pk.key_id,
                        count=masked.count,
                        bits=masked.bits,
                        truncate_bits=masked.truncate_bits,
                        width_bits=masked.width_bits,
                        ciphertext=pk.pack([masked.ciphertext]),
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
                bits = BitsResponse(
                    bit_ciphertexts=tuple(dgk.unpack(bits_msg.bit_ciphertexts, masked.bits)),
                    high=pk.unpack(bits_msg.high, 1)[0],
                )
                blinded = proto.blinded_request(bits)
                final_msg = self.stub.CompareBlinded(
                    pb.BlindedRequest(
                        application_id=application_id,
                        key_id=pk.key_id,
                        count=len(blinded.groups),
                        bits=len(blinded.groups[0]) - 1,
                        groups=dgk.pack([c for g in blinded.groups for c in g]),
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
                final = FinalResponse(deltas=tuple(pk.unpack(final_msg.deltas, masked.count)))
                band = proto.band_ciphertext(final)
                self.stub.DeliverBand(
                    pb.BandDelivery(
                        application_id=application_id,
                        key_id=pk.key_id,
                        model_id="german-credit-lr",
                        band_labels=self.labels,
                        band_ciphertext=pk.pack([band]),
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
                return attempt
            except grpc.RpcError:
                continue
        return attempts

    def score_batch(self, application_ids: Sequence[str], ciphertexts: Sequence[Any], attempts: int) -> int:
        """Run the packed protocol until the bank stores the batch; returns the attempts used."""
        pk, model = self.pk, self.model
        sender = ot_sender(self.stub)
        count = len(application_ids)
        slot_bits = packing.slot_bits_for(model) or 0
        for attempt in range(1, attempts + 1):
            band = packing.PackedBand(pk, model, list(ciphertexts), count, slot_bits)
            masked = band.masked()
            try:
                start_fields: dict[str, Any] = {
                    "key_id": pk.key_id,
                    "ot_session_id": sender.session_id,
                    "ciphertext": pk.pack([masked.ciphertext]),
                    "count": masked.count,
                    "slot_bits": masked.slot_bits,
                    "cutoffs": masked.cutoffs,
                    "bits": masked.bits,
                    "truncate_bits": masked.truncate_bits,
                }
                if has_field(pb.PackedStartRequest, "application_ids"):
                    start_fields["application_ids"] = list(application_ids)
                start = self.stub.PackedStart(pb.PackedStartRequest(**start_fields), timeout=RPC_TIMEOUT_S)
                request = ot.ExtensionRequest(
                    session_id=sender.session_id,
                    nonce=bytes(start.ot_nonce),
                    count=start.ot_count,
                    u=bytes(start.ot_u),
                    check=bytes(start.ot_check),
                )
                circuit, pairs = band.garble()
                reply = sender.reply(request, pairs)
                self.stub.PackedFinish(
                    pb.PackedFinishRequest(
                        key_id=pk.key_id,
                        ticket=bytes(start.ticket),
                        ot_y0=reply.y0,
                        ot_y1=reply.y1,
                        garbling_id=circuit.garbling_id,
                        tables=circuit.tables,
                        garbler_labels=circuit.garbler_labels,
                        decode=circuit.decode,
                        model_id="german-credit-lr",
                        band_labels=self.labels,
                        application_ids=list(application_ids),
                        count=circuit.instances,
                        cutoffs=circuit.count,
                        width=circuit.width,
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
                return attempt
            except grpc.RpcError:
                continue
        return attempts


def wait_for(predicate: Callable[[], bool], *, timeout: float, poll: float = 0.02) -> bool:
    """Wait until ``predicate()`` holds or ``timeout`` seconds pass; True if it holds."""
    deadline = time.monotonic() + timeout
    done = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        done.wait(poll)
    return True
