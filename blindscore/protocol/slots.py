"""Masked values of one application packed into Paillier slots: the hand-over of a model's linear stage.

The bureau holds ciphertexts [v_0], ..., [v_(m-1)] of the values its model's linear stage computed
(for a tree ensemble: the feature each node tests; for a linear model: the score), each shifted by a
public offset so that 0 <= v_j < 2^w. It hands them to the bank masked and packed:

    z_j = v_j + r_j,   r_j uniform in [0, 2^(w+kappa) - 2^w],   so 0 <= z_j < 2^(w+kappa)

and slot j of a ciphertext holds z_j in s = w + kappa + 1 bits (the top bit a guard that an honest
bureau never sets). The bank decrypts each ciphertext once and learns z_j, whose distribution is
within statistical distance 2^-kappa of uniform whatever v_j is (Kolesnikov-Sadeghi-Schneider:
additive blinding over the integers). The garbled circuit that follows recovers

    v_j = (z_j - r_j) mod 2^w

from the low w bits of z_j (the bank's input) and of r_j (the bureau's input): w AND gates per value.
Neither party learns v_j; only the circuit's declared outputs (the band) are ever decoded.

Packing: with k = floor((key bits - 2) / s) slots per plaintext, the m values need ceil(m / k)
ciphertexts; shifting a ciphertext by s bits costs s squarings modulo n^2, so packing costs about
s squarings per value (Horner's rule). That is the Paillier stage's main cost, which is why the
values are shifted rather than encrypted apart: the bank then decrypts m / k ciphertexts, not m.

A slot whose guard bit is set, or a plaintext wider than its slots, can only come from a deviating
bureau (or a value outside its declared bound). The bank never refuses it — a refusal would be an
oracle on what it decrypted — it marks the slot faulted and uses a random value in its place.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from blindscore.crypto.paillier import KeyPair, PublicKey
from blindscore.errors import InvalidInputError
from blindscore.protocol.comparison import DEFAULT_KAPPA, MAX_KAPPA, MIN_KAPPA

#: Values one application may hand over at most (a 100-tree, depth-8 ensemble has 25,500 nodes).
MAX_VALUES = 1 << 16
#: Widest value a slot carries (an order-preserving key of a float64 and a missing bit: 66 bits).
MAX_VALUE_BITS = 128


@dataclass(frozen=True)
class SlotLayout:
    """The public shape of a hand-over: how many values, how wide, how they are packed."""

    count: int
    value_bits: int
    kappa: int = DEFAULT_KAPPA

    def __post_init__(self) -> None:
        for name, value, lo, hi in (
            ("count", self.count, 1, MAX_VALUES),
            ("value_bits", self.value_bits, 1, MAX_VALUE_BITS),
            ("kappa", self.kappa, MIN_KAPPA, MAX_KAPPA),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInputError(
                    f"slot layout: {name} must be an integer in [{lo}, {hi}], got {value!r}"
                )

    @property
    def slot_bits(self) -> int:
        """s = w + kappa + 1: a masked value and its guard bit."""
        return self.value_bits + self.kappa + 1

    def per_ciphertext(self, key_bits: int) -> int:
        """Slots in one plaintext of a ``key_bits`` key (the top two bits stay clear: m < n)."""
        per = (key_bits - 2) // self.slot_bits
        if per < 1:
            raise InvalidInputError(f"a {self.slot_bits}-bit slot does not fit a {key_bits}-bit key")
        return per

    def ciphertexts(self, key_bits: int) -> int:
        per = self.per_ciphertext(key_bits)
        return -(-self.count // per)


def _draw_mask(layout: SlotLayout) -> int:
    """One value's mask r_j, uniform in [0, 2^(w+kappa) - 2^w] (a hook the leakage tests break)."""
    return secrets.randbelow((1 << (layout.value_bits + layout.kappa)) - (1 << layout.value_bits) + 1)


@dataclass(frozen=True)
class MaskedSlots:
    """Bureau -> bank: the packed masked values and their public layout."""

    ciphertexts: tuple[int, ...]
    layout: SlotLayout


class SlotMasks:
    """The bureau's side of a hand-over: it packs and masks, and keeps the masks for its circuit."""

    __slots__ = ("_masks", "layout", "request")

    def __init__(self, pk: PublicKey, values: Sequence[Any], layout: SlotLayout) -> None:
        if len(values) != layout.count:
            raise InvalidInputError(f"the layout declares {layout.count} values, got {len(values)}")
        s = layout.slot_bits
        per = layout.per_ciphertext(pk.bits)
        self.layout = layout
        self._masks = [_draw_mask(layout) for _ in range(layout.count)]
        packed = []
        for start in range(0, layout.count, per):
            chunk = list(range(start, min(start + per, layout.count)))
            # Horner: acc = [v_last]; acc = acc^(2^s) * [v_j] down to the chunk's first value, so
            # value j lands in slot j - start; one s-bit shift (s squarings) per value.
            acc = values[chunk[-1]]
            for j in reversed(chunk[:-1]):
                acc = pk.add(pk.mul_plain(acc, 1 << s), values[j])
            masks = sum(self._masks[j] << ((j - start) * s) for j in chunk)
            packed.append(int(pk.rerandomize(pk.add_plain(acc, masks))))
        self.request = MaskedSlots(tuple(packed), layout)

    @property
    def low_masks(self) -> list[int]:
        """r_j mod 2^w: the bureau's circuit inputs that unmask the bank's low bits of z_j."""
        low = (1 << self.layout.value_bits) - 1
        return [r & low for r in self._masks]

    def __repr__(self) -> str:
        return f"SlotMasks(count={self.layout.count}, value_bits={self.layout.value_bits}, <masks>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SlotMasks holds the masks and cannot be pickled or copied")


@dataclass(frozen=True)
class OpenedSlots:
    """The bank's view after decrypting: each value's low w bits (its circuit input), and which
    slots broke the layout's promise. A faulted slot's input is random, so nothing the bank sends
    on depends on whether a slot faulted."""

    values: tuple[int, ...]
    faulted: tuple[bool, ...]


def open_slots(keypair: KeyPair, request: MaskedSlots) -> OpenedSlots:
    """Decrypt every packed ciphertext once and cut it into slots."""
    layout = request.layout
    pk = keypair.public_key
    per = layout.per_ciphertext(pk.bits)
    if len(request.ciphertexts) != layout.ciphertexts(pk.bits):
        raise InvalidInputError(
            f"{layout.count} values of {layout.slot_bits} bits take {layout.ciphertexts(pk.bits)} "
            f"ciphertexts of this key, got {len(request.ciphertexts)}"
        )
    s = layout.slot_bits
    slot_mask = (1 << s) - 1
    guard = 1 << (s - 1)
    low = (1 << layout.value_bits) - 1
    values: list[int] = []
    faulted: list[bool] = []
    for i, c in enumerate(request.ciphertexts):
        plain = keypair.secret_key.decrypt(pk.validate(c))
        count = min(per, layout.count - i * per)
        overflow = plain >> (s * count) != 0
        decoys = secrets.randbits(layout.value_bits * count)  # one draw, used or not
        for a in range(count):
            z = (plain >> (a * s)) & slot_mask
            bad = overflow or z & guard != 0
            values.append((decoys >> (a * layout.value_bits)) & low if bad else z & low)
            faulted.append(bad)
    return OpenedSlots(tuple(values), tuple(faulted))
