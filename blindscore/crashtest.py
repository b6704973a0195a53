"""Crash test: kill -9 the bureau, then the bank, then the platform during a scoring run, restart each,
and prove that every accepted application ends with exactly one band and the audit chain verifies.

Clients behave like a careful platform operator: an application whose call failed because a node
was down is resubmitted with the same id and the same features until it is accepted. Kills land
at random moments (random progress points plus a random delay, so mid-request), one node at a
time; each killed node is restarted on its port with its data. At the end the bank's store must
hold one band per accepted application — none lost, none for an application never accepted, each
equal to the plaintext model's band — and ``blindscore bureau audit verify`` must pass. Loopback
only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import grpc

from bank_node.store import ResultStore
from blindscore.application import Application
from blindscore.client import PlatformClient
from blindscore.errors import InvalidInputError
from blindscore.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.localnet import LocalNetwork
from bureau.audit import AuditLog

#: Statuses that mean "a node is down or restarting": resubmit the same application.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
PER_APPLICATION_TIMEOUT_S = 300.0
DELIVERY_TIMEOUT_S = 180.0


@dataclass
class CrashReport:
    applications: int
    database: str
    accepted: int = 0
    pending_at_acceptance: int = 0
    resubmissions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)
    bands_stored: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: int = 0
    wrong_band: list[str] = field(default_factory=list)
    audit_ok: bool = False
    audit_records: int = 0
    audit_reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.accepted == self.applications
            and not self.errors
            and not self.lost
            and not self.unexpected
            and self.duplicated == 0
            and not self.wrong_band
            and self.audit_ok
        )

    def format(self) -> str:
        return "\n".join(
            [
                f"{self.applications} applications on {self.database}; killed (-9) and restarted: "
                f"{', '.join(self.kills) or 'none'}",
                f"accepted {self.accepted} ({self.pending_at_acceptance} pending at acceptance), "
                f"resubmissions {self.resubmissions}, errors {self.errors or 0}",
                f"bands at the bank {self.bands_stored}: lost {len(self.lost)}, duplicated {self.duplicated}",
                f"  never accepted {len(self.unexpected)}, differing from plaintext {len(self.wrong_band)}",
                f"audit chain: {'verified' if self.audit_ok else 'BROKEN'} ({self.audit_records} records)"
                + (f" {self.audit_reason}" if self.audit_reason else ""),
                f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.0f} s",
            ]
        )


def run_crash(
    *,
    applications: int = 1000,
    clients: int = 4,
    database: str | None = None,
    kill_order: tuple[str, ...] = ("bureau", "bank", "platform"),
    seed: int | None = None,
    key_bits: int = 2048,
    workdir: Path | None = None,
) -> CrashReport:
    """One crash run; see the module docstring."""
    if not 1 <= applications <= 1000:
        raise InvalidInputError("--applications must be between 1 and 1000 (the German credit rows)")
    if not 1 <= clients <= 32:
        raise InvalidInputError("--clients must be between 1 and 32")
    unknown = [r for r in kill_order if r not in ("bureau", "bank", "platform")]
    if unknown:
        raise InvalidInputError(f"--kill: unknown node(s) {', '.join(unknown)}")
    rng = random.Random(seed)
    rows, _ = load_german_credit()
    model = default_model()
    report = CrashReport(applications=applications, database="PostgreSQL" if database else "SQLite")
    t_start = time.monotonic()
    with TemporaryDirectory(prefix="blindscore-crash-") as tmp:
        net = LocalNetwork(workdir or Path(tmp), key_bits=key_bits, database=database)
        with net:
            lock = threading.Lock()
            next_index = iter(range(applications))
            accepted: set[str] = set()
            progress = threading.Condition(lock)

            key_id, platform_address = net.key_id, net.platform_address  # stable across restarts

            def make(i: int) -> Application:
                return Application(
                    application_id=f"crash-{i}",
                    bank_id=net.bank_id,
                    model_id=DEFAULT_MODEL_ID,
                    key_id=key_id,
                    consent_reference="crash-test",
                    features=rows[i],
                    model_version="1",
                )

            def client() -> None:
                pc = PlatformClient(platform_address, security=net.client_security)
                try:
                    while True:
                        with lock:
                            i = next(next_index, None)
                        if i is None:
                            return
                        if i >= held_back:
                            # The last applications wait for the last kill, so every kill lands
                            # while work is in flight however fast the run goes.
                            kills_done.wait(timeout=PER_APPLICATION_TIMEOUT_S)
                        app = make(i)
                        deadline = time.monotonic() + PER_APPLICATION_TIMEOUT_S
                        while True:
                            try:
                                outcome = pc.score(app, timeout=30)
                            except grpc.RpcError as exc:
                                code = exc.code()
                                if code in RETRYABLE and time.monotonic() < deadline:
                                    with lock:
                                        report.resubmissions += 1
                                    time.sleep(0.2)
                                    continue
                                with lock:
                                    name = code.name if code else "UNKNOWN"
                                    report.errors[name] = report.errors.get(name, 0) + 1
                                break
                            with progress:
                                accepted.add(app.application_id)
                                report.pending_at_acceptance += int(outcome.pending)
                                progress.notify_all()
                            break
                finally:
                    pc.close()

            def killer() -> None:
                try:
                    kill_each()
                finally:
                    kills_done.set()  # also if a restart failed: the clients must not wait forever

            def kill_each() -> None:
                # Random progress points spread over the run, one per node, plus a random delay so
                # the kill lands inside requests rather than between them.
                points = sorted(rng.uniform(0.1, 0.8) for _ in kill_order)
                for role, point in zip(kill_order, points, strict=True):
                    target = max(1, min(int(point * applications), held_back - 1))

                    def reached(t: int = target) -> bool:
                        return len(accepted) >= t or done.is_set()

                    with progress:
                        progress.wait_for(reached)
                    if done.is_set():
                        return
                    time.sleep(rng.uniform(0.0, 0.3))
                    net.kill(role)
                    report.kills.append(role)
                    time.sleep(rng.uniform(0.2, 1.0))
                    net.restart(role)

            done = threading.Event()
            kills_done = threading.Event()
            if not kill_order:
                kills_done.set()
            held_back = max(1, applications - max(clients, applications // 10))
            kill_thread = threading.Thread(target=killer, daemon=True)
            kill_thread.start()
            workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            done.set()
            with progress:
                progress.notify_all()
            kill_thread.join(timeout=120)
            report.accepted = len(accepted)

            # The bureau may still be retrying deliveries it accepted while the bank was down.
            store = ResultStore.open(database or net.bank_dir / "results.sqlite3")
            try:
                deadline = time.monotonic() + DELIVERY_TIMEOUT_S
                while time.monotonic() < deadline and not accepted <= {r.application_id for r in store.all()}:
                    time.sleep(0.5)
                records = store.all()
            finally:
                store.close()
        audit = AuditLog(database or net.bureau_dir / "audit.sqlite3")
        try:
            verified = audit.verify()
        finally:
            audit.close()
    ids = [r.application_id for r in records]
    stored = set(ids)
    report.bands_stored = len(records)
    report.duplicated = len(ids) - len(stored)
    report.lost = sorted(accepted - stored)
    report.unexpected = sorted(stored - accepted)
    by_id = {f"crash-{i}": i for i in range(applications)}
    for r in records:
        i = by_id.get(r.application_id)
        if i is not None and r.band_label != model.policy.labels[model.band(rows[i])]:
            s = model.linear_score(rows[i])
            if all(abs(s - c) > model.max_abs_error for c in model.score_cutoffs):
                report.wrong_band.append(r.application_id)
    report.audit_ok, report.audit_records, report.audit_reason = (
        verified.ok,
        verified.records,
        verified.reason,
    )
    report.seconds = time.monotonic() - t_start
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/crash.py", description=__doc__.splitlines()[0])
    p.add_argument("--applications", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--database", help="postgresql:// URL for all three nodes (default: SQLite files)")
    p.add_argument("--kill", default="bureau,bank,platform", help="nodes to kill -9, in order")
    p.add_argument("--seed", type=int, help="random seed for the kill moments")
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        report = run_crash(
            applications=args.applications,
            clients=args.clients,
            database=args.database,
            kill_order=tuple(x for x in args.kill.split(",") if x),
            seed=args.seed,
            key_bits=args.key_bits,
        )
    except InvalidInputError as exc:
        print(f"crash: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**asdict(report), "ok": report.ok}) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
