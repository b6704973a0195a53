"""Handing claims back: the lease keeper's hand-back and stop, and a store's release of a claim."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from blindscore.bureau.applications import ApplicationStore, Submission
from blindscore.bureau.claims import PENDING
from blindscore.errors import LeaseLostError, UnavailableError
from blindscore.infra.leases import LeaseKeeper

from waiting import wait_for


class Rows:
    """A table of leases in memory: which fences are leased, and every call the keeper made."""

    def __init__(self) -> None:
        self.leased: set[str] = set()
        self.released: list[list[str]] = []
        self.fail_release = False

    def renew(self, fences: list[str]) -> list[str]:
        return [f for f in fences if f not in self.leased]

    def release(self, fences: list[str]) -> None:
        if self.fail_release:
            raise UnavailableError("database unavailable")
        self.released.append(sorted(fences))
        self.leased -= set(fences)


def test_hand_back_lets_go_and_releases_the_rows() -> None:
    rows = Rows()
    keeper: LeaseKeeper[str] = LeaseKeeper("test-leases", 30.0, rows.renew, rows.release)
    try:
        rows.leased |= {"a", "b", "c"}
        for fence in ("a", "b", "c"):
            keeper.hold(fence)
        keeper.hand_back("b", "c")
        assert rows.released == [["b", "c"]] and rows.leased == {"a"}
        assert keeper.held() == ["a"]
        keeper.hand_back()  # nothing to hand back: no write
        assert rows.released == [["b", "c"]]
    finally:
        keeper.stop()
    assert rows.released == [["b", "c"], ["a"]]  # stopping hands back what is still held


def test_stop_hands_back_held_claims_but_not_lost_ones() -> None:
    rows = Rows()
    keeper: LeaseKeeper[str] = LeaseKeeper("test-leases", 0.5, rows.renew, rows.release)
    rows.leased |= {"kept"}
    keeper.hold("kept")
    keeper.hold("taken")  # not leased: the first renewal finds it taken over
    wait_for(lambda: keeper.is_lost("taken"), what="the renewal to find 'taken' lost")
    keeper.stop()
    assert rows.released == [["kept"]]  # a lost claim is another replica's now: never released
    assert keeper.held() == ["taken"]


def test_a_failed_release_is_logged_and_the_leases_expire(caplog: pytest.LogCaptureFixture) -> None:
    rows = Rows()
    rows.fail_release = True
    rows.leased |= {"a"}
    keeper: LeaseKeeper[str] = LeaseKeeper("test-leases", 30.0, rows.renew, rows.release)
    keeper.hold("a")
    with caplog.at_level(logging.WARNING, logger="blindscore.infra.leases"):
        keeper.stop()  # does not raise: the process is going away either way
    assert "test-leases: could not hand back 1 row(s): database unavailable" in caplog.text
    assert keeper.held() == []


def submission(app_id: str) -> Submission:
    return Submission("plat", app_id, "bank", "m", 1, "pk-x", "consent", 1, b"\x01" * 64)


def test_release_frees_only_rows_still_pending_under_the_released_claim(tmp_path: Path) -> None:
    store = ApplicationStore(tmp_path / "applications.sqlite3")
    try:
        held = {
            a: store.accept(submission(a), next_attempt_at=0.0, owner="r1", lease_s=30.0)[0] for a in "xyz"
        }
        fences = {a: store.fence(row) for a, row in held.items()}
        assert store.delivered(("plat", "y"), {}, claim=1)  # finished meanwhile
        store.release([fences["x"], fences["y"]], at=123.0)
        x, y, z = (store.get("plat", a) for a in "xyz")
        assert x is not None and (x.claimed_by, x.lease_until, x.next_attempt_at, x.claim) == (
            "",
            0,
            123.0,
            1,
        )
        assert y is not None and y.state != PENDING and y.claimed_by == "r1"  # left alone
        assert z is not None and z.claimed_by == "r1" and z.lease_until > 0  # not released
        # A renewal racing the release does not take the row back; the claim is reported gone.
        assert store.renew([fences["x"], fences["z"]], 30.0, 0.0) == [fences["x"]]
        # A newer claim is not released by the old fence, and the old fence's writes stay fenced off.
        taken = store.claim_due("r2", 30.0, 1e12, 10)
        assert [(r.key[1], r.claim) for r in taken] == [("x", 2)]
        store.release([fences["x"]], at=0.0)
        again = store.get("plat", "x")
        assert again is not None and (again.claimed_by, again.claim) == ("r2", 2)
        with pytest.raises(LeaseLostError, match=r"lost the lease on application 'x' of 'plat' \(claim 1\)"):
            store.retry_later(("plat", "x"), 1, 0.0, "UNAVAILABLE", "bank down", claim=1)
    finally:
        store.close()
