"""A private PostgreSQL for the tests, from the machine's Debian packages (``postgresql``).

``Cluster.local()`` runs ``initdb`` in a new temporary directory and starts ``postgres`` on it
listening on a Unix socket in that directory only (``listen_addresses=''``: no TCP port, no
traffic off the machine), as the ``postgres`` user when the tests run as root (PostgreSQL
refuses to run as root). Durability settings are off (``fsync``, ``synchronous_commit``): the
tests kill processes, never the machine. ``database()`` gives each test an empty database of
its own: a new schema in one test database, named by the URL's ``search_path`` (a new
PostgreSQL database per test would copy the 7.5 MB template each time). ``stop()`` stops the
server and removes the directory. With ``$TINYMLAAS_TEST_PG`` set to a URL of an existing
server, the schemas are made in that database instead (and dropped by ``stop()``).

Starting takes about a second (``initdb --no-sync``), once per test session.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the private directory


def bindir() -> Path | None:
    """The newest Debian PostgreSQL server's binaries (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class Cluster:
    def __init__(self, admin_url: str, root: Path | None = None, bin_dir: Path | None = None,
                 as_user: str | None = None) -> None:
        self.admin_url, self.root, self.bin_dir, self.as_user = admin_url, root, bin_dir, as_user
        self.created: list[str] = []

    @classmethod
    def from_env(cls) -> "Cluster | None":
        url = os.environ.get("TINYMLAAS_TEST_PG")
        return cls(url) if url else None

    @classmethod
    def local(cls) -> "Cluster | None":
        """Start a private server; None when this machine has no PostgreSQL server binaries."""
        bin_dir = bindir()
        if bin_dir is None:
            return None
        as_user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return None
            as_user = "postgres"
        root = Path(tempfile.mkdtemp(prefix="tinymlaas-pg-"))
        if as_user is not None:
            entry = pwd.getpwnam(as_user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(f"postgresql+psycopg://postgres@/postgres?host={root}&port={PORT}", root, bin_dir, as_user)
        try:
            cluster._run("initdb", "-D", str(root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                         "--no-sync", "--no-instructions")
            options = (f"-c listen_addresses='' -k {root} -p {PORT} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60",
                         "-o", options, "start")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_user is not None:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")

    def _admin(self, sql: str) -> None:
        import psycopg

        url = make_url(self.admin_url)
        params = {"dbname": url.database or "postgres", "user": url.username, "password": url.password,
                  "host": url.query.get("host") or url.host, "port": url.query.get("port") or url.port}
        with psycopg.connect(**{k: v for k, v in params.items() if v is not None}, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def database(self) -> str:
        """A new empty schema, as the SQLAlchemy URL of a database whose only schema it is."""
        name = "t_" + secrets.token_hex(6)
        self._admin(f'CREATE SCHEMA "{name}"')
        self.created.append(name)
        url = make_url(self.admin_url)
        return url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)

    def stop(self) -> None:
        if self.root is None:  # an external server: drop what we made there
            for name in self.created:
                try:
                    self._admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                except Exception:  # noqa: BLE001  (best effort: the server may be gone)
                    pass
            return
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.SubprocessError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)
