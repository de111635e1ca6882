"""A state machine over the spool: whatever happens, no job is lost and none is in two places.

Hypothesis drives a real :class:`~spoolq.supervisor.Supervisor` (a pool of two real children)
with a fake clock: enqueue jobs that succeed, fail, retry or sleep, due now or later; tick
the loop; SIGKILL a child; advance the clock; crash the supervisor (its pool killed, its lock
released, nothing returned) and start a new one on the same spool.  After every step each job
ever enqueued is in exactly one of new/ ready/ active/ delayed/ failed/ done/, or has
finished (a successful task notes its id in an O_APPEND file before the job is deleted).
Children move files on their own (they claim and discard jobs), so the invariant compares
two listings taken one after the other, and retries until they agree.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import wait
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from worker_tasks import lines

import spoolq
from spoolq.layout import STATES
from spoolq.registry import discover
from spoolq.spool import Spool
from spoolq.supervisor import Supervisor


class _MachineClock:
    """The machine's wall time (it steps it), and the real monotonic time (children really
    run and die meanwhile)."""

    def __init__(self, machine: object) -> None:
        self._machine = machine

    def now(self):  # noqa: ANN201
        return self._machine.now  # type: ignore[attr-defined]

    def mono(self) -> float:
        return time.monotonic()


pytestmark = pytest.mark.timeout(240)

KINDS = {
    "ok": "wt.record",  # notes "<id> <pid>", succeeds
    "slow": "wt.sleep",  # notes "start <id> <pid>", sleeps, notes "end <id>", succeeds
    "fail": "wt.fail",  # raises, no retries: failed/
    "retry": "wt.retry",  # retries twice after 0.1 s, then failed/
}
SETTLE_S = 10.0  # bound for busy children to answer: only catches hangs


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # killed by an earlier step and not replaced yet
        pass


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="spoolq-machine-"))
        self.spool_dir = self.root / "spool"
        self.notes = str(self.root / "notes")
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)
        self.app = spoolq.App(self.spool_dir, fsync=False, clock=lambda: self.now)
        self.registry = discover(["worker_tasks"], use_entry_points=False)
        self.ids: dict[str, str] = {}  # id -> kind
        self.killed_busy = 0
        self.sup = self._new_supervisor()

    def _new_supervisor(self) -> Supervisor:
        sup = Supervisor(
            Spool(self.spool_dir, fsync=False),
            self.registry,
            concurrency=2,
            rescan_interval=0.0,
            clock=_MachineClock(self),
            shutdown_timeout=0.0,
        )
        sup.start()
        return sup

    def teardown(self) -> None:
        event(f"busy children killed: {min(self.killed_busy, 3)}{'+' if self.killed_busy > 3 else ''}")
        try:
            self.sup.close()
        finally:
            self.app.spool.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(KINDS)), when=st.sampled_from([None, 0.0, 0.5, 5.0, "eta"]))
    def enqueue(self, kind: str, when: float | str | None) -> None:
        options: dict = {}
        if when == "eta":
            options["eta"] = self.now + timedelta(seconds=2)
        elif when is not None:
            options["countdown"] = when
        job_id = f"{kind}-{len(self.ids)}"
        args = [self.notes, job_id, 0.2] if kind == "slow" else [self.notes, job_id]
        self.app.send_task(KINDS[kind], args=args, task_id=job_id, **options)
        self.ids[job_id] = kind

    @rule()
    def tick(self) -> None:
        """One tick, then more until the children that were given work have answered."""
        self.sup.tick(self.now)
        deadline = time.monotonic() + SETTLE_S
        while self.sup.pool.busy():
            assert time.monotonic() < deadline, "busy children never answered"
            wait(self.sup.pool.waitables(), 0.05)
            self.sup.tick(self.now)

    @rule()
    def tick_without_waiting(self) -> None:
        """One tick only: children may stay busy, so kills and crashes can hit running jobs."""
        self.sup.tick(self.now)

    @rule(seconds=st.sampled_from([0.1, 1.0, 3.0, 200.0]))
    def advance_clock(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(busy_only=st.booleans())
    def kill_a_child(self, busy_only: bool) -> None:
        """SIGKILL a pool child (with ``busy_only``: tick first to dispatch, then a busy one
        if there is one)."""
        if busy_only:
            self.sup.tick(self.now)
        if self.sup.pool.busy():
            self.killed_busy += 1
        slots = self.sup.pool.busy() if busy_only and self.sup.pool.busy() else self.sup.pool.slots
        _kill(slots[0].process.pid)
        slots[0].process.join(5)

    @precondition(lambda self: self.ids)
    @rule()
    def crash_and_restart(self) -> None:
        """The supervisor dies without returning anything; a new one starts on the spool."""
        old = self.sup
        for s in old.pool.slots:
            _kill(s.process.pid)
        old.pool.stop()
        old.wakeups.watcher.stop()
        old.lock.release()
        old.wakeups.waker.close()
        old.spool.close()
        old.started = False
        self.sup = self._new_supervisor()
        assert os.listdir(self.spool_dir / "active") == []  # recovered into ready/

    @precondition(lambda self: self.ids)
    @rule()
    def drain(self) -> None:
        """Let time pass until nothing is queued: every job ends (none stays stuck)."""
        for _ in range(40):
            if not any(os.listdir(self.spool_dir / s) for s in ("new", "ready", "active", "delayed")):
                break
            self.now += timedelta(seconds=1000)
            self.tick()
        else:
            raise AssertionError(f"still queued: { {s: os.listdir(self.spool_dir / s) for s in STATES} }")
        failed = {n[:-5].rsplit("Z-", 1)[-1] for n in os.listdir(self.spool_dir / "failed")}
        for job_id, kind in self.ids.items():
            if kind in ("fail", "retry"):
                assert job_id in failed, f"{job_id} did not end in failed/"

    # -- the invariant --------------------------------------------------------------------

    def _snapshot(self) -> tuple[dict[str, list[str]], list[str]]:
        places: dict[str, list[str]] = {}
        for state in STATES:
            for name in sorted(os.listdir(self.spool_dir / state)):
                job_id = name[:-5].rsplit("Z-", 1)[-1] if name.endswith(".json") else name
                places.setdefault(job_id, []).append(state)
        return places, lines(self.notes)

    @invariant()
    def every_job_is_in_exactly_one_place_or_finished(self) -> None:
        # Children claim (new/ or ready/ → active/) and discard jobs on their own, so one
        # pass over the directories can see a job mid-move in two of them, or in none: take
        # the listing (and the notes) again until two passes agree.
        snapshot = self._snapshot()
        for _ in range(200):
            again = self._snapshot()
            if again == snapshot:
                break
            snapshot = again
            time.sleep(0.001)
        places, noted = snapshot
        finished = {ln.split()[0] for ln in noted if not ln.startswith(("start", "end"))}
        finished |= {ln.split()[1] for ln in noted if ln.startswith("end")}
        unknown = set(places) - set(self.ids)
        assert not unknown, f"files of no job: {unknown}"
        for job_id, kind in self.ids.items():
            where = places.get(job_id, [])
            assert len(where) <= 1, f"{job_id} is in {where}"
            if not where:
                assert kind in ("ok", "slow") and job_id in finished, f"{job_id} ({kind}) was lost"


SpoolMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_spool_machine = SpoolMachine.TestCase
