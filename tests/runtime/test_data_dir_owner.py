"""One owner per data dir, with real processes: CLI commands beside a running `serve` use
its server (or refuse), nothing is lost across restarts, the AOF stays valid, and the
embedded server neither outlives its owner nor stays dead while `serve` runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from availability.embedded_redis import (
    DataDirOwned,
    EmbeddedRedis,
    _answers,
    _servers_in,
    check_aof,
    find_redis_server,
    free_port,
    own_or_join,
    pid_alive,
)
from tests.runtime.conftest import eventually, receipt


def _assert_aof_valid(site) -> None:
    assert not _servers_in(site.redis_dir), "check the AOF of a stopped server only"
    valid, out = check_aof(find_redis_server(site.env.get("AVAILABILITY_REDIS_SERVER")), site.redis_dir)
    assert valid, out


def test_cli_beside_serve_lands_in_its_ledger_and_nothing_is_lost_across_restarts(site):
    oracle: dict[str, int] = {}

    def expect(sku: str, quantity: int) -> None:
        oracle[sku] = oracle.get(sku, 0) + quantity

    site.serve()
    owner = site.owner()
    assert owner.state == "running" and owner.pid == site.serve_proc.pid

    # `apply` beside the service: straight into the service's ledger, not a private copy
    done = site.cli("apply", str(site.write_events("a.jsonl", [receipt("e1", "TEE", 5)])))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["applied"] == {"applied": 1}
    expect("TEE", 5)
    assert site.ats("TEE") == 5

    # an AOF rewrite in the service's server (the case that used to leave an invalid AOF
    # when a second server shared the dir), then `ingest file` beside it: onto the
    # service's stream, applied by its consumer
    client = redis.Redis.from_url(owner.url)
    try:
        client.bgrewriteaof()
        eventually(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0
                   and client.info("persistence")["aof_rewrite_scheduled"] == 0)
    finally:
        client.close()
    done = site.cli("ingest", "file", "--format", "events",
                    str(site.write_events("b.jsonl", [receipt("e2", "TEE", 3), receipt("e3", "CAP", 7)])))
    assert done.returncode == 0, done.stderr
    expect("TEE", 3)
    expect("CAP", 7)
    eventually(lambda: site.ats("TEE") == 8 and site.ats("CAP") == 7)

    # read-only commands see the same data
    done = site.cli("stock", "TEE")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["explain"]["ats"] == 8
    assert site.cli("dlq", "list").returncode == 0
    assert _servers_in(site.redis_dir) == [site.owner().server_pid], "one server on the data dir"

    assert site.stop_serve() == 0
    assert site.owner().state == "stopped"
    assert not _servers_in(site.redis_dir)
    _assert_aof_valid(site)

    # with no owner a command starts (and stops) its own server on the same data
    done = site.cli("apply", str(site.write_events("c.jsonl", [receipt("e4", "TEE", 2), receipt("e1", "TEE", 5)])))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["applied"] == {"applied": 1, "duplicate": 1}
    expect("TEE", 2)
    assert not _servers_in(site.redis_dir)
    _assert_aof_valid(site)

    site.serve()
    assert site.owner().url == owner.url, "a restarted owner takes its server's old port when free"
    for sku, quantity in oracle.items():
        assert site.ats(sku) == quantity, sku
    assert site.stop_serve() == 0
    _assert_aof_valid(site)


def test_sigkill_of_serve_leaves_no_server_behind(site):
    site.serve()
    server_pid = site.owner().server_pid
    assert site.cli("apply", str(site.write_events("a.jsonl", [receipt("k1", "TEE", 4)]))).returncode == 0
    site.serve_proc.send_signal(signal.SIGKILL)
    site.serve_proc.wait(10)
    eventually(lambda: not pid_alive(server_pid), timeout=60)
    assert not _servers_in(site.redis_dir)
    # the next owner starts cleanly on the same data
    site.serve()
    assert site.ats("TEE") == 4
    assert site.stop_serve() == 0
    _assert_aof_valid(site)


def test_sigkill_of_the_server_is_recovered_by_serve(site):
    site.serve()
    assert site.cli("apply", str(site.write_events("a.jsonl", [receipt("r1", "TEE", 6)]))).returncode == 0
    first = site.owner().server_pid
    os.kill(first, signal.SIGKILL)
    # back (within seconds; the bound is for a loaded machine), same data (AOF replayed), and the record says it was restarted
    eventually(lambda: site.ready().status_code == 200 and site.owner().server_pid != first, timeout=60)
    owner = site.owner()
    assert owner.state == "running" and owner.restarts == 1, owner
    assert site.ready().json()["checks"]["embedded_redis"] == "ok"
    assert site.ats("TEE") == 6
    assert site.cli("apply", str(site.write_events("b.jsonl", [receipt("r2", "TEE", 1)]))).returncode == 0
    assert site.ats("TEE") == 7
    assert site.serve_proc.poll() is None
    assert site.stop_serve() == 0
    _assert_aof_valid(site)


def test_a_command_refuses_when_the_owners_server_has_failed(site):
    # An owner that holds the lock but whose server gave up: the command must not start a
    # second server on the data, nor apply anywhere; it says so and exits non-zero.
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, json, os, sys, time
d = {str(site.redis_dir)!r}
os.makedirs(d, exist_ok=True)
fd = os.open(os.path.join(d, "owner.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
json.dump({{"pid": os.getpid(), "command": "availability serve", "url": "redis://127.0.0.1:1/0", "server_pid": 0,
           "binary": "valkey-server", "state": "failed", "detail": "restart failed"}}, open(os.path.join(d, "owner.json"), "w"))
print("locked", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = site.cli("apply", str(site.write_events("a.jsonl", [receipt("x1", "TEE", 1)])))
        assert done.returncode == 1
        assert "failed" in done.stderr and str(holder.pid) in done.stderr, done.stderr
        assert "applied" not in done.stdout
        assert not _servers_in(site.redis_dir)
    finally:
        holder.kill()
        holder.wait()


def test_two_servers_on_one_data_dir_are_impossible_and_an_orphan_is_stopped(tmp_path):
    binary = os.environ.get("AVAILABILITY_REDIS_SERVER")
    first = EmbeddedRedis(tmp_path, binary=binary).start()
    try:
        with pytest.raises(DataDirOwned):
            EmbeddedRedis(tmp_path, binary=binary).start()
        url, server = own_or_join(tmp_path, binary=binary)
        assert (url, server) == (first.url, None)
    finally:
        first.stop()

    # A server left running in the dir with no owner (started without the parent-death
    # signal, as an older version did): the next start stops it before starting its own.
    port = free_port()
    orphan = subprocess.Popen([find_redis_server(binary), "--port", str(port), "--dir", str(tmp_path),
                               "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        eventually(lambda: _answers(f"redis://127.0.0.1:{port}/0"), timeout=60)
        assert _servers_in(tmp_path) == [orphan.pid]
        server = EmbeddedRedis(tmp_path, binary=binary).start()
        try:
            assert orphan.wait(15) is not None
            assert _servers_in(tmp_path) == [server.process.pid]
        finally:
            server.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()
    assert not _servers_in(tmp_path)


def test_serve_exits_non_zero_when_its_server_cannot_be_restarted(site):
    site.serve()
    assert site.cli("apply", str(site.write_events("a.jsonl", [receipt("f1", "TEE", 2)]))).returncode == 0
    # Damage the append-only file under the running server (bytes that are not RESP, in
    # the middle once the server appends again), then kill it: the restart cannot load it.
    increments = sorted(site.redis_dir.glob("appendonlydir/*.incr.aof")) or [site.redis_dir / "appendonly.aof"]
    with open(increments[-1], "ab") as aof:
        aof.write(b"this is not RESP\r\n")
    os.kill(site.owner().server_pid, signal.SIGKILL)
    assert site.serve_proc.wait(60) == 1, site.log()
    site.serve_proc = None
    owner = site.owner()
    assert owner.state == "failed" and "restart failed" in owner.detail, owner
    assert not _servers_in(site.redis_dir)
    # and a command on that data says why instead of running on an empty ledger
    done = site.cli("stock", "TEE")
    assert done.returncode == 1 and "exited" in done.stderr, done.stderr
