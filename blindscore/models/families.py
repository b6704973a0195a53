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

from blindscore.crypto.circuit import Bits, CircuitBuilder
from blindscore.errors import ModelFormatError
from blindscore.protocol.circuit_band import CircuitShape, Family

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


def thermometer(b: CircuitBuilder, score: Bits, cutoffs: list[Bits]) -> list[int]:
    """[score >= c_k] for every cutoff (unsigned; each cutoff one bit wider than the score so that a
    cutoff above every score, 2^w, is representable): K comparisons of w + 1 bits."""
    wide = b.zero_extend(score, len(score) + 1)
    return [b.not_(b.less_than(wide, c, signed=False)) for c in cutoffs]


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


LINEAR = Family(build=_linear_build, secret_widths=_linear_widths)
register_family("linear", LINEAR)
