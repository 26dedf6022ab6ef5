"""A throwaway PostgreSQL server from Debian's packages, on 127.0.0.1, for the ledger tests.

``initdb`` + ``pg_ctl`` in a temp folder on a free port, as user ``postgres`` when running as
root (the server refuses root). It can be stopped and started again (a fault test), and can
require a password for one role (``password_role``). Where it cannot be started, ``start``
raises ``Unavailable`` with the reason, and the tests skip with it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Unavailable(RuntimeError):
    """PostgreSQL is not installed here, or the server could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


class PostgresServer:
    """One server in its own temp folder; ``url`` connects as the superuser without password."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise Unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = Path(found[-1]).parent
        self.datadir = tempfile.mkdtemp(prefix="cc-pg-")
        self.pgdata = os.path.join(self.datadir, "data")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable(
                    "running as root and there is no 'postgres' user to run the server"
                ) from None
            os.chown(self.datadir, pg.pw_uid, pg.pw_gid)
        self._run("initdb", "-D", self.pgdata, "-A", "trust", "-U", "postgres")

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        try:
            subprocess.run(
                _as_server_user([str(self.bindir / tool), *args]),
                check=check,
                capture_output=True,
                timeout=120,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode()[-300:]
            raise Unavailable(f"{tool} failed: {exc} {detail}") from exc

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
        log = os.path.join(self.datadir, "log")
        self._run("pg_ctl", "-D", self.pgdata, "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop", check=False)

    def password_role(self, role: str, password: str) -> str:
        """Create ``role`` with ``password``, required over TCP; returns its URL."""
        import sqlalchemy

        hba = Path(self.pgdata) / "pg_hba.conf"
        rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # the first matching line wins
        engine = sqlalchemy.create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            conn.execute(sqlalchemy.text(f"GRANT ALL ON SCHEMA public TO {role}"))
            conn.execute(sqlalchemy.text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
            conn.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
        engine.dispose()
        return f"postgresql+psycopg://{role}:{password}@127.0.0.1:{self.port}/postgres"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
