"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary folder and ``pg_ctl start`` on
a free port on 127.0.0.1, password authentication over TCP, stopped and removed afterwards.

The server binaries come from ``DISTILL_PG_BIN``, else ``pg_config --bindir``, else
``/usr/lib/postgresql/<newest>/bin`` (Debian's ``postgresql`` package, which ``.ci/run`` installs).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (which that
package creates) and the commands run through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "test-only-secret-7f3a"


def find_bindir() -> Path | None:
    env = os.environ.get("DISTILL_PG_BIN")
    if env:
        return Path(env)
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    user: str = "distill_test"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, db: str = "postgres", password: bool = False) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{db}"

    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                                 "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                                 "-E", "UTF8", "--locale=C"), check=True, capture_output=True)
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                                 "-l", str(self.root / "log"), "-w", "-t", "60", "start"), check=True,
                       capture_output=True)

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, db: str = "postgres", **kw):
        import psycopg

        return psycopg.connect(self.dsn(db, password=True), autocommit=True, **kw)


def start_server() -> PgServer:
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql "
                                "package (.ci/run does) or set DISTILL_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="distill-pg-"))
    os.chmod(root, 0o755)
    server = PgServer(bindir, root, _free_port())
    try:
        server.start()
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{log}") from None
    return server
