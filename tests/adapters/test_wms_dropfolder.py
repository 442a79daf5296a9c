"""The WMS drop folder: parse, publish, file away; reject with a reason; retry on publish failure."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from adapters.wms.dropfolder import process_drop_folder


@pytest.fixture
def folder(tmp_path, samples):
    for name in ("wms_944_receipt.edi", "wms_945_pipe_delimited.x12", "wms_bad_se_count.edi"):
        shutil.copy(samples / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not EDI")
    (tmp_path / ".partial.edi").write_text("still uploading")
    return tmp_path


def test_good_files_are_published_then_processed_bad_ones_rejected_with_a_reason(folder):
    published = {}
    results = list(process_drop_folder(folder, lambda path, events: published.update({path.name: events})))

    assert [(r.path.name, r.ok) for r in results] == [
        ("wms_944_receipt.edi", True),
        ("wms_945_pipe_delimited.x12", True),
        ("wms_bad_se_count.edi", False),
    ]
    assert [e.type for e in published["wms_944_receipt.edi"]] == ["receipt"] * 3
    assert results[0].events == published["wms_944_receipt.edi"]
    assert sorted(p.name for p in (folder / "processed").iterdir()) == [
        "wms_944_receipt.edi",
        "wms_945_pipe_delimited.x12",
    ]
    rejected = folder / "rejected"
    assert results[2].moved_to == rejected / "wms_bad_se_count.edi"
    reason = (rejected / "wms_bad_se_count.edi.error.txt").read_text()
    assert "SE segment #16" in reason and "SE-01 says 12 segments" in reason
    assert str(results[2].error) in reason
    # Other files are left alone.
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [".partial.edi", "notes.txt"]


def test_a_failed_publish_leaves_the_file_for_the_next_scan(folder):
    def broken(path, events):
        raise ConnectionError("redis down")

    results = list(process_drop_folder(folder, broken))
    kept = [r for r in results if r.moved_to is None]
    assert {r.path.name for r in kept} == {"wms_944_receipt.edi", "wms_945_pipe_delimited.x12"}
    assert all(isinstance(r.error, ConnectionError) for r in kept)
    assert (folder / "wms_944_receipt.edi").exists()

    again = list(process_drop_folder(folder, lambda path, events: None))
    assert [r.path.name for r in again] == ["wms_944_receipt.edi", "wms_945_pipe_delimited.x12"]
    assert not (folder / "wms_944_receipt.edi").exists()


def test_a_resent_file_of_the_same_name_is_kept_beside_the_first_with_the_same_ids(folder, samples):
    first = list(process_drop_folder(folder))
    shutil.copy(samples / "wms_944_receipt.edi", folder / "wms_944_receipt.edi")
    second = list(process_drop_folder(folder))
    assert second[0].moved_to == folder / "processed" / "wms_944_receipt.1.edi"
    assert [e.event_id for e in second[0].events] == [e.event_id for e in first[0].events]


def test_young_files_wait_and_extensions_are_case_insensitive(tmp_path, samples):
    shutil.copy(samples / "wms_846_inventory.edi", tmp_path / "COUNT.EDI")
    assert list(process_drop_folder(tmp_path, min_age_seconds=60)) == []
    old = time.time() - 120
    os.utime(tmp_path / "COUNT.EDI", (old, old))
    (result,) = process_drop_folder(tmp_path, min_age_seconds=60)
    assert result.ok and len(result.events) == 4


def test_location_map_reaches_the_parser(tmp_path, samples):
    shutil.copy(samples / "wms_945_shipment.edi", tmp_path / "a.edi")
    (result,) = process_drop_folder(tmp_path, location_map={"DC1": "DALLAS"})
    assert {e.location for e in result.events} == {"DALLAS"}
