"""A tree ensemble in the garbled-circuit pipeline: its public encoding, linear stage and secrets.

The circuit is the "trees" family of :mod:`blindscore.models.families`; this module supplies the
model's halves of it from a :class:`~blindscore.models.trees.TreeEnsemble`:

* **public encoding** (platform): three columns per feature — its order key (:func:`float_key` of
  the value in the ensemble's number domain), its missing bit, and its zero bit, set when the key
  lies in LightGBM's zero region [-key(kZero), key(kZero)] (a missing value is key 0, so in it too);
* **linear stage** (bureau, secret): for internal node i of padded tree t, the columns of the
  feature it tests, ``value = (key + 2^(b-1)) << 2 | zero << 1 | missing`` (b key bits), so which
  feature a node tests is hidden in the Paillier stage and the circuit sees one value per node;
* **garbler inputs** (bureau, secret): per node its threshold as "go left iff key + 2^(b-1) <
  threshold" (the ensemble's "key <= K" is K + 1), the direction of a missing value, whether a zero
  counts as missing and its direction; per leaf its fixed-point value; the K margin cutoffs.

Per node, a missing value goes the library's way for the node's missing kind: "nan" and "zero" the
default direction; "none" as the value 0 would (the bureau evaluates [0 <= K] itself). A node of
kind "zero" sends a value in the zero region the default direction too. Together this is exactly
:meth:`TreeEnsemble.encoded_leaves`, which the tests hold the circuit to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blindscore.models.families import tree_sum_bits
from blindscore.models.features import FeatureSpec, FloatKeyFeature
from blindscore.models.trees import TreeEnsemble
from blindscore.protocol.circuit_band import CircuitShape, LinearOutput, LinearStage

#: Encoded columns per feature: key, missing bit, zero bit.
COLUMNS_PER_FEATURE = 3


def _twos(value: int, width: int) -> int:
    """``value`` as the unsigned bit pattern of a ``width``-bit two's-complement integer."""
    return value & ((1 << width) - 1)


class TreeCircuit:
    """The circuit form of one :class:`TreeEnsemble` (the bureau's: it holds the secrets)."""

    def __init__(self, ensemble: TreeEnsemble) -> None:
        self.ensemble = ensemble
        self._offset = 1 << (ensemble.key_bits - 1)
        self._shape = CircuitShape(
            "trees",
            values=ensemble.n_trees * (2**ensemble.depth - 1),
            value_bits=ensemble.key_bits + 2,
            cutoffs=len(ensemble.encoded_cutoffs),
            params=(
                ("depth", ensemble.depth),
                ("leaf_bits", ensemble.leaf_bits),
                ("trees", ensemble.n_trees),
            ),
        )

    # -- platform ---------------------------------------------------------------------------

    @property
    def spec(self) -> FeatureSpec:
        """The public feature spec the platform encodes with: one float-key feature per input."""
        e = self.ensemble
        return FeatureSpec(tuple(FloatKeyFeature(n, e.domain, e.snap_zero) for n in e.feature_names))

    def encode_row(self, row: Mapping[str, object] | Sequence[object]) -> list[int]:
        """Key, missing bit and zero bit of every feature (the spec's encoding; a sequence is read
        in feature order)."""
        if not isinstance(row, Mapping):
            row = dict(zip(self.ensemble.feature_names, row, strict=True))
        return self.spec.encode_row(row)

    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        """The band the circuit yields for an encoded row (the ensemble's own integer path)."""
        pairs = [x for f in range(self.ensemble.n_features) for x in encoded_row[3 * f : 3 * f + 2]]
        return self.ensemble.band_from_encoded(pairs)

    # -- bureau: the circuit's inputs --------------------------------------------------------

    @property
    def _internal(self) -> int:
        return 2**self.ensemble.depth - 1

    def circuit_shape(self) -> CircuitShape:
        return self._shape

    def linear_stage(self) -> LinearStage:
        outputs = []
        for tree in self.ensemble.padded_trees():
            for i in range(self._internal):
                col = COLUMNS_PER_FEATURE * tree["feature"][i]
                terms = ((col, 4), (col + 1, 1), (col + 2, 2))
                outputs.append(LinearOutput(terms, self._offset << 2))
        return LinearStage(tuple(outputs), self.ensemble.key_bits + 2)

    def garbler_inputs(self) -> list[tuple[int, int]]:
        e = self.ensemble
        b = e.key_bits
        shape = self._shape
        leaf_bits = shape.param("leaf_bits")
        out: list[tuple[int, int]] = []
        for tree in e.padded_trees():
            for i in range(self._internal):
                key, kind, default = tree["key"][i], tree["missing"][i], int(tree["default_left"][i])
                missing_left = int(key >= 0) if kind == "none" else default
                out += [
                    (key + 1 + self._offset, b + 1),
                    (missing_left, 1),
                    (int(kind == "zero"), 1),
                    (default, 1),
                ]
            out += [(_twos(leaf, leaf_bits), leaf_bits) for leaf in tree["leaf"]]
        width = tree_sum_bits(shape) + 1
        top = 1 << (width - 1)
        out += [(_twos(min(max(c, -top), top - 1), width), width) for c in e.encoded_cutoffs]
        return out
