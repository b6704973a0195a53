"""Roles over real mutual TLS: who may call each RPC of each service (a table over every RPC in the
proto, checked complete against it), as which party; key retirement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.infra import transport
from blindscore.infra.transport import open_channel
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import BUREAU_ID, NodesFactory
from support import Nodes as Net

#: Who calls in the table below: one certificate per role whose party is the node called (or, for a
#: client, serves it), and one per role naming another party.
RIGHT = {
    "bureau": BUREAU_ID,
    "bank": "bank-1",
    "platform": "platform-1",
    "platform-client": "app-1",
    "bank-client": "loans-1",
}
WRONG = {"bank": "bank-2", "platform": "platform-2", "platform-client": "app-2", "bank-client": "loans-2"}


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    """Bureau, bank and platform over mutual TLS; bank-2, platform-2, bureau-2 and the client
    certificates have no node of their own."""
    return module_nodes(
        "roles",
        bank_id="bank-1",
        platform_id="platform-1",
        tls=True,
        extra_parties=[
            ("bank", "bank-2"),
            ("platform", "platform-2"),
            ("bureau", "bureau-2"),
            ("platform-client", "app-1", "platform-1"),
            ("platform-client", "app-2", "platform-2"),
            ("bank-client", "loans-1", "bank-1"),
            ("bank-client", "loans-2", "bank-2"),
        ],
    )


def bureau_stub(net: Net, party: str) -> Any:
    return net.stub("bureau", party)


def code_of(call: Any, request: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code()


def registration(
    bank_id: str,
    keypair: KeyPair,
    dgk: DGKKeyPair,
    address: str = "127.0.0.1:1",
    active: tuple[str, ...] = (),
) -> Any:
    return pb.RegisterBankRequest(
        bank_id=bank_id,
        address=address,
        paillier_public_key=serde.paillier_key_to_json(keypair.public_key),
        dgk_public_key=serde.dgk_key_to_json(dgk.public_key),
        active_key_ids=list(active),
    )


def test_only_a_bank_registers_and_only_as_itself(
    net: Net, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    hijack = registration("bank-1", paillier_keypair, dgk_keypair, address="127.0.0.1:9")
    assert code_of(bureau_stub(net, "platform-1").RegisterBank, hijack) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(bureau_stub(net, "bank-2").RegisterBank, hijack) == grpc.StatusCode.PERMISSION_DENIED
    assert net.bureau_obj.banks.get("bank-1").address == net.bank  # untouched
    own = registration("bank-2", paillier_keypair, dgk_keypair, address="127.0.0.1:9")
    assert bureau_stub(net, "bank-2").RegisterBank(own, timeout=10).key_id == net.key_id


def test_submissions_and_band_protocol_need_their_roles(net: Net) -> None:
    app = pb.EncryptedApplication(
        application_id="a1", platform_id="platform-2", bank_id="bank-1", model_id="german-credit-lr",
        key_id=net.key_id, consent_reference="c", count=0, ciphertexts=b"",
    )  # fmt: skip
    assert code_of(bureau_stub(net, "platform-1").SubmitApplication, app) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(bureau_stub(net, "bank-1").SubmitApplication, app) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(
        bureau_stub(net, "bank-1").GetModelSpec, pb.GetModelSpecRequest(model_id="german-credit-lr")
    ) == (grpc.StatusCode.PERMISSION_DENIED)
    bank = pb_grpc.BankStub(open_channel(net.bank, security=net.creds("platform-1").expecting("bank")))
    masked = pb.MaskedRequest(application_id="a1", key_id=net.key_id, count=1, bits=8, ciphertext=b"x")
    assert code_of(bank.CompareMasked, masked) == grpc.StatusCode.PERMISSION_DENIED
    delivery = pb.BandDelivery(application_id="a1", key_id=net.key_id, model_id="m", band_labels=["A", "B"])
    assert code_of(bank.DeliverBand, delivery) == grpc.StatusCode.PERMISSION_DENIED


def test_active_key_ids_retire_old_keys_at_the_bureau(
    net: Net, paillier_keypair: KeyPair, second_paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> None:
    stub = bureau_stub(net, "bank-2")
    old = paillier_keypair
    new = second_paillier_keypair
    stub.RegisterBank(registration("bank-2", old, dgk_keypair), timeout=10)
    stub.RegisterBank(
        registration("bank-2", new, dgk_keypair, active=(old.public_key.key_id, new.public_key.key_id)),
        timeout=10,
    )
    assert set(net.bureau_obj.banks.get("bank-2").keys) == {old.public_key.key_id, new.public_key.key_id}
    stub.RegisterBank(registration("bank-2", new, dgk_keypair, active=(new.public_key.key_id,)), timeout=10)
    assert set(net.bureau_obj.banks.get("bank-2").keys) == {new.public_key.key_id}
    platform = bureau_stub(net, "platform-1")
    gone = pb.GetBankKeyRequest(bank_id="bank-2", key_id=old.public_key.key_id)
    assert code_of(platform.GetBankKey, gone) == grpc.StatusCode.NOT_FOUND
    # The key being registered must be among the active ones.
    bad = registration("bank-2", old, dgk_keypair, active=(new.public_key.key_id,))
    assert code_of(stub.RegisterBank, bad) == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ every RPC, every role


@dataclass(frozen=True)
class Rpc:
    """One RPC of the proto: the roles that may call it, and whether a certificate of such a role
    must also name the right party (the node called, or the party the request is made for)."""

    allowed: frozenset[str]
    request: Callable[[Net], Any]
    party_bound: bool = False


def _application(net: Net) -> Any:
    return pb.EncryptedApplication(
        application_id="roles-1", platform_id="platform-1", bank_id="bank-1", model_id="german-credit-lr",
        key_id=net.key_id, consent_reference="c", count=0, ciphertexts=b"",
    )  # fmt: skip


def _batch(net: Net) -> Any:
    return pb.EncryptedBatch(
        batch_id="b-roles", platform_id="platform-1", bank_id="bank-1", model_id="german-credit-lr",
        key_id=net.key_id, slot_bits=1,
        members=[pb.BatchMember(application_id="roles-b1", consent_reference="c")],
    )  # fmt: skip


BUREAU_ONLY = frozenset({"bureau"})
BANK_CLIENT = frozenset({"bank-client"})
PLATFORMS = frozenset({"platform", "platform-client"})

#: Every RPC of every service in protos/blindscore/v1/blindscore.proto. The requests are not meant
#: to succeed: the role (and party) check comes first, so a caller of another role gets
#: PERMISSION_DENIED whatever it sends, and an allowed caller gets past it (to the answer, or to the
#: request's own refusal, e.g. INVALID_ARGUMENT) without changing any state.
RPCS: dict[str, Rpc] = {
    "Platform.ScoreApplication": Rpc(PLATFORMS, lambda net: pb.ScoreRequest(application_id="roles-p"), True),
    "Platform.ScoreApplications": Rpc(PLATFORMS, lambda net: pb.ScoreRequest(application_id="roles-s"), True),
    "Bureau.RegisterBank": Rpc(
        frozenset({"bank"}),
        # Names bank-1, so only bank-1 gets past the party check; the key then fails to parse.
        lambda net: pb.RegisterBankRequest(bank_id="bank-1", address="127.0.0.1:9", paillier_public_key="{}"),
        True,
    ),
    "Bureau.GetBankKey": Rpc(
        frozenset({"platform"}), lambda net: pb.GetBankKeyRequest(bank_id="bank-1", key_id=net.key_id)
    ),
    "Bureau.GetModelSpec": Rpc(
        frozenset({"platform"}), lambda net: pb.GetModelSpecRequest(model_id="german-credit-lr")
    ),
    "Bureau.SubmitApplication": Rpc(frozenset({"platform"}), _application, True),
    "Bureau.SubmitBatch": Rpc(frozenset({"platform"}), _batch, True),
    "Bank.CompareMasked": Rpc(
        BUREAU_ONLY, lambda net: pb.MaskedRequest(application_id="roles-1", key_id="pk-0", count=1, bits=8)
    ),
    "Bank.CompareBlinded": Rpc(
        BUREAU_ONLY, lambda net: pb.BlindedRequest(application_id="roles-1", key_id="pk-0", count=1, bits=8)
    ),
    "Bank.DeliverBand": Rpc(
        BUREAU_ONLY, lambda net: pb.BandDelivery(application_id="roles-1", key_id="pk-unknown", model_id="m")
    ),
    "Bank.OtSetupStart": Rpc(BUREAU_ONLY, lambda net: pb.OtSetupStartRequest()),
    "Bank.OtSetupFinish": Rpc(BUREAU_ONLY, lambda net: pb.OtSetupChoice(session_id=b"\x00" * 16)),
    "Bank.PackedStart": Rpc(
        BUREAU_ONLY, lambda net: pb.PackedStartRequest(key_id="pk-unknown", application_ids=["roles-1"])
    ),
    "Bank.PackedFinish": Rpc(
        BUREAU_ONLY, lambda net: pb.PackedFinishRequest(key_id=net.key_id, application_ids=["roles-1"])
    ),
    "Bank.CircuitStart": Rpc(
        BUREAU_ONLY, lambda net: pb.CircuitStartRequest(key_id="pk-unknown", application_id="roles-1")
    ),
    "Bank.CircuitFinish": Rpc(
        BUREAU_ONLY, lambda net: pb.CircuitFinishRequest(key_id=net.key_id, application_id="roles-1")
    ),
    "Bank.CircuitReveal": Rpc(
        BUREAU_ONLY, lambda net: pb.CircuitRevealRequest(key_id=net.key_id, application_id="roles-1")
    ),
    "Bank.GetBand": Rpc(BANK_CLIENT, lambda net: pb.GetBandRequest(application_id="roles-1"), True),
    "Bank.WatchBands": Rpc(BANK_CLIENT, lambda net: pb.WatchBandsRequest(), True),
}

#: How long an allowed caller's WatchBands is followed: it streams until the deadline (no band yet).
WATCH_S = 1.0


class Caller:
    """Stubs by (service, party), each over its own mutual-TLS channel, opened once per module."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self._stubs: dict[tuple[str, str], Any] = {}

    def code(self, name: str, party: str) -> grpc.StatusCode:
        """The status of calling RPC ``name`` ("Service.Method") as ``party`` (OK: answered)."""
        service, method = name.split(".")
        if (service, party) not in self._stubs:
            self._stubs[(service, party)] = self.net.stub(service.lower(), party)
        call = getattr(self._stubs[(service, party)], method)
        descriptor = pb.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        request = RPCS[name].request(self.net)
        try:
            if descriptor.client_streaming:
                list(call(iter([request]), timeout=10))
            elif descriptor.server_streaming:
                list(call(request, timeout=WATCH_S if party in RIGHT.values() else 10))
            else:
                call(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def misses(self, name: str) -> list[str]:
        """Where RPC ``name`` does not enforce its table entry: every other role refused with
        PERMISSION_DENIED, an allowed role naming another party too (if party-bound), and each
        allowed role with the right party let through."""
        rpc = RPCS[name]
        found = []
        callers = [(role, RIGHT[role], role in rpc.allowed) for role in RIGHT]
        if rpc.party_bound:
            callers += [(role, WRONG[role], False) for role in rpc.allowed]
        for role, party, admitted in callers:
            code = self.code(name, party)
            refused = code == grpc.StatusCode.PERMISSION_DENIED
            if refused == admitted or code == grpc.StatusCode.UNAUTHENTICATED:
                found.append(f"{name} as {role} {party!r}: {code.name}")
        return found


@pytest.fixture(scope="module")
def caller(net: Net) -> Caller:
    return Caller(net)


def test_the_table_names_every_rpc_of_the_proto() -> None:
    """A new RPC (or service) in the proto fails here until it has an entry, and so a role test."""
    in_proto = {
        f"{service.name}.{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(RPCS) == in_proto
    assert len(in_proto) == 19 and {n.split(".")[0] for n in in_proto} == {"Platform", "Bureau", "Bank"}


@pytest.mark.parametrize("name", sorted(RPCS))
def test_every_rpc_refuses_other_roles_and_parties(caller: Caller, name: str) -> None:
    assert caller.misses(name) == []


@pytest.mark.parametrize(
    ("server", "name"),
    [
        ("blindscore.bank_node.server", "Bank.CompareBlinded"),
        ("blindscore.bureau.server", "Bureau.GetModelSpec"),
    ],
)
def test_the_role_table_catches_a_server_without_its_role_check(
    caller: Caller, monkeypatch: pytest.MonkeyPatch, server: str, name: str
) -> None:
    """Negative control: with require_role reduced to reading the caller's identity (the check
    gone, as if the line had been deleted), the table test finds the callers let through."""

    def unchecked(context: grpc.ServicerContext, *roles: str) -> Any:
        return transport.peer_identity(context)

    monkeypatch.setattr(f"{server}.require_role", unchecked)
    wrongly_admitted = [m for m in caller.misses(name) if "PERMISSION_DENIED" not in m]
    assert len(wrongly_admitted) == 4, wrongly_admitted  # every role but the allowed one
