"""Test support shared by the suite: the German data read once, and three real nodes in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import grpc

from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.server import register_with_bureau, start_bank_server
from blindscore.bank_node.store import ResultStore
from blindscore.bureau.flow import BandProtocol, BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.infra.certs import init_pki
from blindscore.infra.db import RetryPolicy
from blindscore.infra.metrics import NodeMetrics
from blindscore.infra.transport import INSECURE, TransportSecurity, open_channel
from blindscore.models.linear import LinearModel
from blindscore.platform_node.bureau_link import GrpcBureauLink
from blindscore.platform_node.flow import PlatformNode
from blindscore.platform_node.server import start_platform_server
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

GermanRows = list[dict[str, int | str]]

BUREAU_ID = "bureau-1"


@cache
def german_credit() -> tuple[GermanRows, Any]:
    """``load_german_credit()`` read once per process: the rows and the target. Shared, so read only."""
    return load_german_credit()


@cache
def german_model() -> LinearModel:
    """``default_model()`` loaded once per process. Shared, so read only."""
    return default_model()


@dataclass
class Nodes:
    """Bureau, bank and (optionally) platform serving real gRPC on loopback port 0.

    ``bureau``, ``bank`` and ``platform`` are addresses ("" for a node not started); the ``_obj`` /
    ``_node`` fields are the in-process objects behind them.
    """

    directory: Path
    bureau_obj: BureauNode
    bank_node: BankNode
    platform_obj: PlatformNode | None
    bureau: str
    bank: str
    platform: str
    key_id: str
    creds: Callable[[str], TransportSecurity]

    channels: list[grpc.Channel] = field(default_factory=list)

    def stub(self, kind: str, party: str = "") -> Any:
        """A client of node ``kind`` ("bureau", "bank" or "platform"), calling as ``party`` under TLS
        (any server of that role is accepted); its channel is closed with the nodes."""
        address = {"bureau": self.bureau, "bank": self.bank, "platform": self.platform}[kind]
        channel = open_channel(address, security=self.creds(party).expecting(kind))
        self.channels.append(channel)
        return getattr(pb_grpc, f"{kind.capitalize()}Stub")(channel)

    @property
    def bank_dir(self) -> Path:
        return self.directory / "bank"

    @property
    def models_dir(self) -> Path:
        return self.directory / "bureau" / "models"


@contextmanager
def running_nodes(
    directory: Path,
    paillier: KeyPair,
    dgk: DGKKeyPair,
    *,
    bank_id: str = "bank-a",
    platform_id: str = "platform-a",
    tls: bool = False,
    extra_parties: Sequence[tuple[str, str]] = (),
    platform: bool = True,
    register: bool = True,
    bank: Callable[[Path], BankNode] | None = None,
    database: str | None = None,
    retry: RetryPolicy | None = None,
    metrics: Mapping[str, NodeMetrics] | None = None,
    band_protocol: BandProtocol = "circuit",
) -> Iterator[Nodes]:
    """Start the nodes under ``directory`` and stop them, and close their stores, on exit.

    ``tls``: mutual TLS from a PKI made for the three parties plus ``extra_parties`` (role, id);
    otherwise plaintext. ``bank`` opens the bank node from its data directory (default: a node
    holding the given keys). ``register=False`` leaves registering the bank to the test.
    """
    metrics = metrics or {}
    if tls:
        pki = directory / "pki"
        init_pki(pki, [("bureau", BUREAU_ID), ("bank", bank_id), ("platform", platform_id), *extra_parties])

        def creds(party: str) -> TransportSecurity:
            return TransportSecurity.from_pki(pki, party)
    else:

        def creds(party: str) -> TransportSecurity:
            return INSECURE

    with ExitStack() as stack:
        bureau_obj = BureauNode.open(directory / "bureau", database, retry=retry, band_protocol=band_protocol)
        stack.callback(bureau_obj.close)
        bureau_server, bureau_port, channels = start_bureau_server(
            bureau_obj, "127.0.0.1:0", security=creds(BUREAU_ID), metrics=metrics.get("bureau")
        )
        stack.callback(channels.close)
        stack.callback(lambda: bureau_server.stop(None).wait())
        bureau_addr = f"127.0.0.1:{bureau_port}"

        if bank is None:
            bank_node = BankNode(bank_id, paillier, dgk, ResultStore(directory / "bank" / "results.sqlite3"))
        else:
            bank_node = bank(directory / "bank")
        stack.callback(bank_node.store.close)
        bank_server, bank_port = start_bank_server(
            bank_node, "127.0.0.1:0", security=creds(bank_id), metrics=metrics.get("bank")
        )
        stack.callback(lambda: bank_server.stop(None).wait())
        bank_addr = f"127.0.0.1:{bank_port}"
        key_id = (
            register_with_bureau(bank_node, bureau_addr, bank_addr, security=creds(bank_id))
            if register
            else ""
        )

        platform_obj: PlatformNode | None = None
        platform_addr = ""
        if platform:
            channel = open_channel(bureau_addr, security=_expecting_bureau(creds(platform_id), tls))
            stack.callback(channel.close)
            options: dict[str, Any] = {} if retry is None else {"retry": retry}
            platform_obj = PlatformNode(platform_id, GrpcBureauLink(channel), **options)
            stack.callback(platform_obj.close)
            platform_server, platform_port = start_platform_server(
                platform_obj, "127.0.0.1:0", security=creds(platform_id), metrics=metrics.get("platform")
            )
            stack.callback(lambda: platform_server.stop(None).wait())
            platform_addr = f"127.0.0.1:{platform_port}"

        yield Nodes(
            directory,
            bureau_obj,
            bank_node,
            platform_obj,
            bureau_addr,
            bank_addr,
            platform_addr,
            key_id,
            creds,
        )


def _expecting_bureau(security: TransportSecurity, tls: bool) -> TransportSecurity:
    return security.expecting("bureau", BUREAU_ID) if tls else security


class NodesFactory:
    """Starts :func:`running_nodes` networks, each in a fresh temporary directory, and stops them all
    when closed: the fixtures ``make_nodes`` (per test) and ``module_nodes`` (per module) are one."""

    def __init__(self, tmp_path_factory: Any, paillier: KeyPair, dgk: DGKKeyPair) -> None:
        self._tmp = tmp_path_factory
        self._keys = (paillier, dgk)
        self._stack = ExitStack()

    def __call__(self, name: str = "nodes", **options: Any) -> Nodes:
        directory = self._tmp.mktemp(name)
        return self._stack.enter_context(running_nodes(directory, *self._keys, **options))

    def close(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------------- replica clusters


def pg_rows(database: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on a PostgreSQL URL (the replica tests read the shared tables directly)."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return [] if cursor.description is None else [tuple(r) for r in cursor.fetchall()]


def german_application(
    net: Any, rows: Sequence[Mapping[str, Any]], i: int, prefix: str, consent: str
) -> Application:
    """German credit row ``i`` as application ``PREFIX-i`` to ``net``'s bank under the default model."""
    return Application(
        application_id=f"{prefix}-{i}",
        bank_id=net.bank_id,
        model_id=DEFAULT_MODEL_ID,
        key_id=net.key_id,
        consent_reference=consent,
        features=rows[i],
        model_version="1",
    )


def status_name(code: object) -> str:
    """A receipt's error code (the gRPC status number) by name, as an RpcError's is:
    FAILED_PRECONDITION, not 9."""
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
    return str(code)
