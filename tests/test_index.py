"""The supervisor's in-memory index of the spool (:mod:`spoolq.index`): hints, never the truth.

The ready window holds the first names of ``ready/`` in dispatch order and leaves the rest on
disk; whatever arrives, jobs come out in the names' order.  The delayed heap gives due jobs
in due order.  A live id is only believed once the listings confirm it.
"""

from __future__ import annotations

import os
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.index import Index
from spoolq.job import Job
from spoolq.layout import DELAYED, NEW, READY, job_name, plain_name, ready_id, ready_name, timed_name
from spoolq.spool import Spool

UTC = timezone.utc
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def spool(spool_dir: Path):
    s = Spool(spool_dir, fsync=False)
    yield s
    s.close()


def name_of(i: int, priority: int = 0) -> str:
    """The ready/ name of job ``j<i>``, due ``i`` seconds after T0."""
    return ready_name(f"j{i:03d}", priority, T0 + timedelta(seconds=i))


def land(spool: Spool, name: str) -> None:
    """A file lands in ready/ under ``name`` (its content does not matter to the index)."""
    (spool.dir(READY) / name).write_bytes(b"{}")


def take(index: Index, spool: Spool) -> str | None:
    """Pop a name as dispatch does (refilling the window from the listing when it is half
    drained), check it is the first of ready/ in dispatch order, and claim it (it leaves
    ready/)."""
    if index.wants_refill():
        index.refill()
    popped = index.pop_ready()
    if popped is None:
        assert os.listdir(spool.dir(READY)) == [], "jobs left on disk that the index lost"
        return None
    assert popped[0] == min(os.listdir(spool.dir(READY)))
    os.unlink(spool.dir(READY) / popped[0])
    return popped[0]


def drain(index: Index, spool: Spool) -> list[str]:
    """Take every name (see :func:`take`)."""
    out = []
    while (name := take(index, spool)) is not None:
        out.append(name)
    return out


# -- the ready window ---------------------------------------------------------------------------


def test_a_push_beyond_the_window_spills_to_disk_and_keeps_the_first_names(spool):
    # Given a window of 4 and 6 jobs landing in ready/ in an arbitrary order
    index = Index(spool, window=4)
    names = [name_of(i) for i in range(6)]
    for name in [names[i] for i in (5, 2, 0, 4, 1, 3)]:
        land(spool, name)
        index.push_ready(name)
    # Then it indexes the first names only (at most the window, plus arrivals that sort
    # before its last), and knows that more wait on disk
    assert index.spilled
    assert len(index) <= 5
    # And draining it gives every name, in order
    assert drain(index, spool) == names
    assert not index.spilled


def test_an_arrival_that_sorts_after_the_window_waits_on_disk(spool):
    # Given a full window of j000..j003 (bound j003) with more on disk
    index = Index(spool, window=4)
    for i in range(5):
        land(spool, name_of(i))
        index.push_ready(name_of(i))
    assert len(index) == 4 and index.spilled
    # When a later job lands
    land(spool, name_of(9))
    index.push_ready(name_of(9))
    # Then it is not indexed
    assert len(index) == 4


def test_an_arrival_that_sorts_before_the_bound_joins_the_window(spool):
    # Given a full window (normal priority) with more on disk
    index = Index(spool, window=4)
    for i in range(8):
        land(spool, name_of(i))
        index.push_ready(name_of(i))
    # When a high-priority job lands
    urgent = name_of(50, priority=9)
    land(spool, urgent)
    index.push_ready(urgent)
    # Then it joins the window and is the next one out
    assert len(index) == 5
    popped = index.pop_ready()
    assert popped is not None and popped[0] == urgent


def test_the_window_is_refilled_from_disk_once_half_drained(spool):
    # Given 10 jobs on disk and a window of 4 loaded from the listing
    for i in range(10):
        land(spool, name_of(i))
    index = Index(spool, window=4)
    index.load()
    assert len(index) == 4 and index.spilled
    # When two are taken, no refill is wanted yet; after a third, one is
    for _ in range(2):
        name, _ = index.pop_ready()
        os.unlink(spool.dir(READY) / name)
    assert not index.wants_refill()
    name, _ = index.pop_ready()
    os.unlink(spool.dir(READY) / name)
    assert index.wants_refill()
    # Then a refill indexes the next names from disk, up to the window
    index.refill()
    assert len(index) == 4
    assert [index.pop_ready()[0] for _ in range(4)] == [name_of(i) for i in range(3, 7)]


def test_pop_gives_the_cached_job_or_none_to_read_the_file(spool):
    index = Index(spool, window=10)
    job = Job(id="j000", task="t", enqueued_at=T0)
    index.push_ready(name_of(1))
    index.push_ready(name_of(0), job)
    assert index.pop_ready() == (name_of(0), job)
    assert index.pop_ready() == (name_of(1), None)
    assert index.pop_ready() is None


@given(
    priorities=st.lists(st.integers(0, 9), min_size=1, max_size=40),
    window=st.integers(2, 8),
    seed=st.integers(0, 2**32),
    pops_between=st.integers(0, 3),
)
@settings(max_examples=60, deadline=None)
def test_whatever_arrives_when_jobs_come_out_in_dispatch_order(priorities, window, seed, pops_between):
    # Given jobs landing in ready/ in a random order, some taken between arrivals
    rnd = random.Random(seed)
    names = [name_of(i, p) for i, p in enumerate(priorities)]
    rnd.shuffle(names)
    with tempfile.TemporaryDirectory() as d:
        spool = Spool(Path(d) / "spool", fsync=False)
        index = Index(spool, window=window)
        taken: list[str] = []
        for name in names:
            land(spool, name)
            index.push_ready(name)
            for _ in range(rnd.randint(0, pops_between)):
                # Then each job taken is the first of those in ready/ at the time
                if (name := take(index, spool)) is not None:
                    taken.append(name)
        # When the rest is drained, Then every job came out exactly once
        rest = drain(index, spool)
        spool.close()
    assert sorted(taken + rest) == sorted(names)
    assert len(set(taken + rest)) == len(names)


# -- the delayed heap ---------------------------------------------------------------------------


def test_delayed_jobs_come_out_when_due_in_due_order(spool):
    index = Index(spool)
    assert index.next_due() is None
    dues = [T0 + timedelta(seconds=s) for s in (30, 10, 20)]
    for i, due in enumerate(dues):
        index.push_delayed(due, timed_name(f"d{i}", due), f"d{i}")
    # The first due is what the supervisor sleeps until
    assert index.next_due() == T0 + timedelta(seconds=10)
    # Nothing is due before its time
    assert index.pop_due(T0 + timedelta(seconds=9.999999)) is None
    # Then exactly those due at ``now``, earliest first
    now = T0 + timedelta(seconds=20)
    assert index.pop_due(now) == (dues[1], timed_name("d1", dues[1]))
    assert index.pop_due(now) == (dues[2], timed_name("d2", dues[2]))
    assert index.pop_due(now) is None
    assert index.next_due() == dues[0]


def test_a_due_job_that_could_not_be_moved_is_put_back(spool):
    index = Index(spool)
    due = T0 + timedelta(seconds=5)
    index.push_delayed(due, timed_name("d", due), "d")
    item = index.pop_due(due)
    assert item is not None
    index.unpop_due(*item)
    assert index.next_due() == due
    assert index.pop_due(due) == item


def test_load_indexes_what_the_directories_hold_and_skips_foreign_files(spool):
    due = T0 + timedelta(hours=1)
    delayed = timed_name("later", due)
    (spool.dir(DELAYED) / delayed).write_bytes(b"{}")
    (spool.dir(DELAYED) / "notes.txt").write_bytes(b"")
    land(spool, name_of(1))
    index = Index(spool)
    index.load()
    assert index.next_due() == due
    assert index.pop_due(due) == (due, delayed)
    assert index.pop_ready() == (name_of(1), None)
    assert index.pop_ready() is None


# -- live ids -----------------------------------------------------------------------------------


def test_an_id_is_queued_only_while_a_file_of_it_is_in_a_live_state(spool):
    # Given a job indexed in ready/ and one in delayed/
    index = Index(spool)
    ready = name_of(1)
    land(spool, ready)
    index.push_ready(ready)
    due = T0 + timedelta(hours=1)
    delayed = timed_name("later", due)
    (spool.dir(DELAYED) / delayed).write_bytes(b"{}")
    index.push_delayed(due, delayed, "later")
    assert index.is_queued(ready_id(ready))
    assert index.is_queued("later")
    assert not index.is_queued("never-seen")
    # When an operator moves the delayed one back into new/ (to run it now)
    os.rename(spool.dir(DELAYED) / delayed, spool.dir(NEW) / plain_name("later"))
    # Then it is not queued any more (the index is only a hint), and stays forgotten
    assert not index.is_queued("later")
    assert "later" not in index._live
    # And an id that left through the supervisor is forgotten without a look at the disk
    index.gone(ready_id(ready))
    assert not index.is_queued(ready_id(ready))


def test_an_id_noted_live_is_confirmed_in_active_too(spool):
    index = Index(spool)
    job = Job(id="running", task="t", enqueued_at=T0)
    index.live("running")
    assert not index.is_queued("running")  # noted, but no file anywhere
    index.live("running")
    spool.write("active", plain_name("running"), job)
    assert index.is_queued("running")
    assert job_name("active", job) == "running.json"
