"""The privately evaluable linear scoring model: feature spec, band policy and integer parameters.

Roles: a :class:`FeatureSpec` is public and runs at the platform (validate, one-hot, fixed-point
encode); a :class:`LinearModel` is the bureau's artifact and holds the secret weights; a
:class:`BandPolicy` says which score bands the bank may learn.

Integer arithmetic of the encrypted path. Encoded column i carries its feature at scale 2^e_i
(e_i = the feature's ``frac_bits``; one-hot columns are exact 0/1 with e_i = 0) and its weight at
scale 2^(S - e_i), so every product and the intercept land at the common score scale 2^S::

    s_enc = B + sum_i W_i X_i,   W_i = round(w_i 2^(S - e_i)),   B = round(b 2^S)

Cutoffs in score units are scaled by 2^S and rounded up, so ``s_enc >= c_enc`` holds exactly
when ``s_enc / 2^S >= c``. The band protocol (:mod:`blindscore.protocol.comparison`) compares the score
truncated by T bits, i.e. to one ulp of 2^(T-S) in score units, with a random carry: it decides
exactly whenever ``|s_enc - c_enc| >= 2^T``. The precision budget is split between the two
errors (see :meth:`LinearModel._scales`): the computational error (feature and weight rounding)
gets at most half, and the truncation ulp, a power of two, the rest. Fewer significant bits in
the comparison mean a shorter comparison: l shrinks by one for every bit of T. Every bound is
computed from the public declared ranges, which the platform enforces when it encodes.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from blindscore._files import write_json
from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models._json import _as_real, _check_format, _check_keys, _get_real, _get_str, read_object
from blindscore.models.contract import AdditiveModel, register_model_type
from blindscore.models.features import (
    BinnedFeature,
    CategoricalFeature,
    CategoryCodeFeature,
    FeatureSpec,
    FloatKeyFeature,
    NumericFeature,
)
from blindscore.models.policy import LINKS, BandPolicy, logit, sigmoid
from blindscore.protocol import comparison
from blindscore.protocol.circuit_band import CircuitShape, LinearOutput, LinearStage

if TYPE_CHECKING:
    from blindscore.crypto.paillier import PublicKey

#: Format of a serialised model. 2: the encoded section gained ``truncate_bits`` (truncated band
#: comparisons), and S and l follow the precision split described in the module docstring.
MODEL_FORMAT_VERSION = 2
#: A bigger scale than the precision split needs, spent to double the truncation ulp (one bit of
#: l) when that takes at most this many bits: a bit of S costs about half a multiplication modulo
#: n^2 per encoded column in the dot product, a bit of l costs K + 1 DGK ciphertexts (256 B each)
#: and K zero tests.
MAX_EXTRA_SCALE_BITS = 4
MODEL_KIND = "blindscore-linear-model"
#: A score scale beyond this means the precision asked for is unreasonable for the ranges.
MAX_SCORE_FRAC_BITS = 1024


@dataclass(frozen=True)
class _Encoded:
    """The integer parameters derived from a model; computed once, compared on load."""

    score_frac_bits: int
    weights: tuple[int, ...]
    intercept: int
    cutoffs: tuple[int, ...]
    max_abs_error: float
    score_bounds: tuple[int, int]
    truncate_bits: int
    comparison_bits: int
    score_cutoffs: tuple[float, ...] = field(repr=False)


@register_model_type
class LinearModel(AdditiveModel):
    """A linear score ``s = sum_i w_i x_i + b`` over encoded columns, with a link and band policy.

    The bureau-side artifact: it holds the secret weights. ``coef`` has one weight per encoded
    column of ``spec`` (in raw feature units; one-hot columns weigh the indicator). With
    ``link="logit"`` the score is the log-odds and :meth:`predict` is a probability.

    The constructor derives the integer parameters of the encrypted path (learned-style
    attributes: :attr:`score_frac_bits`, :attr:`truncate_bits`, :attr:`encoded_weights`,
    :attr:`encoded_intercept`, :attr:`encoded_cutoffs`, :attr:`encoded_score_bounds`,
    :attr:`max_abs_error`, :attr:`comparison_bits`) and raises :class:`ModelFormatError` if
    ``precision`` cannot be met or the comparison would need more than 256 bits.
    """

    type_name: ClassVar[str] = MODEL_KIND

    def __init__(
        self,
        name: str,
        spec: FeatureSpec,
        coef: Sequence[float],
        intercept: float,
        link: Literal["logit", "identity"],
        policy: BandPolicy,
        precision: float = 1e-9,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelFormatError("a model name must be a non-empty string")
        if not isinstance(spec, FeatureSpec):
            raise ModelFormatError("spec must be a FeatureSpec")
        keyed = [f for f in spec.features if isinstance(f, FloatKeyFeature | CategoryCodeFeature)]
        if keyed:
            raise ModelFormatError(
                f"feature {keyed[0].name!r} is a {keyed[0].kind} feature, which tree ensembles use; a "
                "linear model needs numeric features with declared ranges or categorical ones"
            )
        if not isinstance(policy, BandPolicy):
            raise ModelFormatError("policy must be a BandPolicy")
        if link not in LINKS:
            raise ModelFormatError(f"link must be one of {list(LINKS)}, got {link!r}")
        if policy.output == "probability" and link != "logit":
            raise ModelFormatError(
                "probability cutoffs need link 'logit'; use output 'raw' for a linear score"
            )
        if isinstance(coef, str) or not hasattr(coef, "__len__") or not hasattr(coef, "__iter__"):
            raise ModelFormatError("coef must be a sequence of numbers")
        if len(coef) != spec.encoded_width:
            raise ModelFormatError(
                f"coef has {len(coef)} entries; the spec has {spec.encoded_width} encoded columns"
            )
        self.name = name
        self.spec = spec
        self.coef: tuple[float, ...] = tuple(
            _as_real(w, f"coef[{col!r}]") for w, col in zip(coef, spec.encoded_names, strict=True)
        )
        self.intercept = _as_real(intercept, "intercept")
        self.link: Literal["logit", "identity"] = link
        self.policy = policy
        self.precision = _as_real(precision, "precision")
        if not self.precision > 0:
            raise ModelFormatError(f"precision must be positive, got {precision!r}")
        meta = dict(metadata or {})
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"metadata must be plain JSON: {exc}") from exc
        if not all(isinstance(k, str) for k in meta):
            raise ModelFormatError("metadata keys must be strings")
        self.metadata: dict[str, Any] = meta
        self._enc = self._derive()

    # -- integer parameters -------------------------------------------------------------------

    def _error_terms(self) -> tuple[float, int]:
        """Split the worst-case error as ``A + T * 2^-(S+1)``; return (A, T).

        For numeric column i, ``|w x - W X 2^-S| <= |w| |x - X 2^-e| + |w - W 2^(e-S)| |X| 2^-e``
        ``<= |w| q_i + max|X_i| 2^-(S+1)``, q_i being the feature's rounding error. A one-hot
        feature has exactly one active exact indicator, so it adds ``2^-(S+1)``; the intercept
        adds another ``2^-(S+1)``.
        """
        a = 0.0
        t = 1
        for f, cols in self.spec.feature_slices():
            if isinstance(f, NumericFeature):
                codec = f.codec
                a += abs(self.coef[cols.start]) * codec.max_error
                t += codec.max_abs
            else:
                t += 1
        return a, t

    def _derive(self) -> _Encoded:
        try:
            return self._derive_unchecked()
        except OverflowError as exc:
            raise ModelFormatError(
                f"model {self.name!r}: a weight, intercept or cutoff is too large for the score scale"
            ) from exc

    def _scales(self, a: float, t: int) -> tuple[int, int]:
        """Choose (S, T) for feature-rounding error ``a`` and weight-rounding count ``t``.

        The computational error is ``a + t 2^-(S+1)`` (see :meth:`_error_terms`) and the
        truncation adds one ulp 2^(T-S) when T > 0. Of the room ``precision - a`` left by the
        features, S first gives the weight rounding at most half (for integer features that is
        "computational error at most precision / 2"), and T takes the largest power of two of
        what remains. As the ulp is a power of two, that can waste up to half of the rest; if up
        to MAX_EXTRA_SCALE_BITS more bits of S shrink the weight rounding enough to double the
        ulp (one comparison bit less), S takes them. Returns (S, T), T >= 0.
        """
        room = self.precision - a

        def weight_error(s: int) -> float:
            return math.ldexp(float(t), -(s + 1))

        def fits(s: int, e: int) -> bool:  # e: log2 of the ulp
            return a + weight_error(s) + math.ldexp(1.0, e) <= self.precision

        s_half = 0
        while weight_error(s_half) > room / 2:
            s_half += 1
            if s_half > MAX_SCORE_FRAC_BITS:
                raise ModelFormatError(
                    f"model {self.name!r}: precision {self.precision:g} needs an absurd scale"
                )
        # The largest ulp that fits at s_half (at least room / 4: the weight error is <= room / 2).
        e = math.frexp(room)[1]  # 2^(e-1) <= room < 2^e
        while not fits(s_half, e):
            e -= 1
        s = s_half
        for extra in range(1, MAX_EXTRA_SCALE_BITS + 1):
            if s_half + extra <= MAX_SCORE_FRAC_BITS and fits(s_half + extra, e + 1):
                s, e = s_half + extra, e + 1
                break
        return s, max(0, s + e)

    def _derive_unchecked(self) -> _Encoded:
        a, t = self._error_terms()
        if a >= self.precision:
            raise ModelFormatError(
                f"model {self.name!r}: fixed-point rounding of the features alone can reach {a:.3g} in score "
                f"units, above the precision {self.precision:g}; raise frac_bits of the numeric features "
                "(or declare integer-valued ones integer)"
            )
        s, trunc = self._scales(a, t)
        max_error = a + math.ldexp(float(t), -(s + 1)) + (math.ldexp(1.0, trunc - s) if trunc else 0.0)
        frac = self.spec.column_frac_bits
        weights = tuple(round(math.ldexp(w, s - e)) for w, e in zip(self.coef, frac, strict=True))
        b = round(math.ldexp(self.intercept, s))
        if self.policy.output == "probability":
            score_cutoffs = tuple(logit(p) for p in self.policy.cutoffs)
        else:
            score_cutoffs = self.policy.cutoffs
        # ldexp is exact here, so s_enc >= ceil(c 2^S) exactly when s_enc / 2^S >= c.
        cutoffs = tuple(math.ceil(math.ldexp(c, s)) for c in score_cutoffs)
        # The score is a sum of independent per-feature terms, so its extremes over the declared
        # input set are the sums of the per-feature extremes, and each is attained.
        lo_total = hi_total = b
        for f, cols in self.spec.feature_slices():
            ws = weights[cols]
            if isinstance(f, NumericFeature):
                codec = f.codec
                ends = (ws[0] * codec.enc_lo, ws[0] * codec.enc_hi)
            else:
                ends = (min(ws), max(ws))
            lo_total += min(ends)
            hi_total += max(ends)
        try:
            bits = comparison.comparison_bits(lo_total, hi_total, list(cutoffs), trunc)
        except InvalidInputError as exc:
            raise ModelFormatError(f"model {self.name!r}: {exc}") from None
        return _Encoded(
            score_frac_bits=s,
            weights=weights,
            intercept=b,
            cutoffs=cutoffs,
            max_abs_error=max_error,
            score_bounds=(lo_total, hi_total),
            truncate_bits=trunc,
            comparison_bits=bits,
            score_cutoffs=score_cutoffs,
        )

    @property
    def score_frac_bits(self) -> int:
        """S: the encrypted score carries the linear score at scale 2^S."""
        return self._enc.score_frac_bits

    @property
    def encoded_weights(self) -> list[int]:
        """W_i = round(w_i 2^(S - e_i)), one per encoded column."""
        return list(self._enc.weights)

    @property
    def encoded_intercept(self) -> int:
        """B = round(b 2^S)."""
        return self._enc.intercept

    @property
    def score_cutoffs(self) -> list[float]:
        """The cutoffs in score units (log-odds for probability policies)."""
        return list(self._enc.score_cutoffs)

    @property
    def encoded_cutoffs(self) -> list[int]:
        """ceil(c 2^S) for each score cutoff c, so that ``s_enc >= c_enc`` iff ``s_enc >= c 2^S``."""
        return list(self._enc.cutoffs)

    @property
    def truncate_bits(self) -> int:
        """T: the band protocol compares s_enc truncated by T bits, to one ulp of 2^(T-S)."""
        return self._enc.truncate_bits

    @property
    def max_abs_error(self) -> float:
        """A guaranteed bound on how far the encrypted path's decision value is from the exact score.

        The computational error ``|s_enc 2^-S - linear_score(row)|`` over the declared ranges,
        plus one truncation ulp 2^(T-S) when T > 0. The encrypted band equals :meth:`band`
        whenever the exact score is more than this from every cutoff.
        """
        return self._enc.max_abs_error

    @property
    def encoded_score_bounds(self) -> tuple[int, int]:
        """(s_min, s_max): the exact smallest and largest s_enc the declared ranges allow."""
        return self._enc.score_bounds

    # -- the decision value (what the cutoffs compare) -----------------------------------------

    def decision_value(self, row: Mapping[str, object]) -> float:
        return self.linear_score(row)

    @property
    def decision_cutoffs(self) -> list[float]:
        return self.score_cutoffs

    def encoded_decision_value(self, encoded_row: Sequence[int]) -> float:
        return math.ldexp(self.encoded_score(encoded_row), -self.score_frac_bits)

    # -- garbled-circuit pipeline (blindscore.protocol.circuit_band): the simplest family --------

    def linear_stage(self) -> LinearStage:
        """One value: s_enc - s_min, in [0, s_max - s_min]. Secret: it carries the weights."""
        lo, hi = self.encoded_score_bounds
        terms = tuple((i, w) for i, w in enumerate(self.encoded_weights) if w)
        return LinearStage(
            (LinearOutput(terms, self.encoded_intercept - lo),), max(1, (hi - lo).bit_length())
        )

    def circuit_shape(self) -> CircuitShape:
        """Public: the linear family, one value of w bits, K cutoffs."""
        stage_bits = self.linear_stage().value_bits
        return CircuitShape("linear", values=1, value_bits=stage_bits, cutoffs=len(self.encoded_cutoffs))

    def garbler_inputs(self) -> list[tuple[int, int]]:
        """The cutoffs shifted like the score, clamped to [0, 2^w] (w + 1 bits): s_enc >= c_enc
        iff s_enc - s_min >= c_enc - s_min, and a clamped cutoff keeps every comparison's result."""
        lo, _ = self.encoded_score_bounds
        w = self.circuit_shape().value_bits
        return [(min(max(c - lo, 0), 1 << w), w + 1) for c in self.encoded_cutoffs]

    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        """The band the circuit pipeline yields: exact comparisons of s_enc with the encoded cutoffs."""
        s = self.encoded_score(encoded_row)
        return sum(s >= c for c in self.encoded_cutoffs)

    @property
    def comparison_bits(self) -> int:
        """l, as the band protocol computes it (:func:`blindscore.protocol.comparison.comparison_bits`)."""
        return self._enc.comparison_bits

    # -- plaintext path -------------------------------------------------------------------------

    def linear_score(self, row: Mapping[str, object]) -> float:
        """The exact-arithmetic score of an application, in floats (log-odds for link logit)."""
        x = self.spec.transform_row(row)
        return math.fsum([w * v for w, v in zip(self.coef, x, strict=True)] + [self.intercept])

    def predict(self, row: Mapping[str, object]) -> float:
        """The model output: a probability for link logit, the linear score for identity."""
        z = self.linear_score(row)
        return sigmoid(z) if self.link == "logit" else z

    def band_of_score(self, score: float) -> int:
        """The band of a linear score (compared with the cutoffs in score units)."""
        if math.isnan(score):
            raise InvalidInputError("cannot band NaN")
        return bisect.bisect_right(self._enc.score_cutoffs, score)

    def band(self, row: Mapping[str, object]) -> int:
        """The plaintext band of an application.

        Compared in score units, like the encrypted path; it equals
        ``policy.band_of(predict(row))`` except within float rounding of a cutoff.
        """
        return self.band_of_score(self.linear_score(row))

    # -- integer path ---------------------------------------------------------------------------

    def encoded_score(self, encoded_row: Sequence[int]) -> int:
        """The integer score ``B + sum_i W_i X_i`` that the bureau computes under encryption."""
        xs = self.spec.check_encoded_row(encoded_row)
        return self._enc.intercept + sum(w * x for w, x in zip(self._enc.weights, xs, strict=True))

    def evaluate_encrypted(self, public_key: PublicKey, ciphertexts: Sequence[Any]) -> Any:
        """[B + sum_i W_i X_i]: one multi-exponentiation over the encrypted columns, plus B."""
        width = self.spec.encoded_width
        if len(ciphertexts) != width:
            raise InvalidInputError(
                f"model {self.name!r} takes {width} encrypted features, got {len(ciphertexts)}"
            )
        return public_key.add_plain(public_key.dot(ciphertexts, self._enc.weights), self._enc.intercept)

    def truncated_band_from_encoded(self, encoded_row: Sequence[int], carry: int = 0) -> int:
        """The band the band protocol yields for this row when its truncation carry is ``carry``.

        The protocol compares floor((s_enc - s_min) / 2^T) plus a random carry in {0, 1} with
        the truncated cutoffs (:func:`blindscore.protocol.comparison.truncated_band`), so it yields
        ``truncated_band_from_encoded(row, 0)`` or ``truncated_band_from_encoded(row, 1)``. The two
        differ only when s_enc is within 2^T below a truncated cutoff, and both equal #{k: s_enc >= c_enc}
        whenever every |s_enc - c_enc| >= 2^T. With T = 0 the carry is always 0.
        """
        s = self.encoded_score(encoded_row)
        lo, hi = self._enc.score_bounds
        return comparison.truncated_band(s, list(self._enc.cutoffs), lo, hi, self._enc.truncate_bits, carry)

    # -- persistence ----------------------------------------------------------------------------

    def _encoded_dict(self) -> dict[str, Any]:
        enc = self._enc
        names = self.spec.encoded_names
        return {
            "score_frac_bits": enc.score_frac_bits,
            "truncate_bits": enc.truncate_bits,
            "weights": dict(zip(names, enc.weights, strict=True)),
            "intercept": enc.intercept,
            "cutoffs": list(enc.cutoffs),
            "comparison_bits": enc.comparison_bits,
            "max_abs_error": enc.max_abs_error,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, including the derived integers for cross-checking on load."""
        return {
            "format": MODEL_FORMAT_VERSION,
            "kind": self.type_name,
            "name": self.name,
            "link": self.link,
            "precision": self.precision,
            "spec": self.spec.to_dict(),
            "coef": dict(zip(self.spec.encoded_names, self.coef, strict=True)),
            "intercept": self.intercept,
            "policy": self.policy.to_dict(),
            "metadata": self.metadata,
            "encoded": self._encoded_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        """Rebuild a model from :meth:`to_dict` output.

        Strict: unknown or missing fields, wrong types and a stored ``encoded`` section that
        differs from the one recomputed here (an edited file, or a writer with other rounding)
        all raise :class:`ModelFormatError`.
        """
        where = "model"
        keys = {"format", "kind", "name", "link", "precision", "spec", "coef", "intercept", "policy"}
        # "encoded" is optional: a hand-written model omits it, a saved one is checked against it.
        _check_keys(d, where, keys | {"metadata"}, frozenset({"encoded"}))
        if d.get("format") == 1 and d.get("kind") == MODEL_KIND:
            raise ModelFormatError(
                f"{where}: format 1 predates truncated band comparisons (format {MODEL_FORMAT_VERSION}); "
                "rebuild the model from its source (retrain, re-import the skops file, or rerun "
                "scripts/train_german_model.py for the shipped model) and save it again"
            )
        _check_format(d, cls.type_name, where, MODEL_FORMAT_VERSION)
        spec_d = d["spec"]
        if not isinstance(spec_d, Mapping):
            raise ModelFormatError(f"{where}: 'spec' must be an object")
        spec = FeatureSpec.from_dict(spec_d)
        coef_d = d["coef"]
        if not isinstance(coef_d, Mapping) or set(coef_d) != set(spec.encoded_names):
            raise ModelFormatError(f"{where}: 'coef' must map exactly the encoded column names to numbers")
        link = _get_str(d, "link", where)
        if link not in LINKS:
            raise ModelFormatError(f"{where}: link must be one of {list(LINKS)}, got {link!r}")
        policy_d = d["policy"]
        if not isinstance(policy_d, Mapping):
            raise ModelFormatError(f"{where}: 'policy' must be an object")
        metadata = d["metadata"]
        if not isinstance(metadata, dict):
            raise ModelFormatError(f"{where}: 'metadata' must be an object")
        model = cls(
            _get_str(d, "name", where),
            spec,
            [coef_d[c] for c in spec.encoded_names],
            d["intercept"],
            "logit" if link == "logit" else "identity",
            BandPolicy.from_dict(policy_d, f"{where}: policy"),
            _get_real(d, "precision", where),
            metadata=metadata,
        )
        if "encoded" in d and d["encoded"] != model._encoded_dict():
            raise ModelFormatError(
                f"{where} {model.name!r}: the stored integer parameters differ from those recomputed "
                "from its weights; the file was edited or written by an incompatible version"
            )
        return model

    @classmethod
    def example(cls) -> LinearModel:
        """A three-feature logistic model (numeric, one-hot, binned) for the conformance tests."""
        spec = FeatureSpec(
            (
                NumericFeature("income", 0.0, 20000.0, integer=True),
                CategoricalFeature("housing", ("own", "rent", "free")),
                BinnedFeature("age", (25.0, 40.0, 60.0)),
            )
        )
        coef = [-0.00012, -0.4, 0.35, 0.1, 0.6, 0.2, -0.1, -0.3]
        return cls("example-lr", spec, coef, -0.5, "logit", BandPolicy((0.1, 0.3, 0.6)), 1e-6)

    def save(self, path: str | Path) -> None:
        """Write the model as JSON, atomically."""
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LinearModel:
        """Read a model written by :meth:`save`; a malformed file raises :class:`ModelFormatError`."""
        return cls.from_dict(read_object(Path(path)))

    # -- display --------------------------------------------------------------------------------

    def describe(self) -> str:
        """A multi-line summary for a CLI listing. It shows no weights."""
        enc = self._enc
        n_num = sum(isinstance(f, NumericFeature) for f in self.spec.features)
        lines = [
            f"model {self.name}",
            f"  link {self.link}, bands on {self.policy.output}",
            f"  features {len(self.spec.features)} ({n_num} numeric), "
            f"encoded columns {self.spec.encoded_width}",
            f"  score scale 2^{enc.score_frac_bits}, truncated by {enc.truncate_bits} bits, max error "
            f"{enc.max_abs_error:.3g} (precision {self.precision:g}), comparison bits {enc.comparison_bits}",
        ]
        lines += self.policy.describe("probability" if self.policy.output == "probability" else "score")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LinearModel(name={self.name!r}, link={self.link!r}, features={len(self.spec.features)}, "
            f"bands={self.policy.n_bands})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
