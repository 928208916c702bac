"""A throwaway PostgreSQL server for the tests (standard library only).

    python tests/pg_server.py run -- pytest tests/test_store.py   # start, run, stop
    eval "$(python tests/pg_server.py start)"                      # sets TICKCAST_TEST_PG_URL
    python tests/pg_server.py stop "$TICKCAST_TEST_PG_DIR"         #   and TICKCAST_TEST_PG_DIR

The server lives in a fresh temporary directory, listens on a free 127.0.0.1 port only
(trust authentication: for tests, never for data), runs with fsync off, and is removed
with its directory on stop. initdb and pg_ctl refuse to run as root: as root they run as
the `postgres` user (runuser), otherwise as the calling user. The binaries are found via
$PG_BIN, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.

Any failure to start is an error (exit status 1 and the server log on stderr): CI must
never skip the PostgreSQL tests silently.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60


class PgServerError(RuntimeError):
    pass


def bin_dir() -> Path:
    env = os.environ.get("PG_BIN")
    if env:
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        cand = Path(out.stdout.strip())
        if out.returncode == 0 and (cand / "initdb").exists():
            return cand
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PgServerError("no PostgreSQL server binaries found (set PG_BIN to the folder "
                        "holding initdb and pg_ctl, or install postgresql)")


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PgServerError("running as root without runuser: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *cmd]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def env(self) -> dict[str, str]:
        return {"TICKCAST_TEST_PG_URL": self.url, "TICKCAST_TEST_PG_DIR": str(self.directory)}


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise PgServerError(f"{what} failed (exit {out.returncode}): "
                            f"{(out.stderr or out.stdout).strip()[-2000:]}")


def start(parent: str | None = None) -> PgServer:
    """initdb a fresh cluster in a new temporary directory and start it; raises PgServerError."""
    bins = bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="tickcast-pg-", dir=parent))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        data = directory / "data"
        _run(_as_server_user([str(bins / "initdb"), "-D", str(data), "-A", "trust",
                              "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]),
             "initdb")
        for attempt in range(5):
            port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off "
                    f"-c unix_socket_directories={directory} -c max_connections=200 "
                    "-c shared_buffers=64MB")
            res = subprocess.run(_as_server_user([
                str(bins / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                "-o", opts, "-w", "-t", str(START_TIMEOUT_S), "start"]),
                capture_output=True, text=True)
            if res.returncode == 0:
                return PgServer(directory, port)
            log = (directory / "server.log")
            text = log.read_text(errors="replace") if log.exists() else ""
            if "could not bind" not in text or attempt == 4:
                raise PgServerError(f"pg_ctl start failed (exit {res.returncode}): "
                                    f"{res.stderr.strip()}\n--- server log ---\n{text[-3000:]}")
            time.sleep(0.2 * (attempt + 1))  # the port was taken meanwhile: another one
        raise PgServerError("unreachable")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def stop(directory: str | Path) -> None:
    """Stop the server of a directory made by start() and remove the directory."""
    directory = Path(directory)
    data = directory / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([str(bin_dir() / "pg_ctl"), "-D", str(data),
                                        "-m", "immediate", "-w", "stop"]),
                       capture_output=True, text=True)
    shutil.rmtree(directory, ignore_errors=True)


def restart(directory: str | Path, while_down: Callable[[], None] | None = None) -> None:
    """Restart the server of a directory made by start(): pg_ctl stop -m fast (every session
    is ended, as in a real restart), `while_down()` if given, then start it again with the
    same options, waiting until it accepts connections."""
    directory = Path(directory)
    data = directory / "data"
    # The options the server runs with, as postgres recorded them (binary, then arguments).
    opts = shlex.split((data / "postmaster.opts").read_text())[1:]
    while "-D" in opts:
        i = opts.index("-D")
        del opts[i:i + 2]
    ctl = str(bin_dir() / "pg_ctl")
    _run(_as_server_user([ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    if while_down is not None:
        while_down()
    # -l again: without it the new server would write to (and hold open) our pipe.
    _run(_as_server_user([ctl, "-D", str(data), "-l", str(directory / "server.log"), "-o",
                          shlex.join(opts), "-w", "-t", str(START_TIMEOUT_S), "start"]),
         "pg_ctl start")


# -- databases on a running server (these need psycopg) ------------------------------------


def _with_database(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _admin_conninfo(url: str) -> str:
    # psycopg takes postgresql:// URLs, not SQLAlchemy's postgresql+psycopg://
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def create_database(admin_url: str, prefix: str = "tickcast_test_") -> str:
    """CREATE DATABASE with a fresh unique name; returns its URL (same server and role)."""
    import uuid

    import psycopg
    from psycopg import sql

    dbname = f"{prefix}{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_conninfo(admin_url), autocommit=True, connect_timeout=10) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return _with_database(admin_url, dbname)


def drop_database(admin_url: str, db_url: str) -> None:
    """DROP DATABASE ... WITH (FORCE): its open sessions are ended first."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    dbname = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(_admin_conninfo(admin_url), autocommit=True, connect_timeout=10) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))


def main(argv: list[str]) -> int:
    usage = ("usage: pg_server.py start [PARENT_DIR] | stop DIR | run -- COMMAND... | bindir\n"
             "  start prints `export TICKCAST_TEST_PG_URL=...` lines for eval")
    if not argv or argv[0] not in ("start", "stop", "run", "bindir"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "bindir":
            print(bin_dir())
            return 0
        if argv[0] == "start":
            srv = start(argv[1] if len(argv) > 1 else None)
            for k, v in srv.env().items():
                print(f"export {k}={shlex.quote(v)}")
            return 0
        if argv[0] == "stop":
            if len(argv) != 2:
                print(usage, file=sys.stderr)
                return 2
            stop(argv[1])
            return 0
        cmd = argv[1:]
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            print(usage, file=sys.stderr)
            return 2
        srv = start()
        try:
            env = {**os.environ, **srv.env()}
            print(f"PostgreSQL test server at {srv.url}", file=sys.stderr)
            child = subprocess.Popen(cmd, env=env)
            # Ctrl-C reaches the child too (same process group); wait for it, then clean up.
            signal.signal(signal.SIGTERM, lambda *_: child.terminate())
            while True:
                try:
                    return child.wait()
                except KeyboardInterrupt:
                    continue
        finally:
            stop(srv.directory)
    except PgServerError as e:
        print(f"pg_server: cannot start PostgreSQL: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
