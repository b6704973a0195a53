"""Over real mutual TLS with two platform certificates: a platform node serves only clients holding
its own certificate, and the bureau's audit trail names the platform a caller's certificate proves,
never the platform id a request claims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from blindscore.data.german import DEFAULT_MODEL_ID
from blindscore.infra.transport import open_channel
from blindscore.protocol.application import Application, EncryptedApplication
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import Nodes as Net
from support import NodesFactory, german_credit, german_model

TIMEOUT = 30


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    """Mutual TLS; platform-2 is a second platform with a certificate of its own but no node here."""
    return module_nodes(
        "binding",
        bank_id="bank-1",
        platform_id="platform-1",
        tls=True,
        extra_parties=[("platform", "platform-2")],
    )


def platform_stub(net: Net, party: str) -> Any:
    security = net.creds(party).expecting("platform", "platform-1")
    return pb_grpc.PlatformStub(open_channel(net.platform, security=security))


def bureau_stub(net: Net, party: str) -> Any:
    return net.stub("bureau", party)


def score_request(net: Net, i: int, app_id: str) -> pb.ScoreRequest:
    rows, _ = german_credit()
    app = Application(app_id, "bank-1", DEFAULT_MODEL_ID, net.key_id, f"consent-{app_id}", rows[i])
    return serde.application_to_proto(app)


def submission(net: Net, i: int, app_id: str, platform_id: str) -> pb.EncryptedApplication:
    rows, _ = german_credit()
    key = net.bank_node.keypair.public_key
    ciphertexts = tuple(key.encrypt(v) for v in german_model().spec.encode_row(rows[i]))
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
