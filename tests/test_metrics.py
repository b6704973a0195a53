"""Prometheus metrics: real nodes in-process scraped over HTTP, the interceptor's status codes, the flag."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blindscore.app.client import score_applications, score_one
from blindscore.data.german import DEFAULT_MODEL_ID, load_german_credit
from blindscore.errors import InvalidInputError
from blindscore.infra.metrics import MAX_STAGES, MetricsServer, NodeMetrics, start_metrics_server
from blindscore.infra.transport import create_server, open_channel
from blindscore.protocol.application import Application
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

from support import NodesFactory
from waiting import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

UNARY = 2  # applications scored one by one (SubmitApplication, DGK rounds) by the `traffic` fixture
SCORED = UNARY + 1  # and one more over a stream, as a packed batch of one (SubmitBatch)
APP_PREFIX = "metrics-app-"
CONSENT_PREFIX = "metrics-consent-"


def scrape(url: str) -> Samples:
    """Fetch a /metrics page and parse it with prometheus_client's own text-format parser."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one series, 0.0 if it was never created."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Traffic:
    bureau: Samples
    bank: Samples
    platform: Samples
    health_checked: bool


@pytest.fixture(scope="module")
def traffic(module_nodes: NodesFactory) -> Iterator[Traffic]:
    """Three nodes with metrics on, some successful and some refused calls, then one scrape each."""
    metrics = {role: NodeMetrics(role) for role in ("bureau", "bank", "platform")}
    exporters = {role: start_metrics_server(m, 0) for role, m in metrics.items()}
    # The circuit band for unary applications: its bank calls and stages are what is counted here
    # (the DGK rounds' metrics are the same code path, by other names).
    net = module_nodes(
        "metrics", bank_id="bank-m", platform_id="platform-m", metrics=metrics, band_protocol="circuit"
    )
    bureau_addr, platform_addr, key_id, bank = net.bureau, net.platform, net.key_id, net.bank_node
    rows, _ = load_german_credit()

    def app(i: int, model_id: str = DEFAULT_MODEL_ID) -> Application:
        return Application(f"{APP_PREFIX}{i}", "bank-m", model_id, key_id, f"{CONSENT_PREFIX}{i}", rows[i])

    try:
        # Two unary scores and a stream of one (a packed batch): SCORED applications in all.
        assert score_one(platform_addr, app(0)).accepted
        assert score_one(platform_addr, app(1)).accepted
        outcomes = score_applications(platform_addr, [app(2)])
        assert [o.accepted for o in outcomes] == [True]
        # Refused: an unknown model through the platform (the bureau's GetModelSpec says NOT_FOUND) ...
        with pytest.raises(grpc.RpcError) as info:
            score_one(platform_addr, app(4, model_id="no-such-model"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # ... the same inside a stream (the stream itself ends OK; the item is refused) ...
        (streamed,) = score_applications(platform_addr, [app(7, model_id="no-such-model")])
        assert not streamed.accepted and streamed.error.startswith("NOT_FOUND")
        # ... and one straight to the bureau's SubmitApplication, and a band for an unknown bank key.
        key = bank.keypair.public_key
        refused = pb.EncryptedApplication(
            application_id=f"{APP_PREFIX}5", platform_id="platform-m", bank_id="bank-m",
            model_id="no-such-model", key_id=key_id, consent_reference=f"{CONSENT_PREFIX}5", count=1,
            ciphertexts=key.pack([key.encrypt(1)]),
        )  # fmt: skip
        with open_channel(bureau_addr) as channel:
            stub: Any = pb_grpc.BureauStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitApplication(refused, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # Health checks are not blindscore RPCs and must not show up as a method.
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health: Any = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        with open_channel(net.bank) as channel:
            bank_stub: Any = pb_grpc.BankStub(channel)
            band = pb.BandDelivery(
                application_id=f"{APP_PREFIX}6", key_id="pk-" + "1" * 32, model_id="m", band_labels=["A"]
            )
            with pytest.raises(grpc.RpcError) as info:
                bank_stub.DeliverBand(band, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        yield Traffic(
            bureau=scrape(exporters["bureau"].url),
            bank=scrape(exporters["bank"].url),
            platform=scrape(exporters["platform"].url),
            health_checked=status == health_pb2.HealthCheckResponse.SERVING,
        )
    finally:
        for exporter in exporters.values():
            exporter.close()


def test_bureau_counts_requests_errors_and_stages(traffic: Traffic) -> None:
    s = traffic.bureau
    req, err = "blindscore_requests_total", "blindscore_request_errors_total"
    assert value(s, req, node="bureau", method="SubmitApplication") == UNARY + 1
    assert value(s, req, node="bureau", method="SubmitBatch") == SCORED - UNARY
    assert value(s, err, node="bureau", method="SubmitApplication", code="NOT_FOUND") == 1
    # The platform fetched the default model's spec once (then cached it) and the unknown one twice.
    assert value(s, req, node="bureau", method="GetModelSpec") == 3
    assert value(s, err, node="bureau", method="GetModelSpec", code="NOT_FOUND") == 2
    assert value(s, req, node="bureau", method="GetBankKey") == 1
    assert value(s, req, node="bureau", method="RegisterBank") == 1
    errors = {dict(labels)["method"]: v for (name, labels), v in s.items() if name == err}
    assert errors == {"SubmitApplication": 1, "GetModelSpec": 2}
    for method in ("SubmitApplication", "GetModelSpec", "GetBankKey", "RegisterBank"):
        count = value(s, "blindscore_request_seconds_count", node="bureau", method=method)
        assert count == value(s, req, node="bureau", method=method)
        assert value(s, "blindscore_request_seconds_bucket", node="bureau", method=method, le="+Inf") == count
    assert value(s, "blindscore_request_seconds_sum", node="bureau", method="SubmitApplication") > 0
    # Each scored application observes each stage once; a refused one observes none. The bank's
    # calls are timed as round trips by the bureau itself: the bank sends no timings of its own.
    # Unary applications take the circuit band (band_protocol="circuit" above).
    for stage in (
        "roundtrip.bank.circuit_start",
        "roundtrip.bank.circuit_finish",
        "roundtrip.bank.circuit_reveal",
    ):
        assert value(s, "blindscore_stage_seconds_count", node="bureau", stage=stage) == UNARY, stage
    # The batch: its stages once (per batch); garbling for every unary application and the batch;
    # one base-OT setup of the bureau-bank session, which both paths share.
    for stage in ("roundtrip.bank.packed_start", "roundtrip.bank.packed_finish", "roundtrip.bank.ot_setup"):
        assert value(s, "blindscore_stage_seconds_count", node="bureau", stage=stage) == 1, stage
    assert value(s, "blindscore_stage_seconds_count", node="bureau", stage="bureau.garble") == UNARY + 1
    dgk = {"bureau.round1", "bureau.round2", "bureau.finish", "roundtrip.bank.round1"}
    assert not dgk & {
        dict(labels)["stage"] for (name, labels) in s if name == "blindscore_stage_seconds_count"
    }
    told = {dict(labels)["stage"] for (name, labels) in s if name == "blindscore_stage_seconds_count"}
    assert not {t for t in told if t.startswith(("bank.", "transport.bank."))}, told
    assert value(s, "blindscore_stage_seconds_count", node="bureau", stage="bureau.evaluate") == SCORED
    assert value(s, "blindscore_stage_seconds_sum", node="bureau", stage="bureau.evaluate") > 0
    assert value(s, "blindscore_in_flight_requests", node="bureau") == 0
    assert traffic.health_checked
    methods = {dict(labels).get("method") for (_, labels) in s}
    assert "Check" not in methods


def test_bank_counts_its_own_stages(traffic: Traffic) -> None:
    s = traffic.bank
    req = "blindscore_requests_total"
    assert value(s, req, node="bank", method="CircuitStart") == UNARY
    assert value(s, req, node="bank", method="CircuitFinish") == UNARY
    assert value(s, req, node="bank", method="CircuitReveal") == UNARY
    assert value(s, req, node="bank", method="DeliverBand") == 1  # the refused one below
    for method in ("CompareMasked", "CompareBlinded"):
        assert value(s, req, node="bank", method=method) == 0, method
    for method in ("OtSetupStart", "OtSetupFinish", "PackedStart", "PackedFinish"):
        assert value(s, req, node="bank", method=method) == 1, method
    err = "blindscore_request_errors_total"
    assert value(s, err, node="bank", method="DeliverBand", code="NOT_FOUND") == 1
    for stage in ("bank.circuit_start", "bank.circuit_finish", "bank.circuit_reveal"):  # not the refused one
        assert value(s, "blindscore_stage_seconds_count", node="bank", stage=stage) == UNARY, stage
    assert value(s, "blindscore_stage_seconds_count", node="bank", stage="bank.ot_setup") == 2
    for stage in ("bank.packed_start", "bank.packed_finish"):
        assert value(s, "blindscore_stage_seconds_count", node="bank", stage=stage) == 1, stage
    stages = {dict(labels)["stage"] for (name, labels) in s if name == "blindscore_stage_seconds_count"}
    packed = {"bank.ot_setup", "bank.packed_start", "bank.packed_finish"}
    assert stages == {"bank.circuit_start", "bank.circuit_finish", "bank.circuit_reveal"} | packed


def test_platform_counts_unary_and_stream_calls(traffic: Traffic) -> None:
    s = traffic.platform
    req = "blindscore_requests_total"
    assert value(s, req, node="platform", method="ScoreApplication") == 3
    err = "blindscore_request_errors_total"
    assert value(s, err, node="platform", method="ScoreApplication", code="NOT_FOUND") == 1
    assert value(s, req, node="platform", method="ScoreApplications") == 2  # two streams, counted at the end
    assert value(s, err, node="platform", method="ScoreApplications", code="NOT_FOUND") == 0
    assert value(s, "blindscore_request_seconds_count", node="platform", method="ScoreApplications") == 2
    # Per application, streamed or not: the refused stream item is counted here.
    apps = "blindscore_applications_total"
    assert value(s, apps, node="platform", outcome="accepted") == SCORED
    assert value(s, apps, node="platform", outcome="NOT_FOUND") == 2
    # The platform records the stages it measured itself, not those the bureau reported to it.
    stages = {dict(labels)["stage"] for (name, labels) in s if name == "blindscore_stage_seconds_count"}
    assert stages == {"platform.encrypt", "transport.platform.submit"}
    assert value(s, "blindscore_stage_seconds_count", node="platform", stage="platform.encrypt") == SCORED


def test_labels_are_bounded_and_carry_no_data(traffic: Traffic) -> None:
    allowed = {"node", "method", "code", "stage", "le", "outcome"}
    for role, samples in (("bureau", traffic.bureau), ("bank", traffic.bank), ("platform", traffic.platform)):
        assert samples, role
        for name, labels in samples:
            if not name.startswith("blindscore_"):
                continue  # the client library's own process and platform series
            as_dict = dict(labels)
            assert set(as_dict) <= allowed, (name, as_dict)
            assert as_dict["node"] == role
            for label_value in as_dict.values():
                assert APP_PREFIX not in label_value and CONSENT_PREFIX not in label_value
                assert "platform-m" not in label_value and "bank-m" not in label_value
                assert "no-such-model" not in label_value


# ---------------------------------------------------------------------- the interceptor, call by call

PROBE = "blindscore.test.Probe"


def _probe_handler() -> grpc.GenericRpcHandler:
    """A small real service whose methods end in each way a blindscore servicer can end."""

    def ok(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def aborts(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")

    def crashes(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("bug")

    def sets_code(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        return b""

    def stream_ok(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    def stream_aborts(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests
        context.abort(grpc.StatusCode.ALREADY_EXISTS, "dup")

    def stream_forever(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        while True:
            yield b"x"
            time.sleep(0.01)

    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Aborts": grpc.unary_unary_rpc_method_handler(aborts),
        "Crashes": grpc.unary_unary_rpc_method_handler(crashes),
        "SetsCode": grpc.unary_unary_rpc_method_handler(sets_code),
        "StreamOk": grpc.unary_stream_rpc_method_handler(stream_ok),
        "StreamAborts": grpc.stream_stream_rpc_method_handler(stream_aborts),
        "StreamForever": grpc.unary_stream_rpc_method_handler(stream_forever),
    }
    return grpc.method_handlers_generic_handler(PROBE, handlers)


def _sample(metrics: NodeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"node": "bank", **labels}) or 0.0


def test_interceptor_records_the_status_of_each_ending() -> None:
    metrics = NodeMetrics("bank")
    server, port = create_server(
        "127.0.0.1:0", [lambda s: s.add_generic_rpc_handlers((_probe_handler(),))], metrics=metrics
    )
    channel = open_channel(f"127.0.0.1:{port}")
    try:

        def call(method: str, kind: str = "unary_unary") -> Any:
            return getattr(channel, kind)(f"/{PROBE}/{method}")

        assert call("Ok")(b"hi", timeout=10) == b"hi"
        for method, code in (("Aborts", "INVALID_ARGUMENT"), ("Crashes", "UNKNOWN"),
                             ("SetsCode", "FAILED_PRECONDITION")):  # fmt: skip
            with pytest.raises(grpc.RpcError) as info:
                call(method)(b"", timeout=10)
            assert info.value.code().name == code
        assert list(call("StreamOk", "unary_stream")(b"", timeout=10)) == [b"a", b"b"]
        replies = call("StreamAborts", "stream_stream")(iter([b"1", b"2"]), timeout=10)
        received = []
        with pytest.raises(grpc.RpcError) as info:
            for r in replies:
                received.append(r)
        assert received == [b"1", b"2"] and info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # An unknown method is refused by gRPC and creates no series.
        with pytest.raises(grpc.RpcError) as info:
            call("NoSuchMethod")(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A stream the client walks away from ends as CANCELLED once gRPC lets go of it.
        forever = call("StreamForever", "unary_stream")(b"", timeout=10)
        assert next(forever) == b"x"
        forever.cancel()
        wait_for(
            lambda: _sample(metrics, "blindscore_requests_total", method="StreamForever"),
            what="the cancelled stream to be counted",
        )
    finally:
        channel.close()
        server.stop(None)

    expected = {"Ok": None, "Aborts": "INVALID_ARGUMENT", "Crashes": "UNKNOWN",
                "SetsCode": "FAILED_PRECONDITION", "StreamOk": None, "StreamAborts": "ALREADY_EXISTS",
                "StreamForever": "CANCELLED"}  # fmt: skip
    for method, code in expected.items():
        assert _sample(metrics, "blindscore_requests_total", method=method) == 1, method
        assert _sample(metrics, "blindscore_request_seconds_count", method=method) == 1, method
        errors = {
            s.labels["code"]: s.value
            for s in metrics.errors.collect()[0].samples
            if s.name.endswith("_total") and s.labels["method"] == method
        }
        assert errors == ({} if code is None else {code: 1.0}), method
    assert _sample(metrics, "blindscore_requests_total", method="NoSuchMethod") == 0
    assert _sample(metrics, "blindscore_in_flight_requests") == 0


def test_in_flight_gauge_counts_running_calls() -> None:
    metrics = NodeMetrics("bank")
    entered, release = threading.Event(), threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        entered.set()
        release.wait(10)
        return b"done"

    handler = grpc.method_handlers_generic_handler(PROBE, {"Slow": grpc.unary_unary_rpc_method_handler(slow)})
    server, port = create_server(
        "127.0.0.1:0", [lambda s: s.add_generic_rpc_handlers((handler,))], metrics=metrics
    )
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        future = channel.unary_unary(f"/{PROBE}/Slow").future(b"", timeout=10)
        assert entered.wait(10)
        assert _sample(metrics, "blindscore_in_flight_requests") == 1
        release.set()
        assert future.result() == b"done"
        assert _sample(metrics, "blindscore_in_flight_requests") == 0
    finally:
        release.set()
        channel.close()
        server.stop(None)


# ---------------------------------------------------------------------- NodeMetrics and the endpoint


def test_unknown_role_refused() -> None:
    with pytest.raises(InvalidInputError, match="auditor"):
        NodeMetrics("auditor")


def test_two_nodes_in_one_process_keep_separate_series() -> None:
    a, b = NodeMetrics("bureau"), NodeMetrics("bureau")
    a.observe_request("GetModelSpec", grpc.StatusCode.OK, 0.002)
    assert (
        a.registry.get_sample_value("blindscore_requests_total", {"node": "bureau", "method": "GetModelSpec"})
        == 1
    )
    assert (
        b.registry.get_sample_value("blindscore_requests_total", {"node": "bureau", "method": "GetModelSpec"})
        is None
    )


def test_stage_names_are_checked_and_capped() -> None:
    m = NodeMetrics("bureau")
    m.observe_stages({"bureau.evaluate": 12.5, "Bad Stage": 1.0, "app-123 secret": 2.0, "": 3.0})
    names = {s.labels["stage"] for s in m.stages.collect()[0].samples if s.name.endswith("_count")}
    assert names == {"bureau.evaluate"}
    assert m.registry.get_sample_value(
        "blindscore_stage_seconds_sum", {"node": "bureau", "stage": "bureau.evaluate"}
    ) == pytest.approx(0.0125)
    for i in range(MAX_STAGES + 10):
        m.observe_stage(f"extra.s{i}", 0.001)
    names = {s.labels["stage"] for s in m.stages.collect()[0].samples if s.name.endswith("_count")}
    assert len(names) == MAX_STAGES
    m.observe_stages({"platform.encrypt": 5.0, "bureau.evaluate": 1.0}, prefixes=("platform.",))
    assert m.registry.get_sample_value(
        "blindscore_stage_seconds_count", {"node": "bureau", "stage": "bureau.evaluate"}
    ) == 1  # fmt: skip


def _free_port_in_use() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_metrics_server_port_zero_busy_port_and_close() -> None:
    m = NodeMetrics("platform")
    m.observe_request("ScoreApplication", grpc.StatusCode.INVALID_ARGUMENT, 0.01)
    exporter: MetricsServer = start_metrics_server(m, 0)
    assert exporter.port > 0 and exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
    samples = scrape(exporter.url)
    labels = frozenset({"node": "platform", "method": "ScoreApplication", "code": "INVALID_ARGUMENT"}.items())
    assert samples[("blindscore_request_errors_total", labels)] == 1
    exporter.close()
    with pytest.raises(urllib.error.URLError, match=r"^<urlopen error \[Errno 111\] Connection refused>$"):
        urllib.request.urlopen(exporter.url, timeout=2)
    sock, busy = _free_port_in_use()
    try:
        with pytest.raises(InvalidInputError, match=f"cannot serve metrics on 127.0.0.1:{busy}"):
            start_metrics_server(m, busy)
    finally:
        sock.close()
    with pytest.raises(InvalidInputError, match="70000"):
        start_metrics_server(m, 70000)


# ---------------------------------------------------------------------- the command line


def test_cli_refuses_bad_metrics_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from blindscore.app.cli import main

    data = tmp_path / "bureau"
    args = ["bureau", "serve", "--insecure", "--listen", "127.0.0.1:0", "--data-dir", str(data)]
    assert main([*args, "--metrics-port", "70000"]) == 2
    assert "metrics port 70000" in capsys.readouterr().err
    assert not data.exists()  # refused before the node touched its data directory


@pytest.mark.slow
def test_bureau_serve_exposes_metrics(tmp_path: Path) -> None:
    ready = tmp_path / "bureau.ready.json"
    log = tmp_path / "bureau.log"
    cmd = [sys.executable, "-m", "blindscore", "bureau", "serve", "--insecure", "--listen", "127.0.0.1:0",
           "--data-dir", str(tmp_path / "bureau"), "--metrics-port", "0",
           "--ready-file", str(ready)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "bureau did not become ready"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["role"] == "bureau" and info["metrics_port"] > 0
        with open_channel(info["address"]) as channel:
            stub: Any = pb_grpc.BureauStub(channel)
            stub.GetModelSpec(pb.GetModelSpecRequest(model_id=DEFAULT_MODEL_ID), timeout=10)
            with pytest.raises(
                grpc.RpcError, match=r"unknown model 'missing' \(installed: german-credit-lr\)"
            ):
                stub.GetModelSpec(pb.GetModelSpecRequest(model_id="missing"), timeout=10)
        samples = scrape(f"http://127.0.0.1:{info['metrics_port']}/metrics")
        assert value(samples, "blindscore_requests_total", node="bureau", method="GetModelSpec") == 2
        errors = value(
            samples, "blindscore_request_errors_total", node="bureau", method="GetModelSpec", code="NOT_FOUND"
        )
        assert errors == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
