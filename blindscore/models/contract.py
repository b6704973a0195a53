"""The interface every privately evaluable model type implements, and how a type registers.

A *model type* is a class that the bureau can evaluate on ciphertexts with additive operations
only. The interface is deliberately small; :class:`~blindscore.models.linear.LinearModel` is the
reference implementation and most new types compile to it (a scorecard is linear over bin
indicators). What a type must provide:

========================  ====================================================================
``type_name``             registry key; also the ``kind`` field of its serialised form
``name``                  the model's own name (free text, shown in listings)
``spec``                  the public :class:`~blindscore.models.features.FeatureSpec` the platform encodes
                          (names, types, public transforms, fixed-point scales and ranges)
``policy``                the :class:`~blindscore.models.policy.BandPolicy`: cutoffs and labels
``score_frac_bits``       the output scale S: the encrypted score carries the score at 2^S
``evaluate_encrypted``    the homomorphic evaluation: ciphertexts of the encoded row -> [s_enc]
``encoded_score``         the same integer function on a plaintext encoded row (for verification)
``linear_score`` /        the plaintext model on a raw application row, in score units and in
``predict`` / ``band``    output units (probability, points, raw), and its band
``encoded_cutoffs``,      the band protocol's parameters (:mod:`blindscore.protocol.comparison`)
``encoded_score_bounds``,
``truncate_bits``
``max_abs_error``         a proven bound on |encrypted decision value - exact score|
``to_dict`` / ``from_dict``  lossless JSON form, strict on load
``example``               a small valid instance, used by the conformance test suite
========================  ====================================================================

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

__all__ = [
    "ENTRY_POINT_GROUP",
    "PrivateModel",
    "register_model_type",
]

log = logging.getLogger(__name__)

#: The entry point group third-party model types register under.
ENTRY_POINT_GROUP = "blindscore.models"


class PrivateModel(ABC):
    """A model the bureau can evaluate blind. See the module docstring for the contract."""

    type_name: ClassVar[str]
    name: str
    spec: FeatureSpec
    policy: BandPolicy

    # -- encrypted path ---------------------------------------------------------------------

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

    @property
    @abstractmethod
    def max_abs_error(self) -> float:
        """Bound on |s_enc 2^-S (after truncation) - linear_score(row)| over the declared ranges."""

    # -- plaintext path ---------------------------------------------------------------------

    @abstractmethod
    def linear_score(self, row: Mapping[str, object]) -> float:
        """The exact score of a raw application row, in score units (what the cutoffs compare)."""

    @abstractmethod
    def predict(self, row: Mapping[str, object]) -> float:
        """The model's output in its own units: a probability, scorecard points or a raw value."""

    @abstractmethod
    def band(self, row: Mapping[str, object]) -> int:
        """The plaintext band index of a raw application row."""

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
