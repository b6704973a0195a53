"""Roles over real mutual TLS: who may register a bank, submit, or call the band protocol; key retirement."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from blindscore.crypto.dgk import DGKKeyPair
from blindscore.crypto.paillier import KeyPair
from blindscore.infra.transport import open_channel
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc
from blindscore.wire import serde

from support import Nodes as Net
from support import NodesFactory


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    """Bureau and bank over mutual TLS; bank-2 and platform-1 have certificates but no node."""
    return module_nodes(
        "roles",
        bank_id="bank-1",
        platform_id="platform-1",
        tls=True,
        extra_parties=[("bank", "bank-2")],
        platform=False,
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
