"""Start the three nodes as separate local processes on free loopback ports, and stop them again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from blindscore.app.plugins import with_model_modules
from blindscore.errors import BlindscoreError, UnavailableError
from blindscore.infra.certs import init_pki
from blindscore.infra.transport import INSECURE, TransportSecurity, client_security
from blindscore.models.contract import PrivateModel

READY_TIMEOUT_S = 120.0


@dataclass
class NodeProcess:
    role: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    info: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

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
        platform_args: tuple[str, ...] = (),
    ) -> None:
        """``database``: a postgresql:// URL all three nodes keep their state in (each under its own
        table prefix); by default each keeps SQLite files in its data directory. ``share_timings``
        starts the bureau and the bank with --share-timings, so receipts carry every node's stage
        times (benchmarks; never across real trust boundaries). ``model_modules``: modules every node
        imports first (``$BLINDSCORE_MODEL_MODULES``), for model types defined outside blindscore.
        ``band_protocol``: the bureau's ``--band-protocol`` (circuit, its default, or dgk).
        ``bureau_args``, ``platform_args``: more ``bureau serve`` / ``platform serve`` flags (e.g.
        ``--replica-id``, ``--lease-seconds``)."""
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
        bureau = self._spawn(
            "bureau",
            [
                *("bureau", "serve", "--data-dir", str(self.bureau_dir), "--bureau-id", self.bureau_id),
                *("--band-protocol", self.band_protocol),
                *self._database_flags(),
                *self._timing_flags(),
                *self.bureau_args,
            ],
        )
        self._wait(bureau)
        bank = self._spawn(
            "bank",
            [
                "bank",
                "serve",
                "--data-dir",
                str(self.bank_dir),
                "--bank-id",
                self.bank_id,
                "--bureau",
                bureau.address,
                "--key-bits",
                str(self.key_bits),
                *self._database_flags(),
                *self._timing_flags(),
            ],
        )
        platform = self._spawn(
            "platform",
            [
                *("platform", "serve", "--bureau", bureau.address, "--platform-id", self.platform_id),
                *("--data-dir", str(self.platform_dir), *self._database_flags()),
                *self.platform_args,
            ],
        )
        self._wait(bank)
        self._wait(platform)

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
    @property
    def platform_address(self) -> str:
        return self.nodes["platform"].address

    @property
    def bureau_address(self) -> str:
        return self.nodes["bureau"].address

    @property
    def bank_address(self) -> str:
        return self.nodes["bank"].address

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
        node = self._spawn(role, old.args, listen=old.address)
        self._wait(node)

    def add_node(self, name: str, args: list[str], *, env: Mapping[str, str] | None = None) -> NodeProcess:
        """Start one more node process under ``name`` (e.g. a second bureau replica: "bureau2") with
        ``args`` (``blindscore`` arguments before the security and listen flags); wait until ready."""
        node = self._spawn(name, args, env=env)
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
        node = NodeProcess(role, proc, ready, log_file, args=list(args))
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
