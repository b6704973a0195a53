"""What every node's command line shares: the serve flags, the transport choice, the serving process."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from blindscore._files import write_json
from blindscore.errors import BlindscoreError
from blindscore.infra.leases import DEFAULT_LEASE_S, MAX_LEASE_S, MIN_LEASE_S
from blindscore.infra.lock import hold_store
from blindscore.infra.metrics import MetricsServer, NodeMetrics, serve_node_metrics
from blindscore.infra.transport import INSECURE, TransportSecurity, share_listen_port

log = logging.getLogger("blindscore")

DEFAULT_BUREAU = "127.0.0.1:50051"
DEFAULT_BANK = "127.0.0.1:50052"
DEFAULT_PLATFORM = "127.0.0.1:50053"


class CliError(BlindscoreError):
    """A problem with the command line itself: a bad flag, a missing file, a malformed CSV."""


# ---------------------------------------------------------------------- flags


def command_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A top-level command such as ``bank`` whose actions (``bank serve``, ...) are added to the result."""
    return sub.add_parser(name, help=help).add_subparsers(
        dest="action", required=True, metavar="ACTION", help="run 'ACTION --help' for its flags"
    )


def serve_parser(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], help: str, default_listen: str
) -> argparse.ArgumentParser:
    """A node's ``serve`` action with the flags all nodes share; the node adds its own after them."""
    sp = actions.add_parser("serve", help=help)
    sp.add_argument(
        "--listen", default=default_listen, help=f"host:port to listen on (default {default_listen})"
    )
    sp.add_argument("--ready-file", help="write a JSON file with the bound address once serving")
    sp.add_argument("--pki", help="directory from 'blindscore certs init': mutual TLS with this node's cert")
    sp.add_argument("--insecure", action="store_true", help="plaintext transport (local development only)")
    sp.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics over HTTP on this port (0 picks one; default: off)",
    )
    sp.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)"
    )
    sp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N processes of this node on one port (SO_REUSEPORT) and one PostgreSQL database, "
        "so that it uses N cores; a supervisor restarts any that dies (default 1; roles with replicas)",
    )
    # Set by the --workers supervisor on each worker: bind the port shared with the other workers.
    sp.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    return sp


def share_timings_flag(sp: argparse.ArgumentParser, node: str) -> None:
    sp.add_argument(
        "--share-timings",
        action="store_true",
        help=f"send the {node}'s own stage timings to its peers (local benchmarks only: a stage time "
        "can track secrets of the party that measured it; default: timings stay in this node's metrics)",
    )


def lease_seconds(text: str) -> float:
    """argparse type of ``--lease-seconds``: a number of seconds within the lease bounds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not MIN_LEASE_S <= value <= MAX_LEASE_S:
        raise argparse.ArgumentTypeError(f"must be between {MIN_LEASE_S} and {MAX_LEASE_S:.0f} seconds")
    return value


def replica_flags(sp: argparse.ArgumentParser, node: str, work: str) -> None:
    """``--replica-id`` and ``--lease-seconds`` of a node whose replicas share one database."""
    sp.add_argument(
        "--replica-id",
        default="",
        help=f"this process's name among {node} replicas on one PostgreSQL database, recorded with "
        "each claim (default: host:pid)",
    )
    sp.add_argument(
        "--lease-seconds",
        type=lease_seconds,
        default=DEFAULT_LEASE_S,
        help=f"how long a replica's claim on {work} lasts unless renewed (every third of it); "
        f"a dead replica's work is taken over after it (default {DEFAULT_LEASE_S:.0f})",
    )


def replica_id(args: argparse.Namespace) -> str:
    """``--replica-id``, or host:pid."""
    return str(args.replica_id) or f"{socket.gethostname()}:{os.getpid()}"


def database_help(node: str, files: str) -> str:
    return (
        f"postgresql://... URL (tables prefixed {node}_) or sqlite:///PATH for the {node}'s state "
        f"(default: {files} under --data-dir)"
    )


def store_flags(sp: argparse.ArgumentParser, node: str, default_dir: str, files: str) -> None:
    """--data-dir and --database of a command that reads a node's stores offline."""
    sp.add_argument(
        "--data-dir", default=default_dir, help=f"the {node}'s data directory (default {default_dir})"
    )
    sp.add_argument("--database", help=database_help(node, files))


def transport_security(args: argparse.Namespace, party_id: str) -> TransportSecurity:
    """Mutual TLS as ``party_id`` from --pki, or plaintext only when --insecure says so."""
    if args.insecure:
        if args.pki:
            raise CliError("give either --pki or --insecure, not both")
        log.warning("--insecure: plaintext transport, for local development only")
        return INSECURE
    if not args.pki:
        raise CliError(
            "no transport security: pass --pki DIR (create one with 'blindscore certs init DIR') "
            "or --insecure for plaintext local development"
        )
    return TransportSecurity.from_pki(Path(args.pki), party_id)


# ---------------------------------------------------------------------- the serving process


#: glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
#: malloc arenas a node process uses, unless MALLOC_ARENA_MAX says otherwise.
NODE_MALLOC_ARENAS = 2


def _serving_process() -> None:
    """Settings for a node process.

    - Hand the GIL over within 0.5 ms instead of 5 ms, so a request never waits long behind a
      background thread precomputing randomness.
    - At most NODE_MALLOC_ARENAS glibc malloc arenas. By default glibc gives threads their own
      arenas (up to 8 per core) and with gRPC's thread pools they fragment: under sustained load
      each node's resident memory crept up by ~16 bytes per application over 200k applications;
      with two arenas the bureau stayed within 0.4 MiB from 22k to 132k (docs/performance.md).
      Set before the node starts its threads; not on other C libraries.
    - umask 077: every file and directory the node creates (databases, model versions, bank
      registrations, keys, its ready file) is its owner's alone, whatever the caller's umask.
    """
    os.umask(0o077)
    sys.setswitchinterval(0.0005)
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, NODE_MALLOC_ARENAS)
        except (OSError, AttributeError):
            log.debug("not glibc: malloc arenas left as they are")


class ServeCommand:
    """One ``<node> serve`` process, from its process settings to its shutdown.

    Making it applies the process settings and chooses the transport; :meth:`open` starts the
    metrics endpoint and locks the node's stores; :meth:`run` announces the node and serves until
    SIGTERM or SIGINT. Nothing is created before :meth:`open`, so a refused flag leaves no data
    directory behind.
    """

    def __init__(self, args: argparse.Namespace, role: str, party_id: str) -> None:
        _serving_process()
        if getattr(args, "reuse_port", False):
            share_listen_port()
        self.args = args
        self.role = role
        self.security = transport_security(args, party_id)
        self._exporter: MetricsServer | None = None

    def open(self) -> NodeMetrics:
        """Serve the node's metrics if asked, and lock its stores for this process till it exits."""
        args = self.args
        metrics, self._exporter = serve_node_metrics(self.role, args.metrics_port, args.metrics_host)
        hold_store(self.role, Path(args.data_dir), args.database)
        return metrics

    def run(self, address: str, stop: Callable[[], None], **ready: str) -> int:
        """Write the ready file, wait for SIGTERM or SIGINT, then ``stop`` the node and its metrics."""
        metrics_info = {"metrics_port": self._exporter.port} if self._exporter else {}
        if self.args.ready_file:  # written atomically, so whoever started us never reads half of it
            write_json(
                Path(self.args.ready_file), {"role": self.role, "address": address, **ready, **metrics_info}
            )
        done = threading.Event()

        def handler(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        done.wait()
        stop()
        if self._exporter:
            self._exporter.close()
        return 0
