"""Folder delivery's ledger: what a retry finds after a crash at each point, and markers as hard links.

Each crash point is set up on a real folder as the interrupted attempt would have left it (temp file,
marker, published file), then a retry (attempts 2) runs against it.
"""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relay_helpers import drop, make_config, wait_for
from test_relay import dialog

from hub.relay.delivery import LEDGER, PRUNE_EVERY_S, SEED, SEED_EVERY_S, FolderDeliverer, Outcome, file_name
from hub.relay.lifecycle import State
from hub.relay.pipeline import DeliveryError, Route, RouteKind
from hub.relay.register import Party
from hub.relay.server import Relay
from hub.store import Message

DATA = b"<MsgHead>payload</MsgHead>\n" * 40


def message(short_id: str, attempts: int = 1) -> Message:
    now = datetime.now(UTC)
    return Message(id=f"id-{short_id}", short_id=short_id, state=State.SENDING, attempts=attempts,
                   max_retries=5, retry_interval_s=30, size=len(DATA), sha256="x", created_at=now,
                   updated_at=now, msg_type="DIALOG_NOTAT")


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Route]:
    (tmp_path / "in").mkdir()
    return tmp_path, Route(RouteKind.FOLDER, 1, str(tmp_path), Party(1, "System"))


def test_first_attempt_publishes_and_marks_with_a_link(folder: tuple[Path, Route]) -> None:
    root, route = folder
    d = FolderDeliverer()
    for i in range(3):
        res = d.deliver(route, DATA, message(f"m{i}"))
        assert res.outcome is Outcome.DELIVERED
    inbox = root / "in"
    names = sorted(p.name for p in inbox.iterdir() if not p.name.startswith("."))
    assert names == sorted(file_name(message(f"m{i}")) for i in range(3))
    assert all((inbox / n).read_bytes() == DATA for n in names)
    assert stat.S_IMODE((inbox / names[0]).stat().st_mode) == 0o600
    assert not [p for p in inbox.iterdir() if p.name.endswith(".tmp")]
    ledger = inbox / LEDGER
    seeds = [p for p in ledger.iterdir() if p.name.startswith(SEED)]
    assert len(seeds) == 1 and seeds[0].stat().st_size == 0
    # three markers, all one inode with the seed: no data, no inode of their own
    markers = [ledger / n for n in names]
    assert {m.stat().st_ino for m in markers} == {seeds[0].stat().st_ino}
    assert seeds[0].stat().st_nlink == 4


def test_retry_after_a_crash_before_the_rename_publishes_the_temp_file(folder: tuple[Path, Route]) -> None:
    root, route = folder
    m = message("r1", attempts=2)
    inbox = root / "in"
    name = file_name(m)
    (inbox / f".{name}.tmp").write_bytes(DATA)
    (inbox / LEDGER).mkdir()
    (inbox / LEDGER / name).touch()
    res = FolderDeliverer().deliver(route, DATA, m)
    assert res.outcome is Outcome.DELIVERED and "earlier attempt" not in res.detail
    assert (inbox / name).read_bytes() == DATA
    assert not (inbox / f".{name}.tmp").exists()


def test_retry_after_publishing_writes_no_second_copy(folder: tuple[Path, Route]) -> None:
    root, route = folder
    d = FolderDeliverer()
    first = message("p1")
    d.deliver(route, DATA, first)
    inbox = root / "in"
    (inbox / file_name(first)).unlink()  # the receiver took it; then the relay crashed before its commit
    res = FolderDeliverer().deliver(route, DATA, message("p1", attempts=2))
    assert res.outcome is Outcome.DELIVERED and "published by an earlier attempt" in res.detail
    assert not (inbox / file_name(first)).exists()


def test_retry_of_a_partly_written_temp_file_writes_it_again(folder: tuple[Path, Route]) -> None:
    root, route = folder
    m = message("t1", attempts=2)
    inbox = root / "in"
    name = file_name(m)
    (inbox / f".{name}.tmp").write_bytes(DATA[:10])  # crashed while writing: no marker yet
    FolderDeliverer().deliver(route, DATA, m)
    assert (inbox / name).read_bytes() == DATA
    assert (inbox / LEDGER / name).exists()


def test_a_missing_folder_is_a_transient_fault(tmp_path: Path) -> None:
    route = Route(RouteKind.FOLDER, 1, str(tmp_path / "nowhere"), Party(1, "System"))
    with pytest.raises(DeliveryError) as err:
        FolderDeliverer().deliver(route, DATA, message("x1"))
    assert err.value.code == "folder.missing" and not err.value.permanent


def test_prune_keeps_markers_for_their_seed_age_plus_the_margin(folder: tuple[Path, Route]) -> None:
    root, route = folder
    d = FolderDeliverer(keep_markers_s=100.0)
    d.deliver(route, DATA, message("o1"))
    inbox = root / "in"
    ledger = inbox / LEDGER
    seed = next(p for p in ledger.iterdir() if p.name.startswith(SEED))
    t0 = seed.stat().st_mtime
    assert d.prune(inbox, t0 + 100.0 + SEED_EVERY_S - 1) == 0
    assert d.prune(inbox, t0 + 100.0 + SEED_EVERY_S + 1) == 2  # the marker and its seed
    assert list(ledger.iterdir()) == []
    # the deliverer's seed is gone: the next marker links to a new one
    d.deliver(route, DATA, message("o2"))
    assert (ledger / file_name(message("o2"))).exists()
    assert len([p for p in ledger.iterdir() if p.name.startswith(SEED)]) == 1
    assert os.stat(ledger / file_name(message("o2"))).st_nlink == 2


def test_housekeep_prunes_the_ledgers_written_to_at_most_once_an_hour(folder: tuple[Path, Route]) -> None:
    root, route = folder
    d = FolderDeliverer(keep_markers_s=100.0)
    d.deliver(route, DATA, message("h1"))
    ledger = root / "in" / LEDGER
    t0 = next(p for p in ledger.iterdir() if p.name.startswith(SEED)).stat().st_mtime
    late = t0 + 100.0 + SEED_EVERY_S + 1
    assert d.housekeep(t0 + PRUNE_EVERY_S - 10) == 0  # too soon after start: no scan at all
    assert len(list(ledger.iterdir())) == 2
    assert d.housekeep(late + PRUNE_EVERY_S) == 2  # the marker and its seed
    assert list(ledger.iterdir()) == []
    d.deliver(route, DATA, message("h2"))
    assert d.housekeep(late + PRUNE_EVERY_S + 60) == 0  # the last clean-up was a minute ago


def test_the_relays_sweep_keeps_the_ledger_from_growing(tmp_path: Path) -> None:
    """A relay's worker sweep forgets markers older than keep_markers_s (a real relay, folder to folder)."""
    relay = Relay(make_config(tmp_path / "hub"))
    relay.start()
    try:
        mid = str(uuid.uuid4())
        drop(relay.cfg.spool_root / "82001", "d.xml", dialog(msg_id=mid))
        wait_for(lambda: any(m.state is State.AWAITING_APPREC for m in relay.store.find_by_kith_msg_id(mid)))
        ledger = relay.cfg.spool_root / "81001" / "in" / LEDGER
        assert any(not p.name.startswith(SEED) for p in ledger.iterdir())
        folder_deliverer = relay.worker.deliverers[RouteKind.FOLDER]
        assert isinstance(folder_deliverer, FolderDeliverer)
        # as if the markers were a week old and the last clean-up an hour ago
        folder_deliverer.keep_markers_s = -SEED_EVERY_S - 3600
        folder_deliverer._pruned_at -= PRUNE_EVERY_S
        wait_for(lambda: not list(ledger.iterdir()), what="the sweep's clean-up")
    finally:
        relay.stop()
