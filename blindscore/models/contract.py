"""The interface every privately evaluable model type implements, and how a type registers.

Every model type (:class:`PrivateModel`) is scored blind by one pipeline
(:mod:`blindscore.protocol.circuit_band`): a linear stage on Paillier ciphertexts, then a garbled
circuit ending in the band. What a type provides:

==========================  ==================================================================
``type_name``               registry key; also the ``kind`` field of its serialised form
``name``                    the model's own name (free text, shown in listings)
``spec``                    the public :class:`~blindscore.models.features.FeatureSpec` the
                            platform encodes with (names, types, transforms, scales, ranges)
``policy``                  the :class:`~blindscore.models.policy.BandPolicy`: cutoffs, labels
``predict`` / ``band``      the plaintext model on a raw row, and its band
``max_abs_error``           a proven bound on |blind decision value - exact value|
``linear_stage``            what the bureau computes on ciphertexts (secret)
``circuit_shape``           the public family and sizes the circuit is built from
``garbler_inputs``          the circuit's secret inputs (thresholds, leaves, weights, cutoffs)
``band_from_encoded``       the blind path's band, computed in the clear
``to_dict`` / ``from_dict`` lossless JSON form, strict on load
``example``                 a small valid instance, used by the conformance test suite
==========================  ==================================================================

:class:`AdditiveModel` adds what the per-application DGK comparison and the packed batches of
linear models need (``evaluate_encrypted``, ``encoded_score``, ``encoded_cutoffs``,
``encoded_score_bounds``, ``truncate_bits``, ``score_frac_bits``, ``linear_score``);
:class:`~blindscore.models.linear.LinearModel` and the scorecard implement it.

Types register with :func:`register_model_type` (a decorator); a name can be taken only once.
Third-party packages plug in through the ``blindscore.models`` entry point group: each entry
point names a class (``mypkg.models:TreeOfBins``), loaded and registered on first use of the
registry (:mod:`blindscore.models.registry`). See docs/models.md for a worked example.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from blindscore.errors import ModelFormatError

if TYPE_CHECKING:
    from blindscore.crypto.paillier import PublicKey
    from blindscore.models.features import FeatureSpec
    from blindscore.models.policy import BandPolicy
    from blindscore.protocol.circuit_band import CircuitShape, LinearStage

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdditiveModel",
    "PrivateModel",
    "register_model_type",
]

log = logging.getLogger(__name__)

#: The entry point group third-party model types register under.
ENTRY_POINT_GROUP = "blindscore.models"


class PrivateModel(ABC):
    """A model the bureau can evaluate blind: what every model type provides.

    A researcher writes four things: the plaintext function (:meth:`predict`, :meth:`band`), the
    public encoding (:attr:`spec`), the linear stage the bureau computes on ciphertexts and the
    secret inputs of its circuit family (:meth:`linear_stage`, :meth:`circuit_shape`,
    :meth:`garbler_inputs`; the family itself is public, :mod:`blindscore.models.families`). The
    library does the encryption, masking, garbling and oblivious transfer
    (:mod:`blindscore.protocol.circuit_band`).
    """

    type_name: ClassVar[str]
    name: str
    spec: FeatureSpec
    policy: BandPolicy

    # -- plaintext path ---------------------------------------------------------------------

    @abstractmethod
    def predict(self, row: Mapping[str, object]) -> float:
        """The model's output in its own units: a probability, scorecard points or a raw value."""

    @abstractmethod
    def band(self, row: Mapping[str, object]) -> int:
        """The plaintext band index of a raw application row."""

    @abstractmethod
    def decision_value(self, row: Mapping[str, object]) -> float:
        """The exact value the cutoffs compare, in score units (a linear score, a tree margin)."""

    @property
    @abstractmethod
    def decision_cutoffs(self) -> list[float]:
        """The cutoffs in the units of :meth:`decision_value`, ascending."""

    @abstractmethod
    def encoded_decision_value(self, encoded_row: Sequence[int]) -> float:
        """The decision value the blind path computes (fixed point), for an encoded row."""

    @property
    @abstractmethod
    def max_abs_error(self) -> float:
        """A proven bound on how far the blind path's decision value is from the exact one: the
        blind band equals :meth:`band` for every row farther than this from every cutoff."""

    # -- the garbled-circuit pipeline -------------------------------------------------------

    @abstractmethod
    def linear_stage(self) -> LinearStage:
        """What the bureau computes on the encrypted encoded row (secret)."""

    @abstractmethod
    def circuit_shape(self) -> CircuitShape:
        """The public shape both parties build the circuit from (family and sizes)."""

    @abstractmethod
    def garbler_inputs(self) -> list[tuple[int, int]]:
        """The circuit's secret inputs as (value, width), in the order its family declares."""

    @abstractmethod
    def band_from_encoded(self, encoded_row: Sequence[int]) -> int:
        """The band the blind path yields for an encoded row, computed in the clear (tests, verify)."""

    # -- persistence --------------------------------------------------------------------------

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, lossless form whose ``kind`` field is :attr:`type_name`."""

    @classmethod
    @abstractmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrivateModel:
        """Rebuild from :meth:`to_dict`; anything malformed raises ModelFormatError."""

    @classmethod
    @abstractmethod
    def example(cls) -> PrivateModel:
        """A small valid instance for the conformance tests."""

    def describe(self) -> str:
        """A short multi-line summary for listings; never shows weights or points."""
        return f"model {self.name} ({self.type_name}), {len(self.spec.features)} features"

    @property
    def feature_count(self) -> int:
        """How many raw features an application provides."""
        return len(self.spec.features)


class AdditiveModel(PrivateModel):
    """A model whose score is additive in the encrypted columns (linear models, scorecards): besides
    the circuit pipeline it runs the per-application DGK comparison and packed batches."""

    @property
    @abstractmethod
    def score_frac_bits(self) -> int:
        """S: the encrypted score is the linear score scaled by 2^S, rounded."""

    @abstractmethod
    def evaluate_encrypted(self, public_key: PublicKey, ciphertexts: Sequence[Any]) -> Any:
        """[s_enc] from the encrypted encoded row, using additions and plaintext multiples only."""

    @abstractmethod
    def encoded_score(self, encoded_row: Sequence[int]) -> int:
        """s_enc on a plaintext encoded row: exactly what :meth:`evaluate_encrypted` computes."""

    @property
    @abstractmethod
    def encoded_cutoffs(self) -> list[int]:
        """The cutoffs at scale 2^S, ascending."""

    @property
    @abstractmethod
    def encoded_score_bounds(self) -> tuple[int, int]:
        """The smallest and largest s_enc the spec's declared ranges allow."""

    @property
    @abstractmethod
    def truncate_bits(self) -> int:
        """T: the band protocol compares s_enc truncated by T bits."""

    @abstractmethod
    def linear_score(self, row: Mapping[str, object]) -> float:
        """The exact score of a raw application row, in score units (what the cutoffs compare)."""


M = TypeVar("M", bound=type[PrivateModel])

_lock = threading.Lock()
_types: dict[str, type[PrivateModel]] = {}


def register_model_type(cls: M) -> M:
    """Register a model type under its ``type_name``; a second type with the same name is refused."""
    if not (isinstance(cls, type) and issubclass(cls, PrivateModel)):
        raise ModelFormatError(f"{cls!r} is not a PrivateModel subclass")
    name = getattr(cls, "type_name", None)
    if not isinstance(name, str) or not name:
        raise ModelFormatError(f"{cls.__qualname__} needs a non-empty type_name")
    with _lock:
        existing = _types.get(name)
        if existing is not None and existing is not cls:
            raise ModelFormatError(
                f"model type {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        _types[name] = cls
    return cls
