"""Circuit families: how each kind of model ends in a band inside the garbled circuit.

A family is the public half of a model type's circuit (:class:`~blindscore.protocol.circuit_band.Family`):
from the public shape alone it declares the widths of the bureau's secret inputs and wires the
circuit, so the bank rebuilds the same topology without seeing the model. The secret half — the
values of those inputs and the linear stage — stays with the model. A researcher adding a model type
writes one family with the small builder of :mod:`blindscore.crypto.circuit` (comparisons, muxes,
sums) and never touches garbling, OT or masking.
"""

from __future__ import annotations

import threading

from blindscore.crypto.circuit import ZERO, Bits, CircuitBuilder
from blindscore.errors import ModelFormatError
from blindscore.protocol.circuit_band import CircuitShape, Family, MaskedBuild

_lock = threading.Lock()
_families: dict[str, Family] = {}


def register_family(name: str, family: Family) -> None:
    """Register a circuit family under ``name``; a second family under a taken name is refused."""
    with _lock:
        if name in _families and _families[name] is not family:
            raise ModelFormatError(f"circuit family {name!r} is already registered")
        _families[name] = family


def family(name: str) -> Family:
    """The circuit family ``name`` (a bank rebuilding a circuit from a shape it was sent)."""
    with _lock:
        found = _families.get(name)
    if found is None:
        raise ModelFormatError(f"unknown circuit family {name!r}; known: {', '.join(sorted(_families))}")
    return found


def thermometer(
    b: CircuitBuilder, score: Bits, cutoffs: list[Bits], *, signed: bool = False, width: int | None = None
) -> list[int]:
    """[score >= c_k] for every cutoff, the circuit's only outputs: K comparisons. The score is
    extended to ``width`` bits (default one more than its own, so that a cutoff above every score
    is representable), the width the cutoffs are given in."""
    width = len(score) + 1 if width is None else width
    wide = b.sign_extend(score, width) if signed else b.zero_extend(score, width)
    return [b.not_(b.less_than(wide, c, signed=signed)) for c in cutoffs]


# linear -------------------------------------------------------------------------------------
# One value, the score shifted into [0, 2^w); the secrets are the K shifted cutoffs, w + 1 bits each.


def _linear_widths(shape: CircuitShape) -> list[int]:
    return [shape.value_bits + 1] * shape.cutoffs


def _linear_build(
    shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets: list[Bits]
) -> list[int]:
    if len(values) != 1:
        raise ModelFormatError(f"a linear circuit takes one value, the shape declares {len(values)}")
    return thermometer(b, values[0], secrets)


# The linear circuit removes its mask itself. With s = w + 1, M = 2^s, the bank's masked slot z and
# the mask r: v >= c iff (z - r) mod M >= 2c (the slot holds 2v plus a carry bit), and for
# T = 2c in [0, M], with A = (r + T) mod M, that is [z >= A] XOR [z >= r] XOR [r + T < M] (the
# interval of z that fails is [r, A), wrapping round when r + T >= M). The garbler computes A_k
# and the wrap bit from r and the cutoffs, so the circuit is K + 1 comparisons of z with words
# the garbler knows, in log depth (CircuitBuilder.greater_equal): about 3 (K + 1) s AND gates in
# depth 1 + log2 s, where the generic unmasking and cutoffs cost (K + 1) s in depth about s. For a
# one-value circuit each AND level costs more than its gates (a round of array operations at
# both parties), so the shallow one is the faster.


def _linear_round_widths(shape: CircuitShape) -> list[int]:
    s = shape.value_bits + 1
    return [s] + [s, 1] * shape.cutoffs


def _linear_round_inputs(
    shape: CircuitShape, masks: list[int], secrets: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    s = shape.value_bits + 1
    modulus = 1 << s
    (r,) = masks
    out = [(r, s)]
    for c, _ in secrets:
        total = r + 2 * c
        out += [(total % modulus, s), (int(total < modulus), 1)]
    return out


def _linear_masked_build(
    shape: CircuitShape, b: CircuitBuilder, masked: list[Bits], inputs: list[Bits]
) -> list[int]:
    if len(masked) != 1:
        raise ModelFormatError(f"a linear circuit takes one value, the shape declares {len(masked)}")
    (z,) = masked
    at_least_r = b.greater_equal(z, inputs[0])
    out = []
    for k in range(shape.cutoffs):
        a, no_wrap = inputs[1 + 2 * k], inputs[2 + 2 * k]
        out.append(b.xor(b.xor(b.greater_equal(z, a), at_least_r), no_wrap[0]))
    return out


LINEAR = Family(
    build=_linear_build,
    secret_widths=_linear_widths,
    masked=MaskedBuild(_linear_round_widths, _linear_round_inputs, _linear_masked_build),
)
register_family("linear", LINEAR)


# trees --------------------------------------------------------------------------------------
# Every tree padded to a complete binary tree of the public depth d, nodes in heap order (children
# of i at 2i + 1 and 2i + 2), leaves left to right. One value per internal node: the comparison of
# the feature it tests with its threshold, done in the (secret) linear stage. When some node applies
# LightGBM's zero rule (shape parameter zero_bit = 1) the value carries two flag bits,
#     value = 4 (key - T + 2^b) + 2 zero + missing      (b = key_bits, b + 3 bits)
# and the circuit applies the node's rules to them: its secrets are the direction a missing value
# takes, whether the node treats a zero as missing (missing_type Zero) and the direction of such a
# zero. Otherwise (zero_bit = 0) the missing rule is folded into the linear stage,
#     value = key - T + 2^b + missing delta              (b + 1 bits)
# with the node's secret delta: a missing value has key 0 and lands on 2^b - T + delta, so
# delta in {0, -2^b} sends it left and {2^b, 0} right (by the sign of T; keys are signed); the
# node has no secrets in the circuit. Either way
# "go left iff key < T" (a library's "key <= K" is T = K + 1) and |key - T| < 2^b, so the top bit
# of the value is [key >= T], or the missing value's direction: go right. Which feature a node
# tests, its threshold and its missing direction stay in the linear stage; the circuit reads one
# bit of each value (three with the zero rule). Then a leaf value per leaf (leaf_bits, two's
# complement), and the K cutoffs on the summed margin (sum_bits + 1 bits).
#
# AND gates per internal node: the borrow chain up to the top bit to unmask its value (b + 1 or
# b + 3), 3 to apply the missing and zero rules when zero_bit = 1, leaf_bits for the mux that
# picks its subtree's value.

TREE_NODE_SECRETS = 3


def tree_sum_bits(shape: CircuitShape) -> int:
    """Width of the summed margin: leaf_bits plus enough carry bits for ``trees`` terms."""
    return shape.param("leaf_bits") + max(1, (shape.param("trees") - 1).bit_length())


def tree_node_secrets(shape: CircuitShape) -> int:
    """Secret garbler bits per internal node: the missing and zero rules, or none when folded."""
    return TREE_NODE_SECRETS if shape.param("zero_bit") else 0


def _tree_widths(shape: CircuitShape) -> list[int]:
    trees, depth = shape.param("trees"), shape.param("depth")
    leaf_bits = shape.param("leaf_bits")
    per_tree = [1] * (tree_node_secrets(shape) * (2**depth - 1)) + [leaf_bits] * 2**depth
    return per_tree * trees + [tree_sum_bits(shape) + 1] * shape.cutoffs


def _tree_build(shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets: list[Bits]) -> list[int]:
    trees, depth = shape.param("trees"), shape.param("depth")
    internal, leaves = 2**depth - 1, 2**depth
    if len(values) != trees * internal:
        raise ModelFormatError(
            f"{trees} trees of depth {depth} take {trees * internal} values, got {len(values)}"
        )
    top = shape.value_bits - 1  # the top bit: [key >= T]
    zero_bit = shape.param("zero_bit")
    if zero_bit not in (0, 1):
        raise ModelFormatError(f"zero_bit is 0 or 1, the shape declares {zero_bit}")
    totals: list[Bits] = []
    s = 0
    for t in range(trees):
        go_left = []
        for i in range(internal):
            v = values[t * internal + i]
            compare = b.not_(v[top])
            if not zero_bit:
                go_left.append(compare)  # the missing rule is in the value already
                continue
            dl_missing, zero_rule, dl_zero = (w[0] for w in secrets[s : s + TREE_NODE_SECRETS])
            s += TREE_NODE_SECRETS
            missing, zero = v[0], v[1]
            # a zero the node treats as missing takes dl_zero; a missing value takes dl_missing
            as_zero = b.and_(zero, zero_rule)
            step = b.xor(compare, b.and_(as_zero, b.xor(compare, dl_zero)))
            go_left.append(b.xor(step, b.and_(missing, b.xor(step, dl_missing))))
        subtree: list[Bits] = list(secrets[s : s + leaves])
        s += leaves
        # bottom-up: the value of node i is its left subtree's if it goes left, else its right's
        level = subtree
        for first in reversed([2**k - 1 for k in range(depth)]):
            width = first + 1
            level = [b.mux(go_left[first + j], level[2 * j], level[2 * j + 1]) for j in range(width)]
        totals.append(level[0])
    margin = b.sum(totals, signed=True)
    return thermometer(b, margin, secrets[s:], signed=True, width=tree_sum_bits(shape) + 1)


TREES = Family(build=_tree_build, secret_widths=_tree_widths)
register_family("trees", TREES)


# mlp ----------------------------------------------------------------------------------------
# A dense network of ``layers`` layers (units_1 ... units_L, units_L = 1), hidden activation relu
# (relu = 1) or identity. The linear stage is layer 1: value j = Z_j + 2^(w-1), Z_j its integer
# pre-activation (two's complement in w = value_bits bits), so flipping the top bit recovers Z_j
# for free and the public offset says nothing about unit j. After hidden layer l its accumulator
# (acc_bits_l bits; acc_bits_1 = w) is shifted right by shift_l bits (free: the low wires are
# dropped, an arithmetic floor shift) and activated: relu ANDs every bit with NOT sign, leaving a
# non-negative word one bit shorter. Layer l >= 2, unit k: sum_j q_kj a_j + c_k mod 2^acc_bits_l
# (exact: the model proves the sum fits), the q_kj weight_bits_l-bit and c_k acc_bits_l-bit secrets.
# The output (layer L, not shifted) ends in K signed comparisons with cutoffs of acc_bits_L + 1 bits.
#
# AND gates: w per first-layer unit to unmask, plus acc - shift - 1 for a relu; per weight of layer
# l >= 2 a multiplication of an activation by a secret weight (about 2 a p for a-bit activations and
# p-bit weights: the weight is a garbler input, so it is not folded), and about acc_bits_l per term
# of a unit's sum; then acc_bits_L + 1 per cutoff.


def mlp_widths(shape: CircuitShape) -> tuple[list[int], list[int], list[int], list[int]]:
    """Per layer 1..L: units, accumulator bits, shift (0 for the output), weight bits (0 for layer 1)."""
    layers = shape.param("layers")
    if layers < 2:
        raise ModelFormatError(f"an mlp circuit needs a hidden layer; the shape has {layers} layer(s)")
    units = [shape.param(f"units_{li}") for li in range(1, layers + 1)]
    acc = [shape.value_bits] + [shape.param(f"acc_bits_{li}") for li in range(2, layers + 1)]
    shifts = [shape.param(f"shift_{li}") for li in range(1, layers)] + [0]
    weights = [0] + [shape.param(f"weight_bits_{li}") for li in range(2, layers + 1)]
    if units[-1] != 1 or min(units) < 1 or min(acc) < 1 or min(weights[1:]) < 1 or min(shifts) < 0:
        raise ModelFormatError("an mlp circuit shape needs positive sizes and one output unit")
    if any(s + 2 > a for s, a in zip(shifts[:-1], acc[:-1], strict=True)):
        raise ModelFormatError("an mlp circuit shape shifts a hidden layer by more than its width allows")
    return units, acc, shifts, weights


def _mlp_secret_widths(shape: CircuitShape) -> list[int]:
    units, acc, _, weights = mlp_widths(shape)
    out: list[int] = []
    for li in range(1, len(units)):
        out += ([weights[li]] * units[li - 1] + [acc[li]]) * units[li]
    return out + [acc[-1] + 1] * shape.cutoffs


def _mlp_build(shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets: list[Bits]) -> list[int]:
    units, acc, shifts, _ = mlp_widths(shape)
    relu = shape.param("relu") == 1
    if len(values) != units[0]:
        raise ModelFormatError(f"an mlp takes {units[0]} values (first-layer units), got {len(values)}")

    def activate(z: Bits, shift: int) -> Bits:
        x = z[shift:]  # floor(z / 2^shift): dropping wires of a two's-complement word
        if not relu:
            return x
        keep = b.not_(x[-1])
        # max(x, 0), with a constant-0 sign bit so that it enters signed products (and folds there)
        return Bits([b.and_(bit, keep) for bit in x[:-1]] + [ZERO])

    def product(x: Bits, q: Bits) -> Bits:
        # the multiplier's rows run over its first operand: the shorter one costs fewer gates
        return b.mul(x, q, signed=True) if len(x) <= len(q) else b.mul(q, x, signed=True)

    def fit(x: Bits, width: int) -> Bits:
        return x[:width] if len(x) >= width else b.sign_extend(x, width)

    acts = [activate(Bits([*v[:-1], b.not_(v[-1])]), shifts[0]) for v in values]
    s = 0
    total = Bits()
    for li in range(1, len(units)):
        sums: list[Bits] = []
        for _ in range(units[li]):
            weights, bias = secrets[s : s + units[li - 1]], secrets[s + units[li - 1]]
            s += units[li - 1] + 1
            # mod 2^acc is exact: the model proves every sum of this layer fits acc bits
            terms = [fit(product(x, q), acc[li]) for x, q in zip(acts, weights, strict=True)]
            sums.append(b.sum([*terms, bias], signed=True)[: acc[li]])
        if li < len(units) - 1:
            acts = [activate(z, shifts[li]) for z in sums]
        else:
            total = sums[0]
    return thermometer(b, total, secrets[s:], signed=True, width=acc[-1] + 1)


MLP = Family(build=_mlp_build, secret_widths=_mlp_secret_widths)
register_family("mlp", MLP)
