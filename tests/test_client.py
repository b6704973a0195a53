"""blindscore.Client and the bank's own systems over real mutual TLS: client roles, band reads, the CLI."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindscore.app.cli import main
from blindscore.app.client import Client
from blindscore.bank_node.bands import OVERLAP_S, band_of, follow_bands
from blindscore.bank_node.client import BankClient, band_from_proto
from blindscore.bank_node.server import band_to_proto
from blindscore.bank_node.store import BandRecord, ResultStore
from blindscore.data.german import DEFAULT_MODEL_ID
from blindscore.errors import (
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    UnavailableError,
)
from blindscore.infra.certs import Identity, load_identity
from blindscore.infra.transport import TransportSecurity, client_security, open_channel
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

from support import Nodes as Net
from support import NodesFactory, german_credit
from waiting import wait_for

CLIENTS = [
    ("platform-client", "app-1", "platform-a"),
    ("platform-client", "app-other", "platform-b"),
    ("bank-client", "loans-1", "bank-a"),
    ("bank-client", "loans-other", "bank-b"),
]


@pytest.fixture(scope="module")
def net(module_nodes: NodesFactory) -> Net:
    return module_nodes("client", bank_id="bank-a", platform_id="platform-a", tls=True, extra_parties=CLIENTS)


@pytest.fixture(scope="module")
def pki(net: Net) -> Path:
    return net.directory / "pki"


def rows(first: int, count: int, prefix: str) -> list[dict[str, Any]]:
    german, _ = german_credit()
    return [{"application_id": f"{prefix}-{i}", **german[i]} for i in range(first, first + count)]


def client(net: Net, pki: Path, client_id: str = "app-1", **options: Any) -> Client:
    return Client(
        net.platform,
        certs=pki,
        client_id=client_id,
        bank_id="bank-a",
        key_id=net.key_id,
        model_id=DEFAULT_MODEL_ID,
        **options,
    )


def code_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


# ---------------------------------------------------------------------- the happy path


def test_client_submits_and_the_bank_client_reads_each_band(
    net: Net, pki: Path, default_german_model: Any
) -> None:
    data = rows(0, 4, "happy")
    with client(net, pki) as c:
        outcomes = c.submit(data, consent_reference="consent-2026")
    assert [o.application_id for o in outcomes] == [r["application_id"] for r in data]  # input order
    assert {o.status for o in outcomes} == {"accepted"} and all(o.error == "" for o in outcomes)
    with BankClient(net.bank, certs=pki, client_id="loans-1") as bank:
        for row in data:
            band = bank.band(row["application_id"])
            features = {k: v for k, v in row.items() if k != "application_id"}
            assert band.band == default_german_model.band(features)
            assert band.band_label == default_german_model.policy.labels[band.band]
            assert (band.platform_id, band.model_id, band.key_id) == (
                "platform-a",
                DEFAULT_MODEL_ID,
                net.key_id,
            )
        with pytest.raises(NotFoundError, match="holds no band for application 'never-sent'"):
            bank.band("never-sent")
        with pytest.raises(InvalidInputError, match="application_id"):
            bank.band("bad id with spaces")


def test_a_dataframe_with_missing_consent_is_refused_before_sending(net: Net, pki: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rows(10, 2, "frame"))
    with client(net, pki) as c:
        with pytest.raises(InvalidInputError, match=r"row 1 \(frame-10\): no consent reference"):
            c.submit(frame)
        frame["consent_reference"] = ["c-10", "c-11"]
        outcomes = c.submit(frame)
    assert [(o.application_id, o.status) for o in outcomes] == [
        ("frame-10", "accepted"),
        ("frame-11", "accepted"),
    ]
    assert net.bank_node.store.get("frame-11") is not None


def test_a_refused_application_is_an_outcome_and_the_others_go_through(net: Net, pki: Path) -> None:
    data = rows(20, 2, "mixed")
    data[1]["purpose"] = "space travel"  # a category the model has never seen
    with client(net, pki) as c:
        outcomes = c.submit(data, consent_reference="c")
    assert [o.status for o in outcomes] == ["accepted", "refused"]
    assert (
        outcomes[1].error.startswith("INVALID_ARGUMENT: ")
        and "unseen category 'space travel'" in outcomes[1].error
    )


def test_watch_replays_then_follows_new_bands(net: Net, pki: Path) -> None:
    start = time.time()
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        with BankClient(net.bank, certs=pki, client_id="loans-1") as bank:
            for band in bank.watch(since=start, timeout=60):
                seen.append(band.application_id)
                if len(seen) == 3:
                    done.set()
                    return

    thread = threading.Thread(target=follow)
    with client(net, pki) as c:
        assert c.submit(rows(30, 1, "watch"), consent_reference="c")[0].status == "accepted"
        thread.start()  # after the first band: the stream must replay it
        # The replayed band has arrived, so the stream is open: the next two are followed live.
        wait_for(lambda: seen == ["watch-30"], what="the watch stream to replay the first band")
        assert [o.status for o in c.submit(rows(31, 2, "watch"), consent_reference="c")] == ["accepted"] * 2
    assert done.wait(30)
    thread.join(10)
    assert sorted(seen) == ["watch-30", "watch-31", "watch-32"]


def test_submit_to_an_unreachable_platform_fails_in_one_sentence(pki: Path, net: Net) -> None:
    c = Client(
        "127.0.0.1:1", certs=pki, client_id="app-1", bank_id="bank-a", key_id=net.key_id,
        model_id=DEFAULT_MODEL_ID, connect_timeout=0.5,
    )  # fmt: skip
    with (
        c,
        pytest.raises(
            UnavailableError, match=r"^the platform at 127\.0\.0\.1:1 did not answer within 0\.5 s"
        ),
    ):
        c.submit(rows(0, 1, "nowhere"), consent_reference="c")


# ---------------------------------------------------------------------- roles over mutual TLS


def test_a_platform_client_may_only_submit_to_its_own_platform(net: Net, pki: Path) -> None:
    own = TransportSecurity.from_pki(pki, "app-1")
    bureau = pb_grpc.BureauStub(open_channel(net.bureau, security=own.expecting("bureau")))
    spec = pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID)
    assert code_of(bureau.GetModelSpec, spec)[0] == grpc.StatusCode.PERMISSION_DENIED
    bank = pb_grpc.BankStub(open_channel(net.bank, security=own.expecting("bank")))
    masked = pb.MaskedRequest(application_id="a1", key_id=net.key_id, count=1, bits=8, ciphertext=b"x")
    assert code_of(bank.CompareMasked, masked)[0] == grpc.StatusCode.PERMISSION_DENIED
    code, text = code_of(bank.GetBand, pb.GetBandRequest(application_id="happy-0"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "allowed: bank-client" in text
    # Another platform's client does not even take this node for its platform (the server name is
    # pinned to the platform it serves) ...
    other = client(net, pki, client_id="app-other", connect_timeout=1)
    with other, pytest.raises(UnavailableError, match="did not answer within 1 s"):
        other.submit(rows(40, 1, "other"), consent_reference="c")
    # ... and the node refuses it when it is asked anyway.
    stranger = TransportSecurity.from_pki(pki, "app-other").expecting("platform")
    code, text = code_of(
        pb_grpc.PlatformStub(open_channel(net.platform, security=stranger)).ScoreApplication,
        pb.ScoreRequest(application_id="other-40"),
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert text == "platform-client 'app-other' serves platform 'platform-b', not 'platform-a'"
    assert net.bank_node.store.get("other-40") is None
    # ... while the platform's own certificate still scores through it.
    platform = pb_grpc.PlatformStub(
        open_channel(net.platform, security=net.creds("platform-a").expecting("platform"))
    )
    german, _ = german_credit()
    request = pb.ScoreRequest(
        application_id="own-cert", bank_id="bank-a", model_id=DEFAULT_MODEL_ID, key_id=net.key_id,
        consent_reference="c", features={k: pb.FeatureValue(number=v) if isinstance(v, int) else
                                         pb.FeatureValue(text=v) for k, v in german[41].items()},
    )  # fmt: skip
    assert platform.ScoreApplication(request, timeout=60).accepted


def test_a_bank_client_may_only_read_its_own_bank(net: Net, pki: Path) -> None:
    reader = TransportSecurity.from_pki(pki, "loans-1")
    platform = pb_grpc.PlatformStub(open_channel(net.platform, security=reader.expecting("platform")))
    code, text = code_of(platform.ScoreApplication, pb.ScoreRequest(application_id="x"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "allowed: platform, platform-client" in text
    bank = pb_grpc.BankStub(open_channel(net.bank, security=reader.expecting("bank")))
    delivery = pb.BandDelivery(application_id="a1", key_id=net.key_id, model_id="m", band_labels=["A", "B"])
    assert code_of(bank.DeliverBand, delivery)[0] == grpc.StatusCode.PERMISSION_DENIED
    bureau = pb_grpc.BureauStub(open_channel(net.bureau, security=reader.expecting("bureau")))
    key = pb.GetBankKeyRequest(bank_id="bank-a", key_id=net.key_id)
    assert code_of(bureau.GetBankKey, key)[0] == grpc.StatusCode.PERMISSION_DENIED
    reader_b = BankClient(net.bank, certs=pki, client_id="loans-other", timeout=2)
    with reader_b, pytest.raises(UnavailableError, match=f"bank at {net.bank}: "):
        reader_b.band("happy-0")  # pinned to bank-b's name: no TLS session with bank-a
    stranger = TransportSecurity.from_pki(pki, "loans-other").expecting("bank")
    other_stub = pb_grpc.BankStub(open_channel(net.bank, security=stranger))
    code, text = code_of(other_stub.GetBand, pb.GetBandRequest(application_id="happy-0"))
    assert (code, text) == (
        grpc.StatusCode.PERMISSION_DENIED, "bank-client 'loans-other' serves bank 'bank-b', not 'bank-a'"
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        next(other_stub.WatchBands(pb.WatchBandsRequest(), timeout=10))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The bank's node certificate is no bank-client either.
    node = pb_grpc.BankStub(open_channel(net.bank, security=net.creds("bank-a").expecting("bank")))
    assert code_of(node.GetBand, pb.GetBandRequest(application_id="happy-0"))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_client_certificates_name_what_they_serve_and_cannot_serve(pki: Path) -> None:
    pem = (pki / "app-1.pem").read_bytes()
    assert load_identity(pem) == Identity("platform-client", "app-1", "platform-a")
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert = x509.load_pem_x509_certificate(pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [] and san.get_values_for_type(x509.IPAddress) == []
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "blindscore://platform-client/platform-a/app-1"
    ]
    with pytest.raises(InvalidInputError, match="must name the platform it serves"):
        Identity("platform-client", "app-2")
    with pytest.raises(InvalidInputError, match="serves no other party"):
        Identity("bank", "bank-9", "bank-a")
    with pytest.raises(
        InvalidInputError, match=r"holds several bank-client certificates \(loans-1, loans-other\): name one"
    ):
        client_security(pki, "bank-client")
    with pytest.raises(
        InvalidInputError, match=r"'loans-1' in .* is a bank-client certificate, not a platform-client"
    ):
        client_security(pki, "platform-client", "loans-1")


# ---------------------------------------------------------------------- the flows without transport


def record(app_id: str, at: float, platform: str = "p1", band: int = 1) -> BandRecord:
    return BandRecord(app_id, "m", "k", band, "B", at, platform, "bureau-1")


def test_band_of_needs_the_platform_when_two_used_the_id(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite3")
    store.put(record("a", 100.0, "p1", 1))
    store.put(record("a", 101.0, "p2", 2))
    with pytest.raises(PreconditionError, match=r"came from several platforms \(p1, p2\); name one"):
        band_of(store, "a")
    assert band_of(store, "a", "p2").band == 2
    with pytest.raises(NotFoundError, match="no band for application 'a' from platform 'p3'"):
        band_of(store, "a", "p3")
    store.close()


def test_follow_bands_yields_each_once_and_catches_late_commits(tmp_path: Path) -> None:
    """A band stamped before the last one sent but committed after it is still yielded, once.
    Negative control: one stamped before the overlap window is not (it is out of reach)."""
    store = ResultStore(tmp_path / "r.sqlite3")
    store.put(record("old", 10.0))
    store.put(record("a", 1000.0))
    store.put(record("b", 1001.0))
    looks = [0]
    late = [record("late", 1000.5), record("too-late", 1001.0 - OVERLAP_S - 1)]

    def sleep(_: float) -> None:
        looks[0] += 1
        if late:
            store.put(late.pop(0))

    got = [r.application_id for r in follow_bands(store, 500.0, active=lambda: looks[0] < 4, sleep=sleep)]
    assert got == ["a", "b", "late"]
    with pytest.raises(InvalidInputError, match="since must be a time"):
        next(follow_bands(store, float("nan"), active=lambda: True))
    store.close()


def test_band_result_round_trip() -> None:
    rec = record("x", 1234.5, "p9", 3)
    band = band_from_proto(band_to_proto(rec))
    assert (band.application_id, band.platform_id, band.model_id, band.band, band.band_label) == (
        "x", "p9", "m", 3, "B"
    )  # fmt: skip
    assert (band.received_at, band.bureau_id, band.key_id) == (1234.5, "bureau-1", "k")


# ---------------------------------------------------------------------- the command line


def test_certs_init_makes_client_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    argv = ["certs", "init", str(d), "--platform-client", "app-1", "--bank-client", "loans-1"]
    assert main(argv) == 0
    assert "platform-client app-1            (of platform-1)" in capsys.readouterr().out
    assert load_identity((d / "loans-1.pem").read_bytes()) == Identity("bank-client", "loans-1", "bank-1")
    two = ["certs", "init", str(tmp_path / "p2"), "--platform-id", "p1", "--platform-id", "p2"]
    assert main([*two, "--platform-client", "app-1"]) == 2
    assert (
        "--platform-client app-1: name the platform it serves, as app-1@PLATFORM" in capsys.readouterr().err
    )
    assert main([*two, "--platform-client", "app-1@p3"]) == 2
    assert "'p3' is not one of this PKI's ids (p1, p2)" in capsys.readouterr().err
    assert main(["certs", "add", str(d), "--role", "platform-client", "--id", "app-2"]) == 2
    assert "needs --serves" in capsys.readouterr().err
    assert (
        main(["certs", "add", str(d), "--role", "platform-client", "--id", "app-2", "--serves", "platform-1"])
        == 0
    )
    assert load_identity((d / "app-2.pem").read_bytes()).serves == "platform-1"


def test_submit_band_and_watch_commands(
    net: Net, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = rows(50, 2, "cli")
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    base = ["submit", "--platform", net.platform, "--input", str(path), "--certs", str(pki),
            "--client-id", "app-1", "--bank-id", "bank-a", "--key-id", net.key_id,
            "--model-id", DEFAULT_MODEL_ID]  # fmt: skip
    assert main([*base, "--consent", "c-cli"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "application_id,status,model_version,error"
    assert [line.split(",")[:2] for line in lines[1:]] == [["cli-50", "accepted"], ["cli-51", "accepted"]]
    assert "2 accepted, 0 pending, 0 refused" in out.err
    # No consent: a one-sentence error and exit 2, nothing sent.
    assert main(base) == 2
    assert "row 1 (cli-50): no consent reference" in capsys.readouterr().err
    unreachable = [*base, "--consent", "c"]
    unreachable[2] = "127.0.0.1:1"
    assert main([*unreachable, "--connect-timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("blindscore: error: the platform at 127.0.0.1:1 did not answer")
        and err.count("\n") == 1
    )
    missing = [*base, "--consent", "c"]
    missing[4] = str(tmp_path / "nope.csv")
    assert main(missing) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err

    reader = ["--bank", net.bank, "--certs", str(pki), "--client-id", "loans-1"]
    assert main(["bank", "band", *reader, "--id", "cli-51"]) == 0
    band_line = capsys.readouterr().out.splitlines()[1].split(",")
    assert band_line[:3] == ["platform-a", "cli-51", DEFAULT_MODEL_ID]
    assert band_line[3] == str(net.bank_node.store.get("cli-51").band)  # type: ignore[union-attr]
    assert main(["bank", "band", *reader, "--id", "cli-99"]) == 2
    assert "holds no band for application 'cli-99'" in capsys.readouterr().err
    # The bands of one stream need not be stamped in submission order: start at the earlier one.
    since = min(net.bank_node.store.get(i).received_at for i in ("cli-50", "cli-51"))  # type: ignore[union-attr]
    code = main(["bank", "watch", *reader, "--since", repr(since), "--count", "2", "--timeout", "30"])
    out = capsys.readouterr()
    assert code == 0, out.err
    watched = out.out.splitlines()
    assert sorted(line.split(",")[1] for line in watched[1:]) == ["cli-50", "cli-51"]
