"""Dead-letter tools (list, show, replay with and without an edited payload), the WMS
drop folder, one-shot file loads, and the CLI around them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from availability.cli import main as cli
from availability.domain.events import encode_event
from availability.ingest.consumer import StreamConsumer
from availability.ingest.deadletters import DeadLetters
from availability.ingest.dropfolder import DropFolderWatcher
from availability.ingest.publisher import EventPublisher
from availability.ingest.replay import ReplayRefused, replay, replay_all
from availability.ingest.streams import StreamNames, partition_of
from tests.factories import event
from tests.ingest.conftest import wait_drained

SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "samples"


async def _poison(runtime, sku="SKU-D", event_id="neg-1", quantity=-4) -> bytes:
    names = StreamNames.from_settings(runtime.settings)
    good = event("receipt", sku=sku, quantity=3, event_id=event_id)
    payload = msgspec.json.encode({**msgspec.to_builtins(good), "quantity": quantity})
    publisher = EventPublisher(runtime)
    await publisher.start()
    await publisher.publish_raw([(partition_of(sku, names.partitions), payload)])
    async with StreamConsumer(runtime):
        await wait_drained(runtime.redis, names)
    return payload


async def test_replay_with_an_edited_payload_applies_it_and_removes_the_dead_letter(runtime):
    names = StreamNames.from_settings(runtime.settings)
    dlq = DeadLetters(runtime.redis, names)
    payload = await _poison(runtime)
    [letter] = await dlq.list()
    assert letter.reason == "impossible_quantity" and letter.payload == payload

    publisher = EventPublisher(runtime)
    with pytest.raises(ReplayRefused):  # the original would fail again
        await replay(runtime, dlq, publisher, letter.id)
    assert await dlq.count() == 1

    fixed = payload.replace(b'"quantity":-4', b'"quantity":4')
    assert fixed != payload
    assert await replay(runtime, dlq, publisher, letter.id, payload=fixed) == 1
    assert await dlq.count() == 0
    async with StreamConsumer(runtime):
        await wait_drained(runtime.redis, names)
    assert (await runtime.ledger.stock("SKU-D"))["DC1"].on_hand == 4


async def test_replay_all_of_intake_rows_reparses_them(runtime):
    from availability.ingest.sources import load

    names = StreamNames.from_settings(runtime.settings)
    dlq = DeadLetters(runtime.redis, names)
    body = b"sku,location,on_hand,as_of\nA,DC1,5,2026-11-20T02:00:00Z\nB,DC1,-1,2026-11-20T02:00:00Z\n"
    import io

    report = await load("erp-csv", io.BytesIO(body), EventPublisher(runtime), dlq)
    assert (report.events, report.rejected) == (1, 1)
    [letter] = await dlq.list()
    assert letter.payload == b"sku,location,on_hand,as_of\nB,DC1,-1,2026-11-20T02:00:00Z\n"
    ticks: list[int] = []
    replayed, kept = await replay_all(runtime, dlq, EventPublisher(runtime), progress=ticks.append)
    assert (replayed, len(kept)) == (0, 1)  # still invalid: kept, with the reason
    assert ticks == [1]  # a kept letter counts as done for the progress bar
    fixed = letter.payload.replace(b"B,DC1,-1", b"B,DC1,7")
    assert await replay(runtime, dlq, EventPublisher(runtime), letter.id, payload=fixed) == 1
    async with StreamConsumer(runtime):
        await wait_drained(runtime.redis, names)
    stock = await runtime.ledger.stock_many(["A", "B"])
    assert (stock["A"]["DC1"].on_hand, stock["B"]["DC1"].on_hand) == (5, 7)


async def test_a_truncated_dead_letter_is_never_replayed_as_it_is(runtime):
    # Only a prefix is stored; a prefix can even parse (a CSV row cut inside its last field).
    import io

    from availability.ingest.sources import load

    names = StreamNames.from_settings(runtime.settings)
    header = b"sku,location,on_hand,as_of,note\n"
    row = b"B,DC1,1234,2026-11-20T02:00:00Z," + b"n" * 200 + b",extra\n"
    dlq = DeadLetters(runtime.redis, names, max_payload=len(header) + 20)
    report = await load("erp-csv", io.BytesIO(header + b"A,DC1,5,2026-11-20T02:00:00Z,ok\n" + row), EventPublisher(runtime), dlq)
    assert (report.events, report.rejected, report.dead_lettered) == (1, 1, 1)
    [letter] = await dlq.list()
    assert letter.truncated and letter.payload_bytes == len(header) + len(row)
    assert len(letter.payload) == len(header) + 20
    with pytest.raises(ReplayRefused, match="truncated"):
        await replay(runtime, dlq, EventPublisher(runtime), letter.id, force=True)
    replayed, kept = await replay_all(runtime, dlq, EventPublisher(runtime), force=True)
    assert (replayed, [why for _, why in kept]) == (0, [kept[0][1]]) and "truncated" in kept[0][1]
    fixed = header + b"B,DC1,1234,2026-11-20T02:00:00Z,n\n"
    assert await replay(runtime, dlq, EventPublisher(runtime), letter.id, payload=fixed) == 1
    assert await dlq.count() == 0


async def test_drop_folder_publishes_good_files_and_rejects_bad_ones(runtime, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(SAMPLES / "wms_944_receipt.edi", folder / "a_receipt.edi")
    shutil.copy(SAMPLES / "wms_bad_se_count.edi", folder / "b_bad.edi")
    watcher = DropFolderWatcher(runtime, folder, min_age_seconds=0)
    results = await watcher.scan_once()
    assert [r.ok for r in results] == [True, False]
    assert (folder / "processed" / "a_receipt.edi").exists()
    assert (folder / "rejected" / "b_bad.edi").exists()
    names = StreamNames.from_settings(runtime.settings)
    [letter] = await DeadLetters(runtime.redis, names).list()
    assert letter.stream == "intake:x12" and letter.entry_id == "dropfolder:b_bad.edi"
    async with StreamConsumer(runtime):
        await wait_drained(runtime.redis, names)
    assert (await runtime.ledger.stock("TEE-BLK-M"))["DC1"].on_hand == 48


def test_cli_ingest_file_and_dlq_commands(redis_url, key_prefix, tmp_path, monkeypatch, capsys):
    for name, value in {
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": key_prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path),
        "AVAILABILITY_PARTITIONS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    assert cli(["ingest", "file", "--format", "erp-csv", str(SAMPLES / "erp_snapshot_bad_rows.csv")]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["events"] >= 1 and report["rejected"] >= 2

    assert cli(["dlq", "list", "--json"]) == 0
    letters = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(letters) == report["rejected"] and all(x["reason"] == "row_error" for x in letters)

    assert cli(["dlq", "show", letters[0]["id"]]) == 0
    assert "row_error" in capsys.readouterr().out
    # Replay of an unfixed row is refused (exit 1) and the letter stays.
    assert cli(["dlq", "replay", letters[0]["id"]]) == 1
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("sku,location,on_hand,as_of\nTEE-BLK-L,DC1,3,2026-11-20T02:00:00Z\n")
    assert cli(["dlq", "replay", letters[0]["id"], "--payload-file", str(fixed)]) == 0
    capsys.readouterr()
    assert cli(["dlq", "list", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == report["rejected"] - 1
    assert cli(["ingest", "file", "--format", "x12", str(SAMPLES / "wms_bad_w14_total.edi")]) == 1
    assert cli(["ingest", "status"]) == 0
    assert "lag" in capsys.readouterr().out


async def test_canonical_events_file_format(runtime):
    import io

    from availability.ingest.sources import load

    lines = b"\n".join([encode_event(event("receipt", sku="F1", quantity=2)), b'{"oops": 1}', b""])
    report = await load("events", io.BytesIO(lines), EventPublisher(runtime), DeadLetters(runtime.redis, StreamNames.from_settings(runtime.settings)))
    assert (report.events, report.rejected) == (1, 1)


async def test_a_deeply_nested_entry_on_a_partition_is_dead_lettered_not_a_crash(runtime):
    # Producers other than ours (a NATS/Kafka publisher, a script writing to the stream) are
    # not depth-checked by the API: the consumer's decoder must refuse it by itself.
    names = StreamNames.from_settings(runtime.settings)
    good = event("receipt", sku="SKU-N", quantity=3, event_id="deep-1")
    payload = msgspec.json.encode(msgspec.to_builtins(good))[:-1] + b', "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    publisher = EventPublisher(runtime)
    await publisher.start()
    await publisher.publish_raw([(partition_of("SKU-N", names.partitions), payload)])
    await publisher.publish([event("receipt", sku="SKU-N", quantity=2, event_id="after-deep")])
    async with StreamConsumer(runtime):
        await wait_drained(runtime.redis, names)
    [letter] = await DeadLetters(runtime.redis, names).list()
    assert "5001 levels deep; at most 64" in letter.detail and letter.payload == payload
    assert (await runtime.ledger.stock("SKU-N"))["DC1"].on_hand == 2
