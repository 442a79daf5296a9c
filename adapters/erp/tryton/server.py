"""A real trytond server started and stopped by us, like availability/embedded_redis.py.

With no AVAILABILITY_ERP_URL the order flows run their own Tryton: the database set up
once by `availability erp init` under `<data_dir>/erp/` (SQLite file, admin password in
`admin-password`, mode 0600) served by `trytond` on a free loopback port (JSON-RPC at
`http://127.0.0.1:PORT/availability/`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adapters.erp.tryton.setup import ADMIN, DB_NAME, create_database, is_postgresql, write_config


class TrytonServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trytond_available() -> str | None:
    """None when trytond and the modules the flows need import; else why not."""
    try:
        import proteus  # noqa: F401, PLC0415
        import trytond  # noqa: F401, PLC0415
        import trytond.modules.account_invoice  # noqa: F401, PLC0415
        import trytond.modules.sale  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"Tryton is not installed ({exc}); install the `erp` extra: pip install -e '.[erp]'"
    return None


class ErpHome:
    """`<data_dir>/erp/`: the database file, the admin password, the server's config and log.

    With `uri` (`postgresql://user@host:port/`) the database `name` lives on that PostgreSQL
    server instead of in the SQLite file, so several trytond processes can write at once
    (the benchmark's set-up, loadtests/bench_orders.py); the folder keeps the password, the
    config and Tryton's file store."""

    def __init__(self, data_dir: str | Path, *, uri: str | None = None, name: str = DB_NAME) -> None:
        self.dir = Path(data_dir) / "erp"
        self.uri = uri if is_postgresql(uri) else None
        self.name = name if self.uri else DB_NAME

    @property
    def database(self) -> Path:
        return self.dir / f"{DB_NAME}.sqlite"

    @property
    def password_file(self) -> Path:
        return self.dir / "admin-password"

    def initialised(self) -> bool:
        made = (self.dir / f"postgresql-{self.name}").exists() if self.uri else self.database.exists()
        return made and self.password_file.exists()

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def init(self, skus: list[str], *, cache_dir: Path | None = None, password: str | None = None) -> bool:
        """Set the database up once; False (and nothing changed) when it already is. The
        admin password is `password` (a deployment's secret) or a random one."""
        if self.initialised():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        password = password or secrets.token_urlsafe(18)
        create_database(self.dir, skus, password, cache_dir=cache_dir, uri=self.uri, name=self.name)
        if self.uri:
            (self.dir / f"postgresql-{self.name}").write_text(self.uri)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
        return True


class TrytonServer:
    def __init__(self, data_dir: str | Path, *, port: int = 0, host: str = "127.0.0.1",
                 home: ErpHome | None = None) -> None:
        self.home = home or ErpHome(data_dir)
        self.port = port or free_port()
        #: where trytond listens (0.0.0.0 in a container, for other services to reach it)
        self.host = host
        self.process: subprocess.Popen | None = None
        binary = Path(sys.executable).with_name("trytond")
        self.binary = str(binary) if binary.exists() else (shutil.which("trytond") or "trytond")

    @property
    def url(self) -> str:
        """JSON-RPC root of the database (what AVAILABILITY_ERP_URL holds for an existing one)."""
        return f"http://127.0.0.1:{self.port}/{self.home.name}/"

    @property
    def login(self) -> str:
        return ADMIN

    def password(self) -> str:
        return self.home.password()

    def start(self, timeout: float = 60.0) -> "TrytonServer":
        if not self.home.initialised():
            raise TrytonServerError(f"no ERP database in {self.home.dir}: run `availability erp init` first")
        # a config per port: several trytond processes may serve one PostgreSQL database
        conf_name = "trytond.conf" if not self.home.uri else f"trytond-{self.port}.conf"
        conf = write_config(self.home.dir / conf_name, self.home.dir.resolve(), listen=f"{self.host}:{self.port}",
                            uri=self.home.uri or "sqlite://")
        log = open(self.home.dir / "trytond.log", "ab")
        # Own session, as for Redis: Ctrl-C reaches the service, which stops the ERP last.
        self.process = subprocess.Popen(
            # -d: load the database before serving, so no request meets a half-loaded pool
            [self.binary, "-c", str(conf), "-d", self.home.name], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    tail = (self.home.dir / "trytond.log").read_text(errors="replace")[-2000:]
                    raise TrytonServerError(f"trytond exited with {self.process.returncode}: {tail}")
                try:
                    # any answer but a server error means it serves (401: not logged in)
                    reply = client.post(f"{self.url}rpc/", json={"id": 0, "method": "common.server.version", "params": []})
                    if reply.status_code < 500:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TrytonServerError(f"trytond did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "TrytonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
