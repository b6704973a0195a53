"""The band of any model by a garbled circuit: linear stage on Paillier ciphertexts, then one circuit.

One pipeline for every model family (issue 13's design):

1. **platform**: the public encoding of an application, each encoded column encrypted under the
   bank's Paillier key (unchanged);
2. **bureau, Paillier stage**: the model's :class:`LinearStage` — for a linear model its score, for a
   tree ensemble the feature each node tests (with its missing bit), for a network its first layer —
   computed on the ciphertexts, each value shifted by a public offset into [0, 2^w), then masked and
   packed into slots (:mod:`blindscore.protocol.slots`);
3. **bank**: one decryption per packed ciphertext; the bits of every masked slot are its
   inputs to the circuit, which it obtains as labels by oblivious transfer (the bureau is the OT
   sender of the label pairs, :mod:`blindscore.crypto.ot`);
4. **garbled circuit** (the bureau garbles, the bank evaluates, :mod:`blindscore.crypto.halfgates`):
   v_j = ((z_j - r_j) mod 2^(w+1)) >> 1 removes the masks, then the model's own circuit —
   comparisons, path evaluation, leaf sums, activations, further layers — ends in the band cutoffs.
   The only outputs are K thermometer bits [score >= c_k]: the bank decodes the band and nothing else.

What each party learns. The bank: the band, and the public :class:`CircuitShape` (the model family
and its size parameters, from which both sides build the same circuit topology); the masked values
it decrypts are within 2^-kappa of uniform, and a garbled circuit's tables and the labels it holds
reveal nothing beyond the decoded outputs (semi-honest garbler; Yao, Bellare-Hoang-Rogaway). The
bureau: nothing (it sees ciphertexts, and the bank's OT choices are hidden by the OT). The secret
parts of the model — weights, thresholds, leaf values, which feature a node tests, the cutoffs — are
the bureau's garbler inputs or its linear stage, never part of the topology.

The bank checks the decoded bits are a thermometer code (1...1 0...0) and records anything else as
a protocol fault, never a refusal; so does a plaintext wider than its mask allows (see slots). Transport-free:
the node flows map these records to gRPC messages.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np
import numpy.typing as npt

from blindscore.crypto import halfgates
from blindscore.crypto.circuit import Bits, Circuit, CircuitBuilder
from blindscore.crypto.ot import ExtensionRequest, LabelPairs, OtSender
from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.errors import InvalidInputError
from blindscore.protocol.comparison import DEFAULT_KAPPA
from blindscore.protocol.packing import bands_from_bits
from blindscore.protocol.slots import MaskedSlots, OpenedSlots, SlotLayout, SlotMasks, open_slots

#: The bank's check on a garbled band: its decoded bits were not a thermometer code.
FAULT_CIRCUIT_OUTPUT = "circuit_output"
#: Band cutoffs a circuit may end in (K thermometer bits, K + 1 bands).
MAX_CUTOFFS = 64


@dataclass(frozen=True)
class LinearOutput:
    """One value of the linear stage: sum of weight * encoded column, plus an offset that puts it in
    [0, 2^w) for every application the feature spec allows. Secret (the bureau's)."""

    terms: tuple[tuple[int, int], ...]  # (encoded column index, integer weight)
    offset: int


@dataclass(frozen=True)
class LinearStage:
    """Every value a model's circuit takes from the ciphertexts, all of one public width."""

    outputs: tuple[LinearOutput, ...]
    value_bits: int


@dataclass(frozen=True)
class CircuitShape:
    """The public parameters both parties build the circuit from: the family (a model type name)
    and its sizes. Everything here is what the bank may learn about the model."""

    family: str
    values: int
    value_bits: int
    cutoffs: int
    #: Family-specific sizes (trees, depth, leaf bits ...), as sorted (name, value) pairs.
    params: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.cutoffs <= MAX_CUTOFFS:
            raise InvalidInputError(f"a band circuit ends in 1..{MAX_CUTOFFS} cutoffs, got {self.cutoffs}")
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))

    def param(self, name: str) -> int:
        """A family-specific size parameter."""
        found = dict(self.params).get(name)
        if found is None:
            raise InvalidInputError(f"the {self.family} circuit shape has no parameter {name!r}")
        return found


class CircuitModel(Protocol):
    """What this protocol needs of a model (models satisfy it; the protocol never imports them)."""

    def linear_stage(self) -> LinearStage: ...
    def circuit_shape(self) -> CircuitShape: ...
    def garbler_inputs(self) -> list[tuple[int, int]]: ...


#: Builds a family's circuit: (shape, builder, the unmasked values, the garbler's secret inputs as
#: declared by ``secret_widths``) -> the K thermometer output wires, lowest cutoff first.
BuildCircuit = Callable[[CircuitShape, CircuitBuilder, list[Bits], list[Bits]], list[int]]
#: The widths of a family's secret garbler inputs, from its public shape.
SecretWidths = Callable[[CircuitShape], list[int]]


@dataclass(frozen=True)
class MaskedBuild:
    """A family that removes the masks itself, for a smaller or shallower circuit than the generic
    unmasking (a ripple subtraction per value) followed by :attr:`Family.build`.

    ``widths(shape)``: the widths of its garbler inputs for one round; ``inputs(shape, mask slots,
    model secrets)``: their values, computed by the garbler from the round's masks and the model's
    secrets; ``build(shape, builder, masked values z_j, those inputs)``: the K outputs."""

    widths: SecretWidths
    inputs: Callable[[CircuitShape, list[int], list[tuple[int, int]]], list[tuple[int, int]]]
    build: BuildCircuit


@dataclass(frozen=True)
class Family:
    """A model family's circuit: what the bank needs to rebuild the topology from a shape."""

    build: BuildCircuit
    secret_widths: SecretWidths
    masked: MaskedBuild | None = None


@functools.lru_cache(maxsize=32)
def band_circuit(shape: CircuitShape, family: Family) -> Circuit:
    """The whole circuit, identical at both parties: unmask every value, then the family's part.

    Built once per (shape, family) and kept: it depends on public sizes only, and building a
    100-tree circuit in Python takes most of a second.

    Garbler inputs: the s = w + 1 bits of every mask slot r_j (in value order), then the family's
    secrets, then the round's K-bit pad. Evaluator inputs: the s bits of every masked slot z_j.
    Outputs: K thermometer bits XOR the pad (free XORs), so what the bank decodes is uniform until
    the bureau reveals that round's pad (:func:`unpad`). Unmasking is
    v_j = ((z_j - r_j) mod 2^s) >> 1 (:mod:`blindscore.protocol.slots`).
    """
    b = CircuitBuilder()
    s = shape.value_bits + 1
    masked = [b.evaluator_input(s) for _ in range(shape.values)]
    if family.masked is not None:
        inputs = [b.garbler_input(width) for width in family.masked.widths(shape)]
        pad = b.garbler_input(shape.cutoffs)
        outputs = family.masked.build(shape, b, masked, inputs)
    else:
        masks = [b.garbler_input(s) for _ in range(shape.values)]
        secrets_ = [b.garbler_input(width) for width in family.secret_widths(shape)]
        pad = b.garbler_input(shape.cutoffs)
        values = [b.sub(z, r)[1:] for z, r in zip(masked, masks, strict=True)]
        outputs = family.build(shape, b, values, secrets_)
    if len(outputs) != shape.cutoffs:
        raise InvalidInputError(
            f"the {shape.family} circuit returned {len(outputs)} outputs for {shape.cutoffs} cutoffs"
        )
    for wire, p in zip(outputs, pad, strict=True):
        b.output(b.xor(wire, p))
    return b.build()


def pad_bytes(bits: Sequence[int]) -> bytes:
    """A pad of K bits as it travels (numpy.packbits order)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def unpad(padded: Sequence[int], pad: bytes) -> int | None:
    """The band from a round's padded outputs and its pad: the K bits XOR the pad must be a
    thermometer code (1...1 0...0); None otherwise (a deviating garbler, or a pad of another
    round: record a fault)."""
    k = len(padded)
    if len(pad) != (k + 7) // 8:
        raise InvalidInputError(f"a pad for {k} outputs is {(k + 7) // 8} bytes, got {len(pad)}")
    bits = np.unpackbits(np.frombuffer(pad, dtype=np.uint8))[:k]
    return band_from_outputs([int(a) ^ int(p) for a, p in zip(padded, bits, strict=True)])


def _bits(values: Sequence[tuple[int, int]]) -> npt.NDArray[np.uint8]:
    """The garbler's input bits: each value's ``width`` bits, least significant first."""
    if any(v < 0 or v >> w for v, w in values):
        raise InvalidInputError("a garbler input does not fit its declared width")
    text = "".join(format(v, f"0{w}b")[::-1] for v, w in values)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")


def linear_values(
    pk: PublicKey, stage: LinearStage, ciphertexts: Sequence[Any]
) -> tuple[list[Any], list[int]]:
    """[sum of weight * x_col] for every output of the linear stage, and its public-to-the-bureau
    offset; v_j = that sum + offset_j, the offset added as plaintext when the values are packed.

    Outputs with the same terms share one ciphertext (every node of a tree ensemble that tests one
    feature has the same terms, whatever its threshold): each value still gets its own slot of a
    mask, and the packed ciphertexts are re-randomised, so sharing the work shows the bank nothing.
    """
    done: dict[tuple[tuple[int, int], ...], Any] = {}
    out = []
    for o in stage.outputs:
        if o.terms not in done:
            if o.terms:
                cols = [ciphertexts[c] for c, _ in o.terms]
                done[o.terms] = pk.dot(cols, [w for _, w in o.terms])
            else:
                done[o.terms] = pk.encrypt_trivial(0)
        out.append(done[o.terms])
    return out, [o.offset for o in stage.outputs]


@dataclass(frozen=True)
class CircuitRequest:
    """Bureau -> bank, round 1: the masked linear stage and the public shape."""

    shape: CircuitShape
    masked: MaskedSlots


class CircuitBand:
    """The bureau's side of one application: round 1 (masked values), round 2 (the garbled circuit)."""

    __slots__ = ("_garbler_bits", "_garbling_id", "_masks", "_pad", "family", "request")

    def __init__(
        self,
        pk: PublicKey,
        model: CircuitModel,
        family: Family,
        ciphertexts: Sequence[Any],
        *,
        kappa: int = DEFAULT_KAPPA,
    ) -> None:
        stage = model.linear_stage()
        shape = model.circuit_shape()
        if len(stage.outputs) != shape.values or stage.value_bits != shape.value_bits:
            raise InvalidInputError("the model's linear stage does not match its circuit shape")
        layout = SlotLayout(shape.values, shape.value_bits, kappa)
        values, offsets = linear_values(pk, stage, ciphertexts)
        self._masks = SlotMasks(pk, values, layout, offsets)
        self.family = family
        self.request = CircuitRequest(shape, self._masks.request)
        secrets_ = model.garbler_inputs()
        widths = family.secret_widths(shape)
        if [w for _, w in secrets_] != widths:
            raise InvalidInputError("the model's secret inputs do not match its family's declared widths")
        s = layout.slot_bits
        if family.masked is None:
            inputs = [(r, s) for r in self._masks.mask_slots] + secrets_
        else:
            inputs = family.masked.inputs(shape, self._masks.mask_slots, secrets_)
            if [w for _, w in inputs] != family.masked.widths(shape):
                raise InvalidInputError("the family's round inputs do not match its declared widths")
        self._garbler_bits = _bits(inputs)
        self._pad = np.zeros(0, dtype=np.uint8)
        self._garbling_id = b""

    def _round_bits(self) -> npt.NDArray[np.uint8]:
        """The garbler's inputs of a new round: the masks and secrets, then a fresh pad. Every
        garbling gets its own pad, so no two rounds a bank evaluates can be XORed together."""
        k = self.request.shape.cutoffs
        self._pad = np.frombuffer(secrets.token_bytes(k), dtype=np.uint8) & np.uint8(1)
        return np.concatenate((self._garbler_bits, self._pad))

    @property
    def pad(self) -> bytes:
        """The one-time pad on the outputs of the last round garbled (:func:`pad_bytes`): revealed
        to the bank for one round per application only (bureau/ledger.py)."""
        if len(self._pad) != self.request.shape.cutoffs:
            raise InvalidInputError("no round has been garbled yet")
        return pad_bytes(self._pad.tolist())

    def garble(self) -> tuple[halfgates.GarbledCircuit, LabelPairs]:
        """The garbled circuit, and fresh label pairs of the bank's inputs for a plain OT sender."""
        circuit = band_circuit(self.request.shape, self.family)
        return halfgates.garble(circuit, self._round_bits())

    def finish(self, request: ExtensionRequest, sender: OtSender) -> halfgates.GarbledCircuit:
        """Round 2, given the bank's OT request: the correlated OT gives the labels of the bank's
        input bits and Delta (the session's s, :meth:`OtSender.correlated`; nothing is sent back for
        them), then the circuit is garbled with them. The request's consistency check runs before
        anything is garbled."""
        pairs = sender.correlated(request)
        circuit = band_circuit(self.request.shape, self.family)
        garbled, _ = halfgates.garble(circuit, self._round_bits(), pairs)
        self._garbling_id = garbled.garbling_id
        return garbled

    @property
    def last_round(self) -> tuple[bytes, bytes]:
        """(garbling id, pad) of the last round :meth:`finish` garbled: what the bureau records
        before it reveals the pad (bureau/ledger.py)."""
        if not self._garbling_id:
            raise InvalidInputError("no round has been garbled yet")
        return self._garbling_id, self.pad

    def __repr__(self) -> str:
        return f"CircuitBand({self.request.shape.family}, values={self.request.shape.values}, <secrets>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a CircuitBand holds masks and model secrets and cannot be pickled or copied")


@dataclass(frozen=True)
class OpenedRequest:
    """The bank after round 1: its OT choice bits, and whether any slot faulted."""

    choices: tuple[int, ...]
    faulted: bool


def open_request(keypair: KeyPair, request: CircuitRequest) -> OpenedRequest:
    """Decrypt the masked values; the choices are the bits of every value's slot, LSB first."""
    shape = request.shape
    if request.masked.layout.count != shape.values or request.masked.layout.value_bits != shape.value_bits:
        raise InvalidInputError("the masked values do not match the declared circuit shape")
    opened: OpenedSlots = open_slots(keypair, request.masked)
    s = request.masked.layout.slot_bits
    choices = tuple((z >> i) & 1 for z in opened.values for i in range(s))
    return OpenedRequest(choices, any(opened.faulted))


def band_from_outputs(bits: Sequence[int]) -> int | None:
    """The band from K thermometer bits (1...1 0...0), or None if the bits are not one."""
    return bands_from_bits([bits])[0]


def evaluate_outputs(
    shape: CircuitShape, family: Family, garbled: halfgates.GarbledCircuit, labels: Sequence[int] | bytes
) -> tuple[int, ...]:
    """Round 2 at the bank: evaluate the circuit it rebuilt from the public shape; the K padded
    output bits (CryptoError when the garbling does not fit the circuit or an output tag fails)."""
    return tuple(halfgates.evaluate(band_circuit(shape, family), garbled, labels))


def evaluate_band(
    shape: CircuitShape,
    family: Family,
    garbled: halfgates.GarbledCircuit,
    labels: Sequence[int] | bytes,
    pad: bytes,
) -> int | None:
    """:func:`evaluate_outputs` then :func:`unpad` with the round's pad: the band, or None."""
    return unpad(evaluate_outputs(shape, family, garbled, labels), pad)
