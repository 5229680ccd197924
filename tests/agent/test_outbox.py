"""The agent's buffer of unacknowledged task frames (agent/outbox.py): order, acks, bounded memory, the spill file."""

from __future__ import annotations

from pathlib import Path

from cellgate.agent.outbox import SPILL_FILE, Outbox


def test_frames_are_resent_in_order_until_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path, memory_bytes=1 << 20)
    box.add(1, 1, "a1")
    box.add(2, 1, "b1")
    box.add(1, 2, "a2")
    assert list(box.frames()) == ["a1", "b1", "a2"]
    box.ack(1, 1)
    assert list(box.frames()) == ["b1", "a2"]
    assert box.pending() == {1: 1, 2: 1}
    box.ack(1, 5)
    box.ack(2, 1)
    assert list(box.frames()) == [] and box.pending() == {} and box.in_memory == 0


def test_beyond_the_memory_bound_frames_spill_to_disk_and_the_file_goes_once_all_are_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path, memory_bytes=100)
    texts = [f"frame {i:03d} " + "x" * 40 for i in range(10)]
    for seq, text in enumerate(texts, 1):
        box.add(7, seq, text)
    assert box.in_memory <= 100  # the rest is on disk
    spill = tmp_path / SPILL_FILE
    assert spill.exists() and spill.stat().st_mode & 0o777 == 0o600
    assert list(box.frames()) == texts  # in order, from memory and disk alike
    box.ack(7, 5)
    assert list(box.frames()) == texts[5:]
    box.ack(7, 10)
    assert box.in_memory == 0 and not spill.exists()  # memory and disk back to their baseline


def test_an_earlier_runs_spill_file_is_dropped(tmp_path: Path) -> None:
    (tmp_path / SPILL_FILE).write_text("stale")
    Outbox(tmp_path, memory_bytes=100).drop_stale()
    assert not (tmp_path / SPILL_FILE).exists()
