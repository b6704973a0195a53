"""`blindscore platform serve`: run the platform node in front of a bureau."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from blindscore.infra import command
from blindscore.infra.transport import host_port, open_channel
from blindscore.infra.workers import run_workers
from blindscore.platform_node.bureau_link import GrpcBureauLink
from blindscore.platform_node.flow import PlatformNode
from blindscore.platform_node.outbox import Outbox
from blindscore.platform_node.server import start_platform_server

log = logging.getLogger("blindscore")


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return run_workers(args, "platform")
    serving = command.ServeCommand(args, "platform", args.platform_id)
    metrics = serving.open()
    outbox = Outbox.open(Path(args.data_dir), args.database)
    # Any bureau replica accepts a submission, and a repeated one gets the first one's outcome.
    channel = open_channel(args.bureau, security=serving.security.expecting("bureau"), retry_unavailable=True)

    # The outbox resender's own channel, redialled after failures.
    def dial() -> tuple[GrpcBureauLink, Callable[[], None]]:
        fresh = open_channel(
            args.bureau, security=serving.security.expecting("bureau"), retry_unavailable=True
        )
        return GrpcBureauLink(fresh), fresh.close

    replica_id = command.replica_id(args)
    node = PlatformNode(
        args.platform_id,
        GrpcBureauLink(channel),
        outbox,
        dial=dial,
        replica_id=replica_id,
        lease_s=args.lease_seconds,
    )
    server, port = start_platform_server(node, args.listen, security=serving.security, metrics=metrics)
    address = host_port(args.listen, port)
    log.info(
        "platform %s replica %s listening on %s, bureau at %s",
        node.platform_id,
        replica_id,
        address,
        args.bureau,
    )

    def stop() -> None:
        server.stop(grace=2).wait()
        node.close()
        channel.close()

    return serving.run(address, stop)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``platform serve`` to the top-level subparsers ``sub``."""
    platform = command.command_group(sub, "platform", "the platform node")
    sp = command.serve_parser(platform, "run the platform's gRPC server", command.DEFAULT_PLATFORM)
    sp.add_argument(
        "--bureau",
        default=command.DEFAULT_BUREAU,
        help="bureau address: host:port, a comma-separated list of its replicas, or a DNS name whose "
        "records are the replicas (calls go round-robin, and one refused UNAVAILABLE is retried on another)",
    )
    sp.add_argument(
        "--platform-id", default="platform-1", help="this platform's party id (its certificate's name)"
    )
    sp.add_argument("--data-dir", default="blindscore-data/platform", help="the outbox and its HMAC secret")
    sp.add_argument("--database", help=command.database_help("platform", "outbox.sqlite3"))
    command.replica_flags(sp, "platform", "an unanswered outbox entry")
    sp.set_defaults(func=cmd_serve, role="platform")
