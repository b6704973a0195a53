"""Start the three nodes as separate local processes on free loopback ports, and stop them again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from blindscore.app.plugins import with_model_modules
from blindscore.errors import BlindscoreError, InvalidInputError, UnavailableError
from blindscore.infra.certs import init_pki
from blindscore.infra.transport import INSECURE, TransportSecurity, client_security
from blindscore.models.contract import PrivateModel

READY_TIMEOUT_S = 120.0


ROLES = ("bureau", "bank", "platform")


def replica_name(role: str, k: int) -> str:
    """The node name of ``role``'s replica ``k``: "bureau", then "bureau-2", "bureau-3", ..."""
    return role if k == 0 else f"{role}-{k + 1}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeProcess:
    role: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    info: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    #: The --listen it was started with (port 0: any).
    listen: str = "127.0.0.1:0"

    @property
    def address(self) -> str:
        return self.info["address"]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class LocalNetwork:
    """Bureau, bank and platform as three processes under one working directory.

    Each node listens on 127.0.0.1 port 0 and reports the port it bound in a ready file, so
    there is no race for free ports.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        key_bits: int = 2048,
        bank_id: str = "demo-bank",
        platform_id: str = "demo-platform",
        models: Mapping[str, PrivateModel] | None = None,
        log_level: str = "WARNING",
        insecure: bool = False,
        database: str | None = None,
        share_timings: bool = False,
        model_modules: tuple[str, ...] = (),
        band_protocol: str = "circuit",
        bureau_args: tuple[str, ...] = (),
        workers: int = 1,
        replicas: Mapping[str, int] | None = None,
        platform_args: tuple[str, ...] = (),
    ) -> None:
        """``database``: a postgresql:// URL all three nodes keep their state in (each under its own
        table prefix); by default each keeps SQLite files in its data directory. ``share_timings``
        starts the bureau and the bank with --share-timings, so receipts carry every node's stage
        times (benchmarks; never across real trust boundaries). ``model_modules``: modules every node
        imports first (``$BLINDSCORE_MODEL_MODULES``), for model types defined outside blindscore.
        ``band_protocol``: the bureau's ``--band-protocol`` (circuit, its default, or dgk).
        ``bureau_args``, ``platform_args``: more ``bureau serve`` / ``platform serve`` flags (e.g.
        ``--replica-id``, ``--lease-seconds``).
        ``workers``: ``serve --workers`` for every role whose processes can share a store
        (:data:`blindscore.infra.lock.SHARING_ROLES`; needs ``database``), each on a fixed free port.
        ``replicas``: how many processes of each role (default one), each its own port; peers
        name them as a list (a cluster: replicas need ``database``)."""
        self.workdir = workdir
        self.key_bits = key_bits
        self.bank_id = bank_id
        self.platform_id = platform_id
        self.models = models or {}
        self.log_level = log_level
        self.insecure = insecure
        self.database = database
        self.share_timings = share_timings
        self.model_modules = model_modules
        self.band_protocol = band_protocol
        self.bureau_args = bureau_args
        self.workers = workers
        self.replicas = dict(replicas or {})
        bad = {r: n for r, n in self.replicas.items() if r not in ROLES or not 1 <= n <= 16}
        if bad:
            raise InvalidInputError(f"replicas: expected 1..16 per role of {', '.join(ROLES)}, got {bad}")
        self.platform_args = platform_args
        self.bureau_id = "bureau-1"
        self.nodes: dict[str, NodeProcess] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def bureau_dir(self) -> Path:
        return self.workdir / "bureau"

    @property
    def bank_dir(self) -> Path:
        return self.workdir / "bank"

    @property
    def platform_dir(self) -> Path:
        return self.workdir / "platform"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def client_id(self) -> str:
        """The party id of the platform-client certificate the local tools submit with."""
        return f"{self.platform_id}-client"

    @property
    def client_security(self) -> TransportSecurity:
        """How the platform's own systems reach the platform node: with a platform-client
        certificate (a working directory made before client certificates: as the platform itself)."""
        if self.insecure:
            return INSECURE
        if (self.pki_dir / f"{self.client_id}.pem").exists():
            return client_security(self.pki_dir, "platform-client", self.client_id)
        return TransportSecurity.from_pki(self.pki_dir, self.platform_id).expecting(
            "platform", self.platform_id
        )

    def _security_flags(self) -> list[str]:
        return ["--insecure"] if self.insecure else ["--pki", str(self.pki_dir)]

    def _database_flags(self) -> list[str]:
        return ["--database", self.database] if self.database else []

    def _timing_flags(self) -> list[str]:
        return ["--share-timings"] if self.share_timings else []

    def _worker_flags(self, role: str) -> list[str]:
        """``--workers`` for ``role`` if it runs several worker processes (roles that can share
        a store: :data:`blindscore.infra.lock.SHARING_ROLES`)."""
        from blindscore.infra.lock import SHARING_ROLES

        if self.workers <= 1 or role not in SHARING_ROLES:
            return []
        return ["--workers", str(self.workers)]

    def start(self) -> None:
        if self.models:
            from blindscore.bureau.registry import (
                ModelStore,  # the bureau's store layout, written before it starts
            )

            store = ModelStore(self.bureau_dir / "models")
            for model_id, model in self.models.items():
                store.put(model_id, model)
        if not self.insecure and not (self.pki_dir / "ca.pem").exists():
            init_pki(
                self.pki_dir,
                [
                    ("bureau", self.bureau_id),
                    ("bank", self.bank_id),
                    ("platform", self.platform_id),
                    ("platform-client", self.client_id, self.platform_id),
                ],
            )
        listen = {role: self._listen_addresses(role) for role in ROLES}
        for k, address in enumerate(listen["bureau"]):
            name = replica_name("bureau", k)
            replica = ["--replica-id", name] if len(listen["bureau"]) > 1 else []
            bureau = self._spawn(
                name,
                [
                    *("bureau", "serve", "--data-dir", str(self.bureau_dir), "--bureau-id", self.bureau_id),
                    *("--band-protocol", self.band_protocol),
                    *self._database_flags(),
                    *self._timing_flags(),
                    *self.bureau_args,
                    *replica,
                    *self._worker_flags("bureau"),
                ],
                listen=address,
            )
            self._wait(bureau)
        bureaus = self.addresses("bureau")
        banks = ",".join(listen["bank"])
        for k, address in enumerate(listen["bank"]):
            # The first bank makes the key ring; the others (replicas) open the same one.
            bank = self._spawn(
                replica_name("bank", k),
                [
                    *("bank", "serve", "--data-dir", str(self.bank_dir), "--bank-id", self.bank_id),
                    *("--bureau", bureaus, "--key-bits", str(self.key_bits)),
                    *(["--advertise", banks] if len(listen["bank"]) > 1 else []),
                    *self._database_flags(),
                    *self._timing_flags(),
                    *self._worker_flags("bank"),
                ],
                listen=address,
            )
            if k == 0 or k == len(listen["bank"]) - 1:
                self._wait(bank)
        platforms = []
        for k, address in enumerate(listen["platform"]):
            name = replica_name("platform", k)
            replica = ["--replica-id", name] if len(listen["platform"]) > 1 else []
            platforms.append(
                self._spawn(
                    name,
                    [
                        *("platform", "serve", "--bureau", bureaus, "--platform-id", self.platform_id),
                        *("--data-dir", str(self.platform_dir), *self._database_flags()),
                        *self.platform_args,
                        *replica,
                        *self._worker_flags("platform"),
                    ],
                    listen=address,
                )
            )
        for node in self.nodes.values():
            self._wait(node)

    def _listen_addresses(self, role: str) -> list[str]:
        """Where each of ``role``'s processes listens: port 0 for a single process, fixed free
        ports for replicas (their peers list them before they start) and for workers (they
        share it)."""
        count = self.replicas.get(role, 1)
        if count == 1 and not self._worker_flags(role):
            return ["127.0.0.1:0"]
        return [f"127.0.0.1:{_free_port()}" for _ in range(count)]

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    # ------------------------------------------------------------------ accessors
    def addresses(self, role: str) -> str:
        """The address of ``role``'s node, or the comma-separated list of its replicas."""
        count = self.replicas.get(role, 1)
        nodes = [self.nodes[replica_name(role, k)] for k in range(count)]
        return ",".join(n.listen if not n.listen.endswith(":0") else n.address for n in nodes)

    @property
    def platform_address(self) -> str:
        return self.addresses("platform")

    @property
    def bureau_address(self) -> str:
        return self.addresses("bureau")

    @property
    def bank_address(self) -> str:
        return self.addresses("bank")

    @property
    def key_id(self) -> str:
        return self.nodes["bank"].info["key_id"]

    def pids(self) -> dict[str, int]:
        return {role: node.process.pid for role, node in self.nodes.items()}

    # ------------------------------------------------------------------ faults
    def kill(self, role: str) -> None:
        """SIGKILL one node (no shutdown handlers run: a crash) and reap it."""
        node = self.nodes[role]
        if node.process.poll() is None:
            node.process.kill()
        node.process.wait()

    def restart(self, role: str) -> None:
        """Start a stopped or killed node again with its arguments, data and port; wait until ready."""
        old = self.nodes[role]
        if old.process.poll() is None:
            raise BlindscoreError(f"the {role} node is still running; kill or stop it first")
        # Its own port: the one it was given, or the one it bound (the ready file's address may
        # be an advertised list, for a bank replica).
        listen = old.listen if not old.listen.endswith(":0") else old.address
        node = self._spawn(role, old.args, listen=listen)
        self._wait(node)

    def add_node(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> NodeProcess:
        """Start one more node process under ``name`` (e.g. a second bureau replica: "bureau2") with
        ``args`` (``blindscore`` arguments before the security and listen flags) on ``listen`` (a
        fixed port when its address must be known first, e.g. in a bank replica's --advertise
        list); wait until ready."""
        node = self._spawn(name, args, env=env, listen=listen)
        self._wait(node)
        return node

    # ------------------------------------------------------------------ internals
    def _spawn(
        self, role: str, args: list[str], *, listen: str = "127.0.0.1:0", env: Mapping[str, str] | None = None
    ) -> NodeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / f"{role}.ready.json"
        ready.unlink(missing_ok=True)
        log_file = self.workdir / f"{role}.log"
        cmd = [
            sys.executable,
            "-m",
            "blindscore",
            "--log-level",
            self.log_level,
            *args,
            *self._security_flags(),
            "--listen",
            listen,
            "--ready-file",
            str(ready),
        ]
        env = with_model_modules(os.environ if env is None else env, self.model_modules)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_file, "ab") as log:  # a restarted node appends to its log
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        node = NodeProcess(role, proc, ready, log_file, args=list(args), listen=listen)
        self.nodes[role] = node
        return node

    def _wait(self, node: NodeProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.ready_file.exists():
                node.info = json.loads(node.ready_file.read_text())
                return
            if node.process.poll() is not None:
                raise BlindscoreError(
                    f"the {node.role} node exited with status {node.process.returncode}:\n{node.log_tail()}"
                )
            time.sleep(0.05)
        raise UnavailableError(f"the {node.role} node did not become ready in {READY_TIMEOUT_S:.0f} s")
