"""A peer as several replicas: address lists, round-robin and pick-first balancing, retry elsewhere.

Two real bureau servers on loopback stand for two replicas of one peer. A round-robin channel
spreads calls over both, keeps working when one stops (calls refused UNAVAILABLE are retried on the
other), and a pick-first channel (the bureau's view of a bank: its OT sessions live in one replica)
stays on the first replica until it is gone. Calls are counted by each server's own metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from blindscore.bureau.flow import BureauNode
from blindscore.bureau.server import start_bureau_server
from blindscore.errors import InvalidInputError
from blindscore.infra.metrics import NodeMetrics
from blindscore.infra.transport import channel_target, open_channel
from blindscore.v1 import blindscore_pb2 as pb
from blindscore.v1 import blindscore_pb2_grpc as pb_grpc

from waiting import wait_for


def test_channel_targets() -> None:
    assert channel_target("127.0.0.1:5000") == ("127.0.0.1:5000", "")
    assert channel_target("dns:///bureau.example:443") == ("dns:///bureau.example:443", "")
    assert channel_target("127.0.0.1:5000, 127.0.0.2:5001") == (
        "ipv4:127.0.0.1:5000,127.0.0.2:5001",
        "127.0.0.1:5000",
    )
    assert channel_target("[::1]:5000,[::1]:5001") == ("ipv6:[::1]:5000,[::1]:5001", "[::1]:5000")
    # a name in a list is resolved to its addresses, duplicates dropped
    target, _ = channel_target("localhost:5000,127.0.0.1:5000")
    assert "127.0.0.1:5000" in target and target.count("127.0.0.1:5000") == 1


@pytest.mark.parametrize(
    ("address", "match"),
    [
        ("", "must look like host:port"),
        ("127.0.0.1:5000,", "must look like host:port"),
        ("127.0.0.1:5000,nohost", "must look like host:port"),
        ("127.0.0.1:5000,127.0.0.1:notaport", "127.0.0.1:notaport"),
        ("127.0.0.1:5000,127.0.0.1:70000", "127.0.0.1:70000"),
        ("127.0.0.1:5000,[::1]:5000", "mix IPv4 and IPv6"),
        ("127.0.0.1:5000,no-such-host.invalid:5000", "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_bad_address_lists_are_refused(address: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        open_channel(address)


@dataclass
class Replica:
    server: grpc.Server
    address: str
    metrics: NodeMetrics

    def calls(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "blindscore_requests_total", {"node": "bureau", "method": "GetModelSpec"}
        )
        return value or 0.0


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with ExitStack() as stack:
        out = []
        for k in range(2):
            node = BureauNode.open(tmp_path / f"bureau-{k}")
            stack.callback(node.close)
            metrics = NodeMetrics("bureau")
            server, port, channels = start_bureau_server(node, "127.0.0.1:0", metrics=metrics)
            stack.callback(channels.close)
            stack.callback(lambda s=server: s.stop(None).wait())
            out.append(Replica(server, f"127.0.0.1:{port}", metrics))
        yield out


def _ask(channel: grpc.Channel, times: int) -> list[grpc.StatusCode]:
    stub = pb_grpc.BureauStub(channel)
    codes = []
    for _ in range(times):
        try:
            stub.GetModelSpec(pb.GetModelSpecRequest(model_id="no-such-model"), timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return codes


def test_round_robin_spreads_calls_and_survives_a_replica(replicas: list[Replica]) -> None:
    a, b = replicas
    with open_channel(f"{a.address},{b.address}", retry_unavailable=True) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        assert _ask(channel, 20) == [grpc.StatusCode.NOT_FOUND] * 20  # answered by a bureau
        # the servers count a call as it ends, just after the caller has its answer
        wait_for(lambda: a.calls() + b.calls() == 20, what="20 calls counted")
        assert a.calls() > 0 and b.calls() > 0
        a.server.stop(None).wait()
        before = b.calls()
        # every call reaches the live replica: none is lost as UNAVAILABLE
        assert _ask(channel, 10) == [grpc.StatusCode.NOT_FOUND] * 10
        wait_for(lambda: b.calls() - before == 10, what="10 more calls at the live replica")


def test_pick_first_stays_on_one_replica_until_it_is_gone(replicas: list[Replica]) -> None:
    a, b = replicas
    with open_channel(f"{a.address},{b.address}", balancing="pick_first", retry_unavailable=True) as channel:
        assert _ask(channel, 10) == [grpc.StatusCode.NOT_FOUND] * 10
        wait_for(lambda: a.calls() == 10, what="10 calls counted")
        assert b.calls() == 0  # the negative control of the round-robin test
        a.server.stop(None).wait()
        assert _ask(channel, 5) == [grpc.StatusCode.NOT_FOUND] * 5
        wait_for(lambda: b.calls() == 5, what="5 calls at the second replica")


def test_without_retries_a_stopped_replica_can_fail_a_call(replicas: list[Replica]) -> None:
    """Pick-first on a single dead address and no retry policy: UNAVAILABLE reaches the caller
    (what the retry policy of the other tests turns into an answer from the live replica)."""
    a, _ = replicas
    a.server.stop(None).wait()
    with open_channel(a.address) as channel:
        assert _ask(channel, 1) == [grpc.StatusCode.UNAVAILABLE]
