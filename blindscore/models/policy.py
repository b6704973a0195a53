"""Band policies: which score bands the bank may learn, and the links between scores and probabilities."""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from blindscore.errors import InvalidInputError, ModelFormatError
from blindscore.models._json import _as_real, _check_keys, _get_list, _get_str
from blindscore.models.encoding import fmt_real

LINKS = ("logit", "identity")
OUTPUTS = ("probability", "raw")


def default_bands_on(link: str) -> Literal["probability", "raw"]:
    """What a model's cutoffs apply to when the caller does not say: the probability for a logit
    link (a binary classifier), the raw prediction for an identity link (a regression model)."""
    if link not in LINKS:
        raise ModelFormatError(f"link must be one of {list(LINKS)}, got {link!r}")
    return "probability" if link == "logit" else "raw"


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for large ``|z|``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def logit(p: float) -> float:
    """The log-odds ``log(p / (1 - p))`` for ``0 < p < 1``."""
    if not 0.0 < p < 1.0:
        raise InvalidInputError(f"logit needs 0 < p < 1, got {p!r}")
    return math.log(p) - math.log1p(-p)


@dataclass(frozen=True)
class BandPolicy:
    """Cut a model output into bands: band index = number of cutoffs the value is at or above.

    ``output="probability"`` puts the cutoffs on the predicted probability (each in (0, 1), link
    logit required); ``output="raw"`` puts them on the model's linear score. Band 0 holds the
    lowest outputs; with probabilities of default that is the best risk. Empty ``labels`` means
    "A", "B", "C", ...
    """

    cutoffs: tuple[float, ...]
    labels: tuple[str, ...] = ()
    output: Literal["probability", "raw"] = "probability"

    def __post_init__(self) -> None:
        if isinstance(self.cutoffs, str) or not isinstance(self.cutoffs, Sequence) or not self.cutoffs:
            raise ModelFormatError("a band policy needs a non-empty sequence of cutoffs")
        cutoffs = tuple(_as_real(c, "cutoff") for c in self.cutoffs)
        if any(a >= b for a, b in itertools.pairwise(cutoffs)):
            raise ModelFormatError(f"cutoffs must be strictly ascending, got {list(cutoffs)}")
        if self.output not in OUTPUTS:
            raise ModelFormatError(f"output must be one of {list(OUTPUTS)}, got {self.output!r}")
        if self.output == "probability" and not all(0.0 < c < 1.0 for c in cutoffs):
            raise ModelFormatError(
                f"probability cutoffs must lie strictly between 0 and 1, got {list(cutoffs)}"
            )
        if not self.labels:
            if len(cutoffs) + 1 > 26:
                raise ModelFormatError("more than 26 bands: give labels explicitly")
            labels = tuple(chr(ord("A") + i) for i in range(len(cutoffs) + 1))
        else:
            if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
                raise ModelFormatError("labels must be a sequence of strings")
            labels = tuple(self.labels)
            if len(labels) != len(cutoffs) + 1:
                raise ModelFormatError(
                    f"{len(cutoffs)} cutoffs need {len(cutoffs) + 1} labels, got {len(labels)}"
                )
            if not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
                raise ModelFormatError("labels must be distinct non-empty strings")
        object.__setattr__(self, "cutoffs", cutoffs)
        object.__setattr__(self, "labels", labels)

    @property
    def n_bands(self) -> int:
        return len(self.cutoffs) + 1

    def band_of(self, value: float) -> int:
        """The number of cutoffs that ``value`` is at or above."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidInputError(f"cannot band a {type(value).__name__}")
        x = float(value)
        if math.isnan(x):
            raise InvalidInputError("cannot band NaN")
        return bisect.bisect_right(self.cutoffs, x)

    def label_of(self, value: float) -> str:
        """The label of the band of ``value``."""
        return self.labels[self.band_of(value)]

    def describe(self, quantity: str) -> list[str]:
        """One line per band for model listings: ``band B: 0.2 <= probability < 0.5``."""
        cut = [fmt_real(c) for c in self.cutoffs]
        lines = []
        for i, label in enumerate(self.labels):
            lower = f"{cut[i - 1]} <= " if i > 0 else ""
            upper = f" < {cut[i]}" if i < len(cut) else ""
            lines.append(f"  band {label}: {lower}{quantity}{upper}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"cutoffs": list(self.cutoffs), "labels": list(self.labels), "output": self.output}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "band policy") -> BandPolicy:
        _check_keys(d, where, {"cutoffs", "labels", "output"})
        output = _get_str(d, "output", where)
        if output not in OUTPUTS:
            raise ModelFormatError(f"{where}: output must be one of {list(OUTPUTS)}, got {output!r}")
        labels = _get_list(d, "labels", where)
        if not labels:
            raise ModelFormatError(f"{where}: 'labels' must list one label per band")
        return cls(
            tuple(_get_list(d, "cutoffs", where)),
            tuple(labels),
            "probability" if output == "probability" else "raw",
        )


#: A band policy given by the model's link, known once its file is parsed (see :func:`default_bands_on`).
PolicyFor = Callable[[str], BandPolicy]


def policy_for_link(policy: BandPolicy | PolicyFor, link: str) -> BandPolicy:
    """``policy`` itself, or the policy it gives for ``link``."""
    return policy if isinstance(policy, BandPolicy) else policy(link)
