"""The journal's framing: every valid record survives damage around it."""

from __future__ import annotations

import os
from pathlib import Path

from nbmlops.journal import Cursor, Damage, Journal, read_records, try_lock


def _records(path: Path) -> tuple[list[dict], list[Damage]]:
    good, bad = [], []
    for _, entry in read_records(path):
        (bad if isinstance(entry, Damage) else good).append(entry)
    return good, bad


def test_appended_records_read_back_in_order_with_end_offsets(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    ends = journal.append([{"t": "a", "i": 1}, {"t": "b", "i": 2, "text": "ünïcode"}])
    ends += journal.append([{"t": "c", "i": 3}])
    journal.sync()
    assert ends == [end for end, _ in read_records(journal.path)]
    assert [r["i"] for r in _records(journal.path)[0]] == [1, 2, 3]
    assert [r["i"] for _, r in read_records(journal.path, start=ends[0])] == [2, 3]


def test_flipped_byte_and_truncated_tail_are_reported_with_offset_and_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    ends = journal.append([{"i": i, "pad": "x" * 50} for i in range(5)])
    journal.close(remove=False)
    data = bytearray(journal.path.read_bytes())
    data[ends[1] + 20] ^= 0xFF  # inside record 2's payload
    data = data[:-7]  # record 4 cut short
    journal.path.write_bytes(bytes(data))
    good, bad = _records(journal.path)
    assert [r["i"] for r in good] == [0, 1, 3]
    assert [d.offset for d in bad] == [ends[1], ends[3]]
    assert "checksum" in bad[0].reason and "truncated" in bad[1].reason
    assert str(journal.path) in str(bad[0])


def test_garbage_between_records_is_skipped_to_the_next_marker(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"i": 0}])
    journal.close(remove=False)
    with open(journal.path, "ab") as fh:
        fh.write(b"\x00garbage\xff" * 3)
    second = Journal(tmp_path)
    second.append([{"i": 1}])
    second.close(remove=False)
    with open(journal.path, "ab") as fh:
        fh.write(second.path.read_bytes())
    good, bad = _records(journal.path)
    assert [r["i"] for r in good] == [0, 1]
    assert len(bad) == 1 and bad[0].reason == "no record marker"


def test_a_live_journal_cannot_be_taken_and_a_released_one_can(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert try_lock(journal.path) is None
    journal.close(remove=False)
    fd = try_lock(journal.path)
    assert fd is not None
    os.close(fd)


def test_cursor_round_trips_and_closing_after_delivery_removes_both_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"i": 0}])
    Cursor(offset=12, runs={"k": "run-1"}).save(journal.path)
    assert Cursor.load(journal.path) == Cursor(offset=12, runs={"k": "run-1"})
    journal.close(remove=True)
    assert list(tmp_path.iterdir()) == []
