"""acme_models: a model type with its own circuit, the band of the worse of two linear scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blindscore.crypto.circuit import Bits, CircuitBuilder
from blindscore.errors import ModelFormatError
from blindscore.models import LinearModel, PrivateModel, register_model_type
from blindscore.models.families import register_family, thermometer
from blindscore.protocol.circuit_band import CircuitShape, Family, LinearOutput, LinearStage

FAMILY = "acme-worst-of-two"


# The circuit family: public, built by both parties from the shape alone. The library removes the
# masks before `build` sees the values; `secrets` are the garbler's inputs, here the K cutoffs.
def _widths(shape: CircuitShape) -> list[int]:
    return [shape.value_bits + 1] * shape.cutoffs


def _build(shape: CircuitShape, b: CircuitBuilder, values: list[Bits], secrets: list[Bits]) -> list[int]:
    champion, challenger = values
    worse = b.mux(b.less_than(champion, challenger, signed=False), challenger, champion)  # w AND gates each
    return thermometer(b, worse, secrets)  # [worse >= c_k] for every cutoff: the band, nothing else


register_family(FAMILY, Family(build=_build, secret_widths=_widths))


class WorstOfTwo(PrivateModel):
    """Champion and challenger logistic models on one feature spec; the band of the higher risk.

    The bank learns the band and the shape (two values of w bits, K cutoffs), not which model
    scored worse nor either score: both are computed blind and compared inside the circuit."""

    type_name = "acme-worst-of-two"

    def __init__(self, name: str, champion: LinearModel, challenger: LinearModel) -> None:
        same = (champion.spec, champion.policy, champion.link, champion.score_frac_bits)
        if same != (challenger.spec, challenger.policy, challenger.link, challenger.score_frac_bits):
            raise ModelFormatError("champion and challenger need one spec, policy, link and precision")
        self.name, self.champion, self.challenger = name, champion, challenger
        self.spec, self.policy = champion.spec, champion.policy

    # The plaintext model: the link is increasing, so the worse probability has the larger score.
    def predict(self, row: Mapping[str, object]) -> float:
        return max(self.champion.predict(row), self.challenger.predict(row))

    def decision_value(self, row: Mapping[str, object]) -> float:
        return max(self.champion.linear_score(row), self.challenger.linear_score(row))

    def band(self, row: Mapping[str, object]) -> int:
        return self.champion.band_of_score(self.decision_value(row))

    @property
    def decision_cutoffs(self) -> list[float]:
        return self.champion.decision_cutoffs

    # The blind path in the clear: each LinearModel's fixed-point score, the same S for both.
    def encoded_decision_value(self, encoded_row: Sequence[int]) -> float:
        return max(m.encoded_decision_value(encoded_row) for m in (self.champion, self.challenger))

    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        worse = max(m.encoded_score(encoded_row) for m in (self.champion, self.challenger))
        return sum(worse >= c for c in self.champion.encoded_cutoffs)

    @property
    def max_abs_error(self) -> float:  # max is 1-Lipschitz: the larger of the two bounds
        return max(self.champion.max_abs_error, self.challenger.max_abs_error)

    # The pipeline: two values on ciphertexts (secret weights), shifted into [0, 2^w) together.
    def _range(self) -> tuple[int, int]:
        lows, highs = zip(*(m.encoded_score_bounds for m in (self.champion, self.challenger)), strict=True)
        return min(lows), max(highs)

    def linear_stage(self) -> LinearStage:
        lo, hi = self._range()
        outputs = tuple(
            LinearOutput(
                tuple((i, w) for i, w in enumerate(m.encoded_weights) if w), m.encoded_intercept - lo
            )
            for m in (self.champion, self.challenger)
        )
        return LinearStage(outputs, max(1, (hi - lo).bit_length()))

    def circuit_shape(self) -> CircuitShape:
        w = self.linear_stage().value_bits
        return CircuitShape(FAMILY, values=2, value_bits=w, cutoffs=len(self.policy.cutoffs))

    def garbler_inputs(self) -> list[tuple[int, int]]:
        lo, _ = self._range()
        w = self.circuit_shape().value_bits
        return [(min(max(c - lo, 0), 1 << w), w + 1) for c in self.champion.encoded_cutoffs]

    # Persistence: strict JSON; the two models keep their own format.
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.type_name,
            "format": 1,
            "name": self.name,
            "champion": self.champion.to_dict(),
            "challenger": self.challenger.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorstOfTwo:
        if set(d) != {"kind", "format", "name", "champion", "challenger"} or d["format"] != 1:
            raise ModelFormatError("not an acme-worst-of-two model (format 1)")
        return cls(d["name"], LinearModel.from_dict(d["champion"]), LinearModel.from_dict(d["challenger"]))

    @classmethod
    def example(cls) -> WorstOfTwo:
        champion = LinearModel.example()
        coef = [-0.00015, 0.3, -0.2, 0.0, 0.1, 0.5, 0.0, 0.2]
        challenger = LinearModel(
            "example-challenger", champion.spec, coef, -0.4, "logit", champion.policy, 1e-6
        )
        return cls("example-worst-of-two", champion, challenger)


register_model_type(WorstOfTwo)
