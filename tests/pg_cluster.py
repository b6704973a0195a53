"""A private, throw-away PostgreSQL cluster on loopback for the test session (Debian's server binaries)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class NoPostgres(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise NoPostgres(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; on Debian/Ubuntu run "
        "`apt-get install postgresql` (the tests start a private cluster themselves)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    directory: Path
    port: int
    bin_dir: Path
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/blindscore_test"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> Cluster:
    """initdb + pg_ctl start on a free loopback port, trust auth, one database ``blindscore_test``.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user that the
    Debian package creates.
    """
    bin_dir = _bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="blindscore-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        run_as = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(directory / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            capture_output=True,
            check=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=200 -c fsync=off"
        )
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(directory / "data"),
                "-l",
                str(directory / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            capture_output=True,
            check=True,
        )
        subprocess.run(
            [
                str(bin_dir / "psql"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE blindscore_test",
            ],
            capture_output=True,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        log = (
            (directory / "server.log").read_text(errors="replace")
            if (directory / "server.log").exists()
            else ""
        )
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(
            f"could not start a private PostgreSQL: {exc.cmd[len(run_as)]} failed:\n"
            f"{exc.stderr.decode(errors='replace')}\n{log}"
        ) from None
    return Cluster(directory, port, bin_dir, run_as)
