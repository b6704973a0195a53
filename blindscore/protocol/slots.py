"""Masked values of one application packed into Paillier slots: the hand-over of a model's linear stage.

The bureau holds ciphertexts [v_0], ..., [v_(m-1)] of the values its model's linear stage computed
(for a tree ensemble: one per node, the tested feature against its threshold; for a linear model:
the score), each shifted by a public offset so that 0 <= v_j < 2^w. It hands them to the bank
packed and masked a whole plaintext at a time:

    V = sum_j 2 v_j 2^(s j),   s = w + 1,   Z = V + R,   R uniform in [0, 2^(k s + kappa))

for the k values of one ciphertext. The bank decrypts each ciphertext once and learns Z, whose
distribution is within statistical distance 2^-kappa of uniform whatever V is (V < 2^(k s);
Kolesnikov-Sadeghi-Schneider: additive blinding over the integers). One kappa-bit margin per
*plaintext* rather than per value is what lets a slot be w + 1 bits wide instead of w + kappa + 1:
fewer squarings to pack, fewer ciphertexts to decrypt.

Unmasking slot by slot. Write z_j, r_j for the j-th s-bit slot of Z and R. Adding R carries between
slots: z_j = (2 v_j + r_j + c_j) mod 2^s with c_j in {0, 1} the carry out of the slots below. The
garbled circuit that follows computes, for each slot on its own,

    u_j = (z_j - r_j) mod 2^s = 2 v_j + c_j     (no wrap: 2 v_j + 1 < 2^s)

so v_j = u_j >> 1 exactly: the slot's spare low bit absorbs the carry, every slot's subtraction is
independent of the others (s AND gates each, all slots in parallel), and c_j is dropped unseen.
The bank's circuit inputs are the bits of z_j, the bureau's the bits of r_j.

Packing: with k = floor((key bits - 3 - kappa) / s) slots per plaintext, the m values need
ceil(m / k) ciphertexts; shifting a ciphertext by s bits costs s squarings modulo n^2 (Horner's
rule), the Paillier stage's main cost.

A plaintext of 2^(k s + kappa + 1) or more can only come from a deviating bureau (or a value outside
its declared bound). The bank never refuses it — a refusal would be an oracle on what it decrypted —
it marks the ciphertext's slots faulted and uses random values in their place.
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
        """s = w + 1: a value and the spare low bit that absorbs the carry from the slots below."""
        return self.value_bits + 1

    def per_ciphertext(self, key_bits: int) -> int:
        """Slots in one plaintext of a ``key_bits`` key: k s + kappa + 1 bits, the top two clear (Z < n)."""
        per = (key_bits - 3 - self.kappa) // self.slot_bits
        if per < 1:
            raise InvalidInputError(
                f"a {self.slot_bits}-bit slot and a {self.kappa}-bit margin do not fit a {key_bits}-bit key"
            )
        return per

    def ciphertexts(self, key_bits: int) -> int:
        per = self.per_ciphertext(key_bits)
        return -(-self.count // per)

    def chunks(self, key_bits: int) -> list[range]:
        """The value indices each ciphertext carries, in order."""
        per = self.per_ciphertext(key_bits)
        return [range(a, min(a + per, self.count)) for a in range(0, self.count, per)]

    def mask_bits(self, slots: int) -> int:
        """Width of the mask of a plaintext of ``slots`` slots: k s + kappa."""
        return slots * self.slot_bits + self.kappa


def _draw_mask(bits: int) -> int:
    """One plaintext's mask R, uniform in [0, 2^bits) (a hook the leakage tests break)."""
    return secrets.randbits(bits)


@dataclass(frozen=True)
class MaskedSlots:
    """Bureau -> bank: the packed masked values and their public layout."""

    ciphertexts: tuple[int, ...]
    layout: SlotLayout


class SlotMasks:
    """The bureau's side of a hand-over: it packs and masks, and keeps the masks for its circuit."""

    __slots__ = ("_masks", "_sizes", "layout", "request")

    def __init__(
        self, pk: PublicKey, values: Sequence[Any], layout: SlotLayout, offsets: Sequence[int] | None = None
    ) -> None:
        """Pack ``values`` (ciphertexts), each plus its plaintext offset (0 by default): the offsets
        are added with the mask, a plaintext addition per ciphertext rather than per value."""
        if len(values) != layout.count:
            raise InvalidInputError(f"the layout declares {layout.count} values, got {len(values)}")
        if offsets is not None and len(offsets) != layout.count:
            raise InvalidInputError(f"the layout declares {layout.count} values, got {len(offsets)} offsets")
        s = layout.slot_bits
        self.layout = layout
        chunks = layout.chunks(pk.bits)
        self._sizes = [len(chunk) for chunk in chunks]
        self._masks = [_draw_mask(layout.mask_bits(size)) for size in self._sizes]
        # Horner per plaintext: value j lands in slot j - start, one s-bit shift (s squarings) per
        # value, on every core (blindscore.crypto.parallel). The final doubling puts every value
        # above its slot's spare bit; offsets and mask are one plaintext addition.
        accs = pk.pack_slots([[values[j] for j in chunk] for chunk in chunks], s)
        packed = []
        for chunk, mask, acc in zip(chunks, self._masks, accs, strict=True):
            shift = 0 if offsets is None else sum(offsets[j] << ((j - chunk[0]) * s) for j in chunk)
            packed.append(int(pk.rerandomize(pk.add_plain(pk.add(acc, acc), 2 * shift + mask))))
        self.request = MaskedSlots(tuple(packed), layout)

    @property
    def mask_slots(self) -> list[int]:
        """r_j, the s-bit slot of the mask over value j: the bureau's circuit inputs."""
        s = self.layout.slot_bits
        low = (1 << s) - 1
        return [
            (mask >> (a * s)) & low
            for size, mask in zip(self._sizes, self._masks, strict=True)
            for a in range(size)
        ]

    def __repr__(self) -> str:
        return f"SlotMasks(count={self.layout.count}, value_bits={self.layout.value_bits}, <masks>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SlotMasks holds the masks and cannot be pickled or copied")


@dataclass(frozen=True)
class OpenedSlots:
    """The bank's view after decrypting: each value's s-bit slot of Z (its circuit input), and which
    slots broke the layout's promise. A faulted slot's input is random, so nothing the bank sends
    on depends on whether a slot faulted."""

    values: tuple[int, ...]
    faulted: tuple[bool, ...]


def open_slots(keypair: KeyPair, request: MaskedSlots) -> OpenedSlots:
    """Decrypt every packed ciphertext once and cut it into slots."""
    layout = request.layout
    pk = keypair.public_key
    chunks = layout.chunks(pk.bits)
    if len(request.ciphertexts) != len(chunks):
        raise InvalidInputError(
            f"{layout.count} values of {layout.slot_bits} bits take {len(chunks)} "
            f"ciphertexts of this key, got {len(request.ciphertexts)}"
        )
    s = layout.slot_bits
    slot_mask = (1 << s) - 1
    values: list[int] = []
    faulted: list[bool] = []
    plains = keypair.secret_key.decrypt_many([pk.validate(c) for c in request.ciphertexts])
    for chunk, plain in zip(chunks, plains, strict=True):
        count = len(chunk)
        bad = plain >> (layout.mask_bits(count) + 1) != 0
        decoys = secrets.randbits(s * count)  # one draw, used or not
        source = decoys if bad else plain
        values += [(source >> (a * s)) & slot_mask for a in range(count)]
        faulted += [bad] * count
    return OpenedSlots(tuple(values), tuple(faulted))
