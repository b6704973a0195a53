"""Horner packing of Paillier ciphertexts on every core: the bureau's heaviest step, spread over processes.

Packing k ciphertexts into the slots of one plaintext costs (k - 1) s squarings modulo n^2
(:mod:`blindscore.protocol.slots`): for a 100-tree ensemble that is about 54,000 squarings of
4096-bit numbers, some 200 ms on one core, and gmpy2 holds the GIL while it squares, so threads
cannot share the work. Each plaintext's chain is independent of the others, so the chunks go to a
pool of worker processes, one per core. Only public values cross the process boundary (the
modulus n^2 and ciphertexts); masks and models never leave the node process.

The pool is started lazily (or by :func:`warm` at node start-up) from a fork server, never by
forking a process that runs gRPC threads. ``BLINDSCORE_CRYPTO_WORKERS`` sets the number of worker
processes (0 or 1: pack in the calling process); the default is the number of usable cores.
Small jobs stay in process: below :data:`MIN_SQUARINGS` the hand-off costs more than it saves.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import gmpy2

from blindscore.errors import InvalidInputError

WORKERS_ENV = "BLINDSCORE_CRYPTO_WORKERS"
#: Below this many squarings in one call, packing stays in the calling process.
MIN_SQUARINGS = 8192

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def worker_count() -> int:
    """Worker processes to use: ``BLINDSCORE_CRYPTO_WORKERS``, else the usable cores."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        try:
            count = int(raw)
        except ValueError:
            raise InvalidInputError(
                f"{WORKERS_ENV} must be a whole number of processes, got {raw!r}"
            ) from None
        return max(0, count)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _executor() -> Executor | None:
    global _pool
    count = worker_count()
    if count < 2:
        return None
    with _lock:
        if _pool is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            _pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context(method))
        return _pool


def horner(modulus: Any, shift: int, chunk: Sequence[Any]) -> Any:
    """prod_j chunk[j]^(2^(shift j)) mod ``modulus``, by Horner's rule from the last element:
    (chunk - 1) shifts of ``shift`` squarings each."""
    acc = gmpy2.mpz(chunk[-1])
    factor = 1 << shift
    for c in reversed(chunk[:-1]):
        acc = gmpy2.powmod(acc, factor, modulus) * c % modulus
    return acc


def _pack_task(modulus: int, shift: int, bases: list[int], chunks: list[list[int]]) -> list[int]:
    """Worker side: several chunks, each given as indices into ``bases`` (a ciphertext used by many
    slots, e.g. one feature tested by many tree nodes, crosses the process boundary once)."""
    n = gmpy2.mpz(modulus)
    mpz_bases = [gmpy2.mpz(b) for b in bases]
    return [int(horner(n, shift, [mpz_bases[i] for i in chunk])) for chunk in chunks]


def pack(modulus: Any, shift: int, chunks: Sequence[Sequence[Any]]) -> list[Any]:
    """:func:`horner` of every chunk, on the worker processes when the job is large enough."""
    work = shift * sum(max(0, len(c) - 1) for c in chunks)
    pool = _executor() if work >= MIN_SQUARINGS and len(chunks) >= 2 else None
    if pool is None:
        return [horner(modulus, shift, c) for c in chunks]
    parts = min(len(chunks), 2 * worker_count())
    groups = [list(range(k, len(chunks), parts)) for k in range(parts)]
    futures = []
    for group in groups:
        index: dict[int, int] = {}
        bases: list[int] = []
        encoded = []
        for g in group:
            row = []
            for c in chunks[g]:
                key = int(c)
                if key not in index:
                    index[key] = len(bases)
                    bases.append(key)
                row.append(index[key])
            encoded.append(row)
        futures.append(pool.submit(_pack_task, int(modulus), shift, bases, encoded))
    out: list[Any] = [None] * len(chunks)
    for group, future in zip(groups, futures, strict=True):
        for g, value in zip(group, future.result(), strict=True):
            out[g] = gmpy2.mpz(value)
    return out


def warm() -> None:
    """Start the worker processes now (node start-up) rather than on the first large job."""
    pool = _executor()
    if pool is not None:
        list(pool.map(int, range(worker_count())))


def _forget() -> None:
    global _pool
    _pool = None


def _shutdown() -> None:
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _forget()


os.register_at_fork(after_in_child=_forget)  # a forked child starts its own pool if it needs one
atexit.register(_shutdown)
