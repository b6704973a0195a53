"""A small dense network (MLP) scored blind: its float path, its proven fixed-point path, its circuit inputs.

The network: L dense layers (L >= 2), hidden activation relu or identity, one output unit whose
link is ``logit`` (a binary classifier: probability = sigmoid(output)) or ``identity`` (a
regressor). Inputs are numeric features with public declared ranges, fixed-point encoded by the
public :class:`~blindscore.models.features.FeatureSpec`; a standard scaler is folded into layer 1
by the importer. Probability cutoffs become output cutoffs through logit, in plaintext, once.

Integer path (exactly what the "mlp" circuit family of :mod:`blindscore.models.families`
computes). Scales, all powers of two and all chosen by :meth:`MLPModel._choose` from ``precision``:

* layer 1 (the Paillier linear stage): encoded column i is x_i at scale 2^f_i; its weight is
  ``a_ji = round(W_ji 2^(S1 - f_i))`` so every product lands at scale 2^S1; the bias is
  ``round(b_j 2^S1)`` plus 2^(t1 - 1) (so the truncation below rounds to nearest). Z_j = sum + bias.
* hidden layer l: its accumulator is truncated by t_l bits, T = floor(Z / 2^t_l) (a free wire
  selection), to the activation scale 2^A_l, A_l = (accumulator scale) - t_l; then relu or identity.
* layer l >= 2: weights ``q_kj = round(W_kj 2^P_l)``, bias ``round(b_k 2^(A_(l-1) + P_l))`` (plus
  the rounding half when truncated); accumulator scale A_(l-1) + P_l. The output layer is not
  truncated: Y at scale 2^R, R = A_(L-1) + P_L, banded by ``Y >= ceil(c 2^R)`` (exactly
  ``Y 2^-R >= c``).

Error bound (:attr:`MLPModel.max_abs_error`), by interval arithmetic over the declared ranges. Let
D be a bound on |integer value * 2^-scale - float64 value| of a unit. Layer 1:
D_j = sum_i (|a_ji 2^(f_i - S1) - W_ji| X_i + |W_ji| d_i) + |round(b_j 2^S1) 2^-S1 - b_j| + 2^(-A_1 - 1)
+ F_j, with X_i the largest |encoded x_i| 2^-f_i, d_i the encoding error (0 for integer features,
else 2^-(f_i + 1)), 2^(-A-1) the rounded truncation (absent when t = 0) and F_j the float64
rounding of the reference, (n + 2) 2^-52 (sum |W| |x| + |b|). Activations are 1-Lipschitz, so D
passes through them. Layer l >= 2: D_k = sum_j (|q_kj 2^-P - W_kj| M_j + |W_kj| D_j) + (bias
rounding) + (truncation) + F_k, where M_j bounds |integer activation j| 2^-A over the declared
ranges (exact integer intervals). The output's D is the bound: the blind band equals
:meth:`MLPModel.band` for every row whose float output is farther than it from every cutoff.

Widths (public, in the circuit shape): the integer intervals give every accumulator's two's
complement width; arithmetic is mod 2^width, exact because every value provably fits.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models._json import (
    _as_real,
    _check_format,
    _check_keys,
    _get_int,
    _get_list,
    _get_real,
    _get_str,
)
from blindscore.models.contract import PrivateModel, register_model_type
from blindscore.models.features import FeatureSpec, NumericFeature
from blindscore.models.policy import BandPolicy, logit, sigmoid
from blindscore.protocol.circuit_band import CircuitShape, LinearOutput, LinearStage
from blindscore.protocol.slots import MAX_VALUE_BITS

__all__ = ["ACTIVATIONS", "MLP_FORMAT_VERSION", "MLP_KIND", "MLPModel"]

MLP_KIND = "blindscore-mlp"
MLP_FORMAT_VERSION = 1
ACTIVATIONS = ("relu", "identity")
LINKS = ("logit", "identity")
#: Sizes the blind circuit is meant for; beyond them the garbled circuit grows past what a
#: per-application protocol should send.
MAX_LAYERS = 6
MAX_UNITS = 256
DEFAULT_PRECISION = 1e-3
MIN_PRECISION = 1e-9
#: Fractional bits a scale may reach before the precision asked for is judged unreachable.
MAX_SCALE_BITS = 96
#: The time of one weight bit in the Paillier first layer, in AND gates (see _and_estimate).
PAILLIER_BIT_ANDS = 4
#: Float64 unit roundoff, doubled: covers the (n + 2) u / (1 - (n + 2) u) of a float dot product.
_ROUND = 2.0**-52
#: Headroom for the float arithmetic of the bound itself (a few hundred roundings of 2^-53).
_SLACK = 1.0 + 2.0**-40

_F = npt.NDArray[np.float64]


def _signed_bits(lo: int, hi: int) -> int:
    """The smallest two's-complement width holding every integer in [lo, hi]."""
    return max((~lo).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def _twos(value: int, width: int) -> int:
    return value & ((1 << width) - 1)


@dataclass(frozen=True)
class _Plan:
    """The integer network for one choice of scales, with its widths and proven error."""

    first_frac_bits: int
    act_frac_bits: tuple[int, ...]  # A_1 .. A_(L-1)
    weight_frac_bits: tuple[int, ...]  # P_2 .. P_L
    shifts: tuple[int, ...]  # t_1 .. t_(L-1)
    first: tuple[tuple[int, ...], ...]  # a_ji, per unit j
    weights: tuple[tuple[tuple[int, ...], ...], ...]  # q_kj of layers 2 .. L
    biases: tuple[tuple[int, ...], ...]  # layers 1 .. L, truncation halves included
    acc_bits: tuple[int, ...]  # layers 1 .. L
    weight_bits: tuple[int, ...]  # layers 2 .. L
    output_bounds: tuple[int, int]
    error: float

    @property
    def output_frac_bits(self) -> int:
        return self.act_frac_bits[-1] + self.weight_frac_bits[-1]


@register_model_type
class MLPModel(PrivateModel):
    """A dense network over numeric features, with a link and a band policy (the bureau's artifact).

    ``layers`` is a sequence of ``(weights, biases)``: ``weights[k][j]`` is unit k's weight on
    input j of that layer (the transpose of scikit-learn's ``coefs_``); the last layer has one
    unit. ``activation`` applies to every hidden layer. ``precision`` bounds the fixed-point error
    (:attr:`max_abs_error` <= precision) and sets every scale and width.
    """

    type_name = MLP_KIND

    def __init__(
        self,
        name: str,
        spec: FeatureSpec,
        layers: Sequence[tuple[Sequence[Sequence[float]], Sequence[float]]],
        *,
        activation: Literal["relu", "identity"],
        link: Literal["logit", "identity"],
        policy: BandPolicy,
        precision: float = DEFAULT_PRECISION,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelFormatError("a model needs a non-empty name")
        if not isinstance(spec, FeatureSpec):
            raise ModelFormatError("spec must be a FeatureSpec")
        others = [f.name for f in spec.features if not isinstance(f, NumericFeature)]
        if others:
            raise ModelFormatError(
                f"an MLP takes numeric features with declared ranges only; {others[0]!r} is not numeric"
            )
        if activation not in ACTIVATIONS:
            raise ModelFormatError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        if link not in LINKS:
            raise ModelFormatError(f"link must be one of {list(LINKS)}, got {link!r}")
        if not isinstance(policy, BandPolicy):
            raise ModelFormatError("policy must be a BandPolicy")
        if policy.output == "probability" and link != "logit":
            raise ModelFormatError("a policy on probabilities needs link 'logit' (a binary classifier)")
        if not (
            isinstance(precision, int | float)
            and not isinstance(precision, bool)
            and math.isfinite(precision)
            and precision >= MIN_PRECISION
        ):
            raise ModelFormatError(f"precision must be a finite number >= {MIN_PRECISION}, got {precision!r}")
        self.name = name
        self.spec = spec
        self.activation: Literal["relu", "identity"] = activation
        self.link: Literal["logit", "identity"] = link
        self.policy = policy
        self.precision = float(precision)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._w, self._b = self._check_layers(layers, spec.encoded_width)
        if policy.output == "probability":
            self.output_cutoffs = tuple(logit(c) for c in policy.cutoffs)
        else:
            self.output_cutoffs = tuple(policy.cutoffs)
        feats = [f for f in spec.features if isinstance(f, NumericFeature)]
        self._lo = np.array([f.lo for f in feats])
        self._hi = np.array([f.hi for f in feats])
        self._frac = [f.frac_bits for f in feats]
        self._enc = [(f.codec.enc_lo, f.codec.enc_hi) for f in feats]
        self._xmax = np.array(
            [max(abs(lo), abs(hi)) * 2.0**-f for (lo, hi), f in zip(self._enc, self._frac, strict=True)]
        )
        self._delta = np.array([0.0 if f.integer else 2.0 ** -(f.frac_bits + 1) for f in feats])
        self._plan = self._choose()
        r = self._plan.output_frac_bits
        #: ceil(c 2^R), exactly: Y >= this iff Y 2^-R >= c.
        self.encoded_cutoffs = tuple(math.ceil(Fraction(c) * 2**r) for c in self.output_cutoffs)

    @staticmethod
    def _check_layers(
        layers: Sequence[tuple[Sequence[Sequence[float]], Sequence[float]]], inputs: int
    ) -> tuple[list[_F], list[_F]]:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise ModelFormatError("layers must be a sequence of (weights, biases)")
        if not 2 <= len(layers) <= MAX_LAYERS:
            raise ModelFormatError(
                f"an MLP needs 2..{MAX_LAYERS} dense layers (at least one hidden), got {len(layers)}"
            )
        ws: list[_F] = []
        bs: list[_F] = []
        fan_in = inputs
        for k, layer in enumerate(layers):
            if not isinstance(layer, Sequence) or len(layer) != 2:
                raise ModelFormatError(f"layer {k}: expected (weights, biases)")
            try:
                w = np.array(layer[0], dtype=np.float64)
                b = np.array(layer[1], dtype=np.float64)
            except (TypeError, ValueError):
                raise ModelFormatError(f"layer {k}: weights and biases must be numbers") from None
            if w.ndim != 2 or b.ndim != 1 or w.shape != (len(b), fan_in):
                raise ModelFormatError(
                    f"layer {k}: weights must be units x {fan_in} and biases one per unit, got "
                    f"{w.shape} and {b.shape}"
                )
            if not 1 <= len(b) <= MAX_UNITS:
                raise ModelFormatError(f"layer {k}: 1..{MAX_UNITS} units, got {len(b)}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ModelFormatError(f"layer {k}: weights and biases must be finite")
            w.flags.writeable = False
            b.flags.writeable = False
            ws.append(w)
            bs.append(b)
            fan_in = len(b)
        if fan_in != 1:
            raise ModelFormatError(f"the output layer must have one unit, got {fan_in}")
        return ws, bs

    # -- sizes ------------------------------------------------------------------------------

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Inputs, then the units of every layer (the last is 1): public."""
        return (self.spec.encoded_width, *(len(b) for b in self._b))

    @property
    def n_features(self) -> int:
        return self.spec.encoded_width

    @property
    def layers(self) -> list[tuple[list[list[float]], list[float]]]:
        """The float weights and biases, per layer (secret)."""
        return [(w.tolist(), b.tolist()) for w, b in zip(self._w, self._b, strict=True)]

    # -- plaintext --------------------------------------------------------------------------

    def _row(self, row: Mapping[str, object] | Sequence[object]) -> Mapping[str, object]:
        if isinstance(row, Mapping):
            return row
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise InvalidInputError("an application row must be a mapping or a sequence of values")
        names = self.spec.input_names
        if len(row) != len(names):
            raise InvalidInputError(f"a row has {len(names)} values, got {len(row)}")
        return dict(zip(names, row, strict=True))

    def encode_row(self, row: Mapping[str, object] | Sequence[object]) -> list[int]:
        """The public fixed-point encoding (platform side): one column per feature."""
        return self.spec.encode_row(self._row(row))

    # -- the decision value (what the cutoffs compare): the output before the link -----------

    def decision_value(self, row: Mapping[str, object]) -> float:
        return self.output(row)

    @property
    def decision_cutoffs(self) -> list[float]:
        return list(self.output_cutoffs)

    def encoded_decision_value(self, encoded_row: Sequence[int]) -> float:
        return math.ldexp(self.encoded_output(encoded_row), -self.output_frac_bits)

    def output(self, row: Mapping[str, object] | Sequence[object]) -> float:
        """The float64 output before the link (log-odds for a classifier)."""
        h = np.array(self.spec.transform_row(self._row(row)), dtype=np.float64)
        for k, (w, b) in enumerate(zip(self._w, self._b, strict=True)):
            h = w @ h + b
            if k < len(self._w) - 1 and self.activation == "relu":
                h = np.maximum(h, 0.0)
        return float(h[0])

    def predict(self, row: Mapping[str, object] | Sequence[object]) -> float:
        """sigmoid(output) for link logit (a probability), else the output."""
        out = self.output(row)
        return sigmoid(out) if self.link == "logit" else out

    def band_of_output(self, output: float) -> int:
        """The number of output cutoffs at or below ``output`` (probability cutoffs through logit)."""
        return bisect.bisect_right(self.output_cutoffs, output)

    def band(self, row: Mapping[str, object] | Sequence[object]) -> int:
        """The band of the float output."""
        return self.band_of_output(self.output(row))

    # -- fixed point --------------------------------------------------------------------------

    def _choose(self) -> _Plan:
        """The smallest scales (greedily) whose proven error is at most ``precision``.

        Knobs: S1, A_1..A_(L-1), P_2..P_L. Each step raises by one bit the knob (or pair of knobs)
        that buys the most halvings of the bound per AND gate the circuit gains (a rough count,
        :meth:`_and_estimate`); every bit roughly halves one error term, so the terms end up
        balanced and the widths no larger than the bound needs. Greedy, so not optimal.
        """
        hidden = len(self._w) - 1
        knobs = [0] * (1 + 2 * hidden)
        # One knob, or a hidden layer's activation scale with the scale it is truncated from (S1
        # for layer 1, P_l after): an activation scale already equal to that scale (no
        # truncation) only improves when both rise.
        moves: list[tuple[int, ...]] = [(i,) for i in range(len(knobs))]
        moves += [(0, 1)] + [(1 + layer, 1 + hidden + layer - 1) for layer in range(1, hidden)]
        plan = self._plan_for(knobs, generic=True)
        while plan.error > self.precision:
            if max(knobs) >= MAX_SCALE_BITS:
                raise ModelFormatError(
                    f"model {self.name!r}: precision {self.precision:g} is out of reach (bound "
                    f"{plan.error:.3g}); the feature encoding error alone may exceed it: raise the "
                    "features' frac_bits or the precision"
                )
            best: tuple[float, list[int], _Plan] | None = None
            for move in moves:
                trial = knobs.copy()
                for i in move:
                    trial[i] += 1
                p = self._plan_for(trial, generic=True)
                if p.error < plan.error:
                    # error halvings bought per AND gate added
                    gain = math.log(plan.error / p.error) / max(
                        1, self._and_estimate(p) - self._and_estimate(plan)
                    )
                    if best is None or gain > best[0]:
                        best = (gain, trial, p)
            if best is not None:
                knobs, plan = best[1], best[2]
            else:
                # One bit alone may not help (a finer layer-1 scale adds a truncation until the
                # activation scale follows it): raise every scale by one bit.
                knobs = [k + 1 for k in knobs]
                plan = self._plan_for(knobs, generic=True)
        # The actual roundings are at most the generic half units: this bound is no larger.
        plan = self._plan_for(knobs)
        for width in plan.acc_bits:
            if width > MAX_VALUE_BITS:
                raise ModelFormatError(
                    f"model {self.name!r}: an accumulator needs {width} bits (more than {MAX_VALUE_BITS}); "
                    "narrow the declared ranges or raise the precision"
                )
        return plan

    def _and_estimate(self, plan: _Plan) -> int:
        """The cost the choice of scales minimises, in AND gates: the circuit's (roughly, the
        family's counts) plus the Paillier first layer, whose exponent bits cost time too.

        Measured here (2048-bit key, 50 -> 32): a weight bit in the encrypted dot products costs
        about 2.4 us, an AND gate about 0.55 us to garble and evaluate (and 32 bytes): a weight bit
        counts as PAILLIER_BIT_ANDS gates.
        """
        sizes = self.layer_sizes
        relu = self.activation == "relu"
        total = PAILLIER_BIT_ANDS * sum(abs(a).bit_length() for row in plan.first for a in row)
        total += sizes[1] * plan.acc_bits[0]
        for layer in range(1, len(sizes) - 1):
            act = plan.acc_bits[layer - 1] - plan.shifts[layer - 1] - int(relu)
            p, acc = plan.weight_bits[layer - 1], plan.acc_bits[layer]
            total += sizes[layer] * act * int(relu)
            total += sizes[layer + 1] * sizes[layer] * ((2 * min(act, p) - 1) * max(act, p) + acc)
        return total + len(self.policy.cutoffs) * (plan.acc_bits[-1] + 1)

    def _plan_for(self, knobs: Sequence[int], *, generic: bool = False) -> _Plan:
        """The integer network for the knobs (S1, A_1..A_(L-1), P_2..P_L) and its error bound.

        ``generic`` bounds every rounding by half a unit instead of the actual rounding error:
        a looser bound, but one that falls whenever a scale rises (the actual error of a weight
        need not: 0.75 rounds exactly at 2 bits and not at 1), which the greedy search needs.
        """
        hidden = len(self._w) - 1
        s1 = knobs[0]
        wanted_a, p_bits = knobs[1 : 1 + hidden], tuple(knobs[1 + hidden :])
        relu = self.activation == "relu"
        # layer 1 -----------------------------------------------------------------------------
        w1, b1 = self._w[0], self._b[0]
        a_scale = min(wanted_a[0], s1)
        acts_frac = [a_scale]
        shift = s1 - a_scale
        shifts = [shift]
        half = 1 << (shift - 1) if shift else 0
        exps = np.array([s1 - f for f in self._frac], dtype=np.int64)
        a_f = np.rint(np.ldexp(w1, exps))
        first = tuple(tuple(int(v) for v in row) for row in a_f)
        wref = np.ldexp(a_f, -exps)
        bias_int = [round(math.ldexp(float(b), s1)) for b in b1]
        err = (
            (np.ldexp(np.ones_like(w1), -exps - 1) if generic else np.abs(wref - w1)) @ self._xmax
            + np.abs(w1) @ self._delta
            + (
                math.ldexp(1.0, -s1 - 1)
                if generic
                else np.abs(np.ldexp(np.array(bias_int, dtype=np.float64), -s1) - b1)
            )
            + (2.0 ** -(a_scale + 1) if shift else 0.0)
            + (len(self._frac) + 2)
            * _ROUND
            * (np.abs(w1) @ np.maximum(np.abs(self._lo), np.abs(self._hi)) + np.abs(b1))
        )
        biases = [tuple(b + half for b in bias_int)]
        lows, highs = [], []
        for j, row in enumerate(first):
            lo = hi = biases[0][j]
            for a, (elo, ehi) in zip(row, self._enc, strict=True):
                lo += min(a * elo, a * ehi)
                hi += max(a * elo, a * ehi)
            lows.append(lo)
            highs.append(hi)
        acc_bits = [max(max(_signed_bits(lo, hi) for lo, hi in zip(lows, highs, strict=True)), shift + 2)]
        # later layers --------------------------------------------------------------------------
        weights: list[tuple[tuple[int, ...], ...]] = []
        weight_bits: list[int] = []
        for layer in range(1, len(self._w)):
            # the activations of the previous layer: integer intervals and their bound M
            tlo = [lo >> shift for lo in lows]
            thi = [hi >> shift for hi in highs]
            if relu:
                tlo, thi = [max(v, 0) for v in tlo], [max(v, 0) for v in thi]
            a_prev = acts_frac[-1]
            m = np.array(
                [math.ldexp(max(abs(lo), abs(hi)), -a_prev) for lo, hi in zip(tlo, thi, strict=True)]
            )
            w, b = self._w[layer], self._b[layer]
            p = p_bits[layer - 1]
            q_f = np.rint(np.ldexp(w, p))
            q = tuple(tuple(int(v) for v in row) for row in q_f)
            scale = a_prev + p
            last = layer == len(self._w) - 1
            if last:
                shift = 0
            else:
                a_scale = min(wanted_a[layer], scale)
                shift = scale - a_scale
                acts_frac.append(a_scale)
                shifts.append(shift)
            half = 1 << (shift - 1) if shift else 0
            c_int = [round(math.ldexp(float(v), scale)) for v in b]
            err = (
                (np.full_like(w, math.ldexp(1.0, -p - 1)) if generic else np.abs(np.ldexp(q_f, -p) - w)) @ m
                + np.abs(w) @ err
                + (
                    math.ldexp(1.0, -scale - 1)
                    if generic
                    else np.abs(np.ldexp(np.array(c_int, dtype=np.float64), -scale) - b)
                )
                + (2.0 ** -(a_scale + 1) if shift else 0.0)
                + (w.shape[1] + 2) * _ROUND * (np.abs(w) @ (m + err) + np.abs(b))
            )
            biases.append(tuple(c + half for c in c_int))
            lows, highs = [], []
            for k, row in enumerate(q):
                lo = hi = biases[-1][k]
                for qv, vlo, vhi in zip(row, tlo, thi, strict=True):
                    lo += min(qv * vlo, qv * vhi)
                    hi += max(qv * vlo, qv * vhi)
                lows.append(lo)
                highs.append(hi)
            width = max(_signed_bits(lo, hi) for lo, hi in zip(lows, highs, strict=True))
            acc_bits.append(width if last else max(width, shift + 2))
            weights.append(q)
            weight_bits.append(max(_signed_bits(min(r), max(r)) for r in q))
        return _Plan(
            first_frac_bits=s1,
            act_frac_bits=tuple(acts_frac),
            weight_frac_bits=p_bits,
            shifts=tuple(shifts),
            first=first,
            weights=tuple(weights),
            biases=tuple(biases),
            acc_bits=tuple(acc_bits),
            weight_bits=tuple(weight_bits),
            output_bounds=(lows[0], highs[0]),
            error=float(err[0]) * _SLACK,
        )

    @property
    def max_abs_error(self) -> float:
        """Proven bound on |encoded_output 2^-R - output(row)| over the declared ranges (module doc)."""
        return self._plan.error

    @property
    def first_frac_bits(self) -> int:
        """S1: the scale of the first layer's accumulators (the linear stage)."""
        return self._plan.first_frac_bits

    @property
    def act_frac_bits(self) -> tuple[int, ...]:
        """A_1 .. A_(L-1): the scale of each hidden layer's activations."""
        return self._plan.act_frac_bits

    @property
    def weight_frac_bits(self) -> tuple[int, ...]:
        """P_2 .. P_L: the scale of the weights of layers 2 .. L."""
        return self._plan.weight_frac_bits

    @property
    def shifts(self) -> tuple[int, ...]:
        """t_1 .. t_(L-1): the truncation after each hidden layer."""
        return self._plan.shifts

    @property
    def output_frac_bits(self) -> int:
        """R = A_(L-1) + P_L: the scale of the integer output."""
        return self._plan.output_frac_bits

    @property
    def value_bits(self) -> int:
        """w: the width of every first-layer value handed to the circuit."""
        return self._plan.acc_bits[0]

    def encoded_output(self, encoded_row: Sequence[int]) -> int:
        """The integer output Y (scale 2^R), computed exactly as the circuit does."""
        x = self.spec.check_encoded_row(encoded_row)
        plan = self._plan
        relu = self.activation == "relu"
        acc = [
            sum(a * v for a, v in zip(row, x, strict=True)) + c
            for row, c in zip(plan.first, plan.biases[0], strict=True)
        ]
        for layer, q in enumerate(plan.weights, start=1):
            acts = [z >> plan.shifts[layer - 1] for z in acc]
            if relu:
                acts = [max(v, 0) for v in acts]
            acc = [
                sum(a * v for a, v in zip(row, acts, strict=True)) + c
                for row, c in zip(q, plan.biases[layer], strict=True)
            ]
        return acc[0]

    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        """#{k: Y >= encoded_cutoffs[k]}: the band the circuit outputs."""
        y = self.encoded_output(encoded_row)
        return sum(y >= c for c in self.encoded_cutoffs)

    # -- the circuit's inputs (bureau) --------------------------------------------------------

    def circuit_shape(self) -> CircuitShape:
        """Family "mlp": layer widths and bit widths, nothing else (see the family)."""
        plan = self._plan
        sizes = self.layer_sizes
        layers = len(sizes) - 1
        params: list[tuple[str, int]] = [
            ("layers", layers),
            ("relu", int(self.activation == "relu")),
            ("inputs", sizes[0]),
        ]
        params += [(f"units_{k}", sizes[k]) for k in range(1, layers + 1)]
        params += [(f"shift_{k}", plan.shifts[k - 1]) for k in range(1, layers)]
        params += [(f"acc_bits_{k}", plan.acc_bits[k - 1]) for k in range(2, layers + 1)]
        params += [(f"weight_bits_{k}", plan.weight_bits[k - 2]) for k in range(2, layers + 1)]
        return CircuitShape(
            "mlp",
            values=sizes[1],
            value_bits=plan.acc_bits[0],
            cutoffs=len(self.encoded_cutoffs),
            params=tuple(params),
        )

    def linear_stage(self) -> LinearStage:
        return self._linear_stage

    @functools.cached_property
    def _linear_stage(self) -> LinearStage:
        # Fixed by the model: built once, not for every application.
        """Layer 1 on the encrypted columns, offset by the public 2^(w-1) into [0, 2^w)."""
        plan = self._plan
        offset = 1 << (plan.acc_bits[0] - 1)
        outputs = tuple(
            LinearOutput(tuple((i, a) for i, a in enumerate(row) if a), c + offset)
            for row, c in zip(plan.first, plan.biases[0], strict=True)
        )
        return LinearStage(outputs, plan.acc_bits[0])

    def garbler_inputs(self) -> list[tuple[int, int]]:
        return list(self._garbler_inputs)

    @functools.cached_property
    def _garbler_inputs(self) -> tuple[tuple[int, int], ...]:
        """Per layer >= 2 and unit: its weights then its bias; then the K cutoffs (two's complement)."""
        plan = self._plan
        out: list[tuple[int, int]] = []
        for layer, q in enumerate(plan.weights, start=1):
            p, acc = plan.weight_bits[layer - 1], plan.acc_bits[layer]
            for row, c in zip(q, plan.biases[layer], strict=True):
                out += [(_twos(v, p), p) for v in row]
                out.append((_twos(c, acc), acc))
        width = plan.acc_bits[-1] + 1
        top = 1 << (width - 1)
        # A cutoff beyond every output keeps its meaning when clamped to the representable range.
        out += [(_twos(min(max(c, -top), top - 1), width), width) for c in self.encoded_cutoffs]
        return tuple(out)

    # -- persistence and display ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, lossless form (the bureau's artifact: it holds the weights)."""
        plan = self._plan
        return {
            "format": MLP_FORMAT_VERSION,
            "kind": MLP_KIND,
            "name": self.name,
            "features": self.spec.to_dict(),
            "activation": self.activation,
            "link": self.link,
            "precision": self.precision,
            "policy": self.policy.to_dict(),
            "metadata": self.metadata,
            "layers": [{"weights": w, "biases": b} for w, b in self.layers],
            "encoded": {
                "first_frac_bits": plan.first_frac_bits,
                "act_frac_bits": list(plan.act_frac_bits),
                "weight_frac_bits": list(plan.weight_frac_bits),
                "cutoffs": list(self.encoded_cutoffs),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MLPModel:
        """Rebuild from :meth:`to_dict`; unknown or missing fields, wrong types and a stored
        ``encoded`` section that differs from the recomputed one raise :class:`ModelFormatError`."""
        where = "mlp model"
        keys = {"format", "kind", "name", "features", "activation", "link", "precision", "policy"}
        keys |= {"metadata", "layers"}
        _check_keys(d, where, keys, frozenset({"encoded"}))
        _check_format(d, MLP_KIND, where, MLP_FORMAT_VERSION)
        activation, link = _get_str(d, "activation", where), _get_str(d, "link", where)
        if activation not in ACTIVATIONS or link not in LINKS:
            raise ModelFormatError(
                f"{where}: activation must be one of {list(ACTIVATIONS)}, link one of {list(LINKS)}"
            )
        spec_d, policy_d, metadata = d["features"], d["policy"], d["metadata"]
        if (
            not isinstance(spec_d, Mapping)
            or not isinstance(policy_d, Mapping)
            or not isinstance(metadata, dict)
        ):
            raise ModelFormatError(f"{where}: 'features', 'policy' and 'metadata' must be objects")
        layers = []
        for k, layer in enumerate(_get_list(d, "layers", where)):
            lw = f"{where}: layers[{k}]"
            _check_keys(layer, lw, {"weights", "biases"})
            rows = _get_list(layer, "weights", lw)
            if not all(isinstance(r, list) for r in rows):
                raise ModelFormatError(f"{lw}: 'weights' must be a list of lists of numbers")
            w = [[_as_real(v, f"{lw}: weight") for v in r] for r in rows]
            b = [_as_real(v, f"{lw}: bias") for v in _get_list(layer, "biases", lw)]
            layers.append((w, b))
        model = cls(
            _get_str(d, "name", where),
            FeatureSpec.from_dict(spec_d),
            layers,
            activation="relu" if activation == "relu" else "identity",
            link="logit" if link == "logit" else "identity",
            policy=BandPolicy.from_dict(policy_d, f"{where}: policy"),
            precision=_get_real(d, "precision", where),
            metadata=metadata,
        )
        if "encoded" in d:
            enc = d["encoded"]
            ew = f"{where}: encoded"
            _check_keys(enc, ew, {"first_frac_bits", "act_frac_bits", "weight_frac_bits", "cutoffs"})
            stored = (
                _get_int(enc, "first_frac_bits", ew),
                _get_list(enc, "act_frac_bits", ew),
                _get_list(enc, "weight_frac_bits", ew),
                _get_list(enc, "cutoffs", ew),
            )
            plan = model._plan
            if stored != (
                plan.first_frac_bits,
                list(plan.act_frac_bits),
                list(plan.weight_frac_bits),
                list(model.encoded_cutoffs),
            ):
                raise ModelFormatError(
                    f"{where} {model.name!r}: the stored integer parameters differ from those recomputed; "
                    "the file was edited or written by an incompatible version"
                )
        return model

    @classmethod
    def example(cls) -> MLPModel:
        """Three features, four relu units, a logistic output: for the conformance tests."""
        spec = FeatureSpec(
            (
                NumericFeature("income", 0, 20000, integer=True),
                NumericFeature("age", 18, 100, integer=True),
                NumericFeature("utilisation", 0.0, 1.5, frac_bits=16),
            )
        )
        w1 = [
            [1.5e-4, -0.02, 0.8],
            [-2.0e-4, 0.03, 0.5],
            [0.5e-4, 0.01, -1.2],
            [-1.0e-4, -0.015, 0.3],
        ]
        layers = [(w1, [0.2, -0.4, 0.1, 0.6]), ([[-0.9, 0.7, -0.5, 1.1]], [-1.0])]
        return cls(
            "example-mlp",
            spec,
            layers,
            activation="relu",
            link="logit",
            policy=BandPolicy((0.1, 0.3, 0.6)),
        )

    def describe(self) -> str:
        """A multi-line summary: sizes, scales, widths, the band policy; never weights."""
        plan = self._plan
        sizes = " -> ".join(str(n) for n in self.layer_sizes)
        lines = [
            f"model {self.name} (dense network)",
            f"  layers {sizes}, hidden activation {self.activation}, link {self.link}, "
            f"bands on {self.policy.output}",
            f"  scales: layer 1 2^{plan.first_frac_bits}, activations 2^{list(plan.act_frac_bits)}, "
            f"weights 2^{list(plan.weight_frac_bits)}, output 2^{plan.output_frac_bits}",
            f"  widths: accumulators {list(plan.acc_bits)} bits, weights {list(plan.weight_bits)} bits, "
            f"shifts {list(plan.shifts)}",
            f"  max error {self.max_abs_error:.3g} (precision {self.precision:g})",
        ]
        lines += self.policy.describe(self.policy.output)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"MLPModel(name={self.name!r}, layers={list(self.layer_sizes)}, activation={self.activation!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MLPModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
