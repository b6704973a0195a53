"""Over real mutual TLS with two platform certificates: a platform node serves only clients holding
its own certificate, and the bureau's audit trail names the platform a caller's certificate proves,
never the platform id a request claims."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from blindscore.bank_node.flow import BankNode
from blindscore.bank_node.server import register_with_bureau, start_bank_server
from blindscore.bank_node.store import ResultStore
from blindscore.bureau.flow import Bureau
from blindscore.bureau.server import start_bureau_server
from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.data.german import DEFAULT_MODEL_ID, default_model, load_german_credit
from blindscore.infra.certs import init_pki
from blindscore.infra.transport import TransportSecurity, open_channel
from blindscore.platform_node.bureau_link import GrpcBureauLink
from blindscore.platform_node.flow import PlatformNode
from blindscore.platform_node.server import start_platform_server
from blindscore.protocol.application import Application, EncryptedApplication
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

TIMEOUT = 30


@dataclass
class Net:
    platform: str  # the node of platform-1
    bureau: str
    bank_node: BankNode
    bureau_obj: Bureau
    platform_obj: PlatformNode
    key_id: str
    creds: Callable[[str], TransportSecurity]


@pytest.fixture(scope="module")
def net(
    tmp_path_factory: pytest.TempPathFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("binding")
    pki = tmp / "pki"
    init_pki(
        pki,
        [("bureau", "bureau-1"), ("bank", "bank-1"), ("platform", "platform-1"), ("platform", "platform-2")],
    )

    def creds(party: str) -> TransportSecurity:
        return TransportSecurity.from_pki(pki, party)

    bureau = Bureau.open(tmp / "bureau")
    bureau_server, bureau_port, channels = start_bureau_server(
        bureau, "127.0.0.1:0", security=creds("bureau-1")
    )
    bank = BankNode("bank-1", paillier_keypair, dgk_keypair, ResultStore(tmp / "bank.sqlite3"))
    bank_server, bank_port = start_bank_server(bank, "127.0.0.1:0", security=creds("bank-1"))
    bureau_addr, bank_addr = f"127.0.0.1:{bureau_port}", f"127.0.0.1:{bank_port}"
    key_id = register_with_bureau(bank, bureau_addr, bank_addr, security=creds("bank-1"))
    channel = open_channel(bureau_addr, security=creds("platform-1").expecting("bureau", "bureau-1"))
    platform = PlatformNode("platform-1", GrpcBureauLink(channel))
    platform_server, platform_port = start_platform_server(
        platform, "127.0.0.1:0", security=creds("platform-1")
    )
    yield Net(f"127.0.0.1:{platform_port}", bureau_addr, bank, bureau, platform, key_id, creds)
    for server in (platform_server, bank_server, bureau_server):
        server.stop(None)
    platform.close()
    channel.close()
    channels.close()
    bureau.close()


def platform_stub(net: Net, party: str) -> Any:
    security = net.creds(party).expecting("platform", "platform-1")
    return pb_grpc.PlatformStub(open_channel(net.platform, security=security))


def bureau_stub(net: Net, party: str) -> Any:
    return pb_grpc.BureauStub(open_channel(net.bureau, security=net.creds(party).expecting("bureau")))


def score_request(net: Net, i: int, app_id: str) -> pb.ScoreRequest:
    rows, _ = load_german_credit()
    app = Application(app_id, "bank-1", DEFAULT_MODEL_ID, net.key_id, f"consent-{app_id}", rows[i])
    return serde.application_to_proto(app)


def submission(net: Net, i: int, app_id: str, platform_id: str) -> pb.EncryptedApplication:
    rows, _ = load_german_credit()
    key = net.bank_node.keypair.public_key
    ciphertexts = tuple(key.encrypt(v) for v in default_model().spec.encode_row(rows[i]))
    app = EncryptedApplication(
        app_id, platform_id, "bank-1", DEFAULT_MODEL_ID, key.key_id, f"consent-{app_id}", ciphertexts
    )
    return serde.encrypted_application_to_proto(app, key)


def refused(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def audited(net: Net, app_id: str) -> list[tuple[str, str]]:
    """(platform id, outcome) of every audit record of ``app_id``, in order."""
    assert net.bureau_obj.audit is not None
    return [(r.platform_id, r.outcome) for r in net.bureau_obj.audit.records() if r.application_id == app_id]


def no_band(net: Net, app_id: str) -> bool:
    return net.bank_node.store.get(app_id) is None


# ------------------------------------------------------------------------------ the platform node


def test_another_platforms_certificate_cannot_score_through_this_node(net: Net) -> None:
    """platform-2's certificate used to score through platform-1's node, audited as platform-1."""
    stub = platform_stub(net, "platform-2")
    code, text = refused(lambda: stub.ScoreApplication(score_request(net, 1, "bind-1"), timeout=TIMEOUT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert text == "platform 'platform-2' may not score through the node of platform 'platform-1'"
    code, text = refused(
        lambda: list(stub.ScoreApplications(iter([score_request(net, 2, "bind-2")]), timeout=TIMEOUT))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'platform-2'" in text and "'platform-1'" in text
    for app_id in ("bind-1", "bind-2"):
        assert no_band(net, app_id)
        assert net.platform_obj.outbox.get(app_id) is None
        assert audited(net, app_id) == []


def test_another_role_cannot_score_through_the_platform_node(net: Net) -> None:
    stub = platform_stub(net, "bank-1")
    code, _ = refused(lambda: stub.ScoreApplication(score_request(net, 1, "bind-bank"), timeout=TIMEOUT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert no_band(net, "bind-bank")


def test_the_platforms_own_certificate_scores_and_is_audited_as_itself(net: Net) -> None:
    stub = platform_stub(net, "platform-1")
    receipt = stub.ScoreApplication(score_request(net, 3, "bind-own"), timeout=TIMEOUT)
    assert receipt.accepted and not no_band(net, "bind-own")
    receipts = list(stub.ScoreApplications(iter([score_request(net, 4, "bind-own-s")]), timeout=TIMEOUT))
    assert [r.accepted for r in receipts] == [True]
    assert audited(net, "bind-own") == [("platform-1", "ACCEPTED"), ("platform-1", "OK")]
    assert audited(net, "bind-own-s") == [("platform-1", "ACCEPTED"), ("platform-1", "OK")]


# ------------------------------------------------------------------------------ the bureau's audit trail


def test_a_refused_submission_is_audited_under_the_callers_certified_platform(net: Net) -> None:
    """platform-2 claiming to be platform-1 is refused, and the record names platform-2 (it used to
    name platform-1, the claimed id: the trail blamed the platform that was impersonated)."""
    msg = submission(net, 5, "claim-1", platform_id="platform-1")
    code, text = refused(lambda: bureau_stub(net, "platform-2").SubmitApplication(msg, timeout=TIMEOUT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert text == "platform 'platform-2' may not submit as platform 'platform-1'"
    assert audited(net, "claim-1") == [("platform-2", "PERMISSION_DENIED")]
    assert no_band(net, "claim-1")


def test_a_caller_of_another_role_is_audited_as_role_and_party(net: Net) -> None:
    msg = submission(net, 6, "claim-bank", platform_id="platform-1")
    code, _ = refused(lambda: bureau_stub(net, "bank-1").SubmitApplication(msg, timeout=TIMEOUT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert audited(net, "claim-bank") == [("bank/bank-1", "PERMISSION_DENIED")]


def test_an_accepted_submission_is_audited_under_the_callers_platform(net: Net) -> None:
    msg = submission(net, 7, "claim-own", platform_id="platform-2")
    receipt = bureau_stub(net, "platform-2").SubmitApplication(msg, timeout=TIMEOUT)
    assert receipt.accepted
    assert audited(net, "claim-own") == [("platform-2", "ACCEPTED"), ("platform-2", "OK")]
    assert net.bureau_obj.audit is not None and net.bureau_obj.audit.verify().ok
