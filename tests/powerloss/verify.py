"""Mount each crash image and check what a power loss must not take: acknowledged jobs.

A job is *required* at a crash point when its ``ack`` mark came before the point and no
``ran`` mark did: it was promised and never started; or when it ran but its outcome is a file
(a kept result, a failure) or a retry, which spoolq writes before it lets go of the job.  In
the image it must sit in some state directory as a file that parses as a job.  Two copies
(``ready/`` and ``active/``, an outcome and ``active/``) are allowed: an unflushed rename may
be half undone, and spoolq's recovery resolves both.  For a sample of images, a real
``spoolq worker --burst`` then drains the spool, and every required job without an outcome
on disk must run or end in ``failed/`` with a reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from spoolq.errors import SpoolqError
from spoolq.job import Job
from spoolq.layout import DONE, FAILED, LIVE_STATES, STATES, parse_name

from .replay import CrashPoint, CrashState, ImageBuilder, Mark, crash_points, parse_log, plan
from .rig import HANG_S, attach_loop, child_env, kill_group, mount
from .workload import Recording

# After how many runs a job of each task of powerloss_tasks.py may vanish (its success is
# discarded); the others end as a file (done/, failed/) and never may.  Not imported from
# there: that would declare the tasks in pytest's own process.
RUNS_TO_VANISH = {"powerloss.work": 1, "powerloss.flaky": 2}


@dataclass
class Inventory:
    """The jobs in a spool: id -> the states holding a valid file of it; and what is broken."""

    found: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # id -> (dev, inode) of its copies
    invalid: list[str] = field(default_factory=list)
    failed_reasons: dict[str, str] = field(default_factory=dict)

    def copies(self, job_id: str) -> str:
        """Where a job is, e.g. ``active+ready``; ``(one file)`` when those are two names of
        one file (a move half undone: btrfs replays that)."""
        where = "+".join(sorted(self.found[job_id]))
        return where + (" (one file)" if len(self.files[job_id]) < len(self.found[job_id]) else "")


def take_inventory(spool: Path) -> Inventory:
    """Read every job-named file of every state; a file that does not parse is not a job."""
    inv = Inventory()
    for state in STATES:
        try:
            names = os.listdir(spool / state)
        except FileNotFoundError:
            continue
        for name in names:
            job_id, _ = parse_name(state, name)
            if job_id is None:
                continue  # a rejected non-job (.bad) and its reason: not any producer's job
            try:
                with open(spool / state / name, "rb") as f:
                    st = os.fstat(f.fileno())
                    job = Job.from_json(f.read())
            except (OSError, SpoolqError, ValueError) as exc:
                inv.invalid.append(f"{state}/{name}: {exc}")
                continue
            inv.found.setdefault(job.id, []).append(state)
            inv.files.setdefault(job.id, set()).add((st.st_dev, st.st_ino))
            if state == FAILED and job.errors:
                inv.failed_reasons[job.id] = str(job.errors[-1].get("message", "?"))
    return inv


@dataclass
class Figures:
    """What checking one recording found; ``lost`` maps a job to the first state that lost it."""

    fs: str
    fsync: bool
    jobs: int
    run_s: float
    acks: int = 0
    points: int = 0
    states: int = 0
    subset_states: int = 0
    lost: dict[str, str] = field(default_factory=dict)
    lost_started: dict[str, str] = field(default_factory=dict)
    losing_points: int = 0
    ran_before_ack: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)
    invalid: list[str] = field(default_factory=list)
    drains: int = 0
    drained_jobs: int = 0
    drain_problems: list[str] = field(default_factory=list)
    log_complete: bool = False

    def summary(self) -> str:
        return "\n  ".join(
            [
                f"{self.fs}, fsync {'on' if self.fsync else 'off'}: {self.jobs} jobs, run {self.run_s:.1f} s",
                f"crash points: {self.points} (after each of {self.acks} acknowledgements and each task start, "
                "before each flush)",
                f"crash states mounted: {self.states} ({self.subset_states} keeping a random torn subset of the "
                "unflushed writes)",
                f"jobs that started before their ack mark (so never required as not started): {self.ran_before_ack}",
                f"acknowledged jobs lost: {len(self.lost)} not yet started, {len(self.lost_started)} started with an "
                f"outcome to keep (at {self.losing_points} crash points); invalid job files: {len(self.invalid)}",
                "required jobs found in two states, per image: "
                + (", ".join(f"{pair} {n}" for pair, n in self.duplicates.most_common()) or "none"),
                f"drained: {self.drains} crash states, {self.drained_jobs} required jobs; problems: "
                f"{len(self.drain_problems)}",
            ]
        )


@dataclass(frozen=True)
class Required:
    """What must be in a crash image.  ``unstarted``: acknowledged, not yet started.
    ``started``: acknowledged, run, and not ended in a way that lets the job vanish: a kept
    result, a failure, a pending retry; spoolq writes that outcome before it lets go of the
    job, so some copy is always there."""

    unstarted: frozenset[str]
    started: frozenset[str]


def required_at(marks: list[Mark], points: list[CrashPoint]) -> dict[CrashPoint, Required]:
    """For each point: what must be in its images."""
    out: dict[CrashPoint, Required] = {}
    task: dict[str, str] = {}
    runs: dict[str, int] = {}
    done = 0
    for point in sorted(points, key=lambda p: p.marks):
        for mark in marks[done : point.marks]:
            if mark.kind == "ack":
                task[mark.job_id] = mark.task
            else:
                runs[mark.job_id] = runs.get(mark.job_id, 0) + 1
        done = max(done, point.marks)
        unstarted = frozenset(j for j in task if j not in runs)
        started = frozenset(j for j, t in task.items() if 0 < runs.get(j, 0) < RUNS_TO_VANISH.get(t, 1 << 30))
        out[point] = Required(unstarted, started)
    return out


def check_recording(
    stack: contextlib.ExitStack, rec: Recording, work: Path, *, subset_points: int, subsets: int, drains: int, seed: int
) -> Figures:
    """Build, mount and check the crash states of a recording (see the module docstring).

    Parameters:
        subset_points, subsets: at how many crash points, and how many times at each, to keep
            a random torn subset of the unflushed writes (every point also gets the state
            with all of them dropped).
        drains: how many crash states, drawn at random, also get drained by a real worker;
            besides those, the first image of each kind of duplicate (``active+ready``...).
        seed: for the subsets and the drain sample, printed so a failure can be replayed.
    """
    fig = Figures(rec.kind.name, rec.fsync, rec.jobs, rec.seconds)
    log = parse_log(rec.log)
    rng = random.Random(seed)
    points = crash_points(log)
    fig.acks = sum(1 for m in log.marks if m.kind == "ack")
    seen_ran: set[str] = set()
    for m in log.marks:  # the worker can start a job before its producer writes the ack mark
        if m.kind == "ran":
            seen_ran.add(m.job_id)
        elif m.job_id in seen_ran:
            fig.ran_before_ack += 1
    fig.points = len(points)
    required = required_at(log.marks, points)
    states = plan(log, points, subset_points, subsets, rng)
    builder = ImageBuilder(log, rec.base, work)
    stack.callback(builder.close)
    to_drain = _drain_sample(states, required, drains, rng)
    drained_kinds: set[str] = set()
    losing: set[CrashPoint] = set()
    for n, (state, pts) in enumerate(states.items()):
        fig.states += 1
        fig.subset_states += bool(state.kept)
        image = builder.build(state, work / "crash.img")
        with contextlib.ExitStack() as state_stack:
            stack.push(state_stack)
            mnt = work / "crash"
            inv = _mount_and_inventory(state_stack, rec, image, mnt)
            present: set[str] = set()
            for p in pts:
                for lost, jobs in ((fig.lost, required[p].unstarted), (fig.lost_started, required[p].started)):
                    missing = jobs - set(inv.found)
                    for job_id in sorted(missing):
                        lost.setdefault(job_id, f"crash {p.why}, {state.label}")
                        losing.add(p)
                    present |= jobs & set(inv.found)
            kinds = [inv.copies(j) for j in present if len(inv.found[j]) > 1]
            fig.duplicates.update(kinds)
            fig.invalid += [f"{state.label}: {x}" for x in inv.invalid]
            # Recovery is what duplicates test: the first image of each kind is drained too.
            if state in to_drain or set(kinds) - drained_kinds:
                drained_kinds.update(kinds)
                fig.drains += 1
                # Those with no outcome on disk; recovery rightly drops a copy left beside one.
                live = {j for j in present if not set(inv.found[j]) & {DONE, FAILED}}
                fig.drained_jobs += len(live)
                fig.drain_problems += _drain(mnt / "spool", live, work / f"drain-{n}.marks")
        image.unlink()
    fig.losing_points = len(losing)
    fig.log_complete = builder.matches(rec.final)
    return fig


def _drain_sample(
    states: dict[CrashState, list[CrashPoint]], required: dict[CrashPoint, Required], n: int, rng: random.Random
) -> set[CrashState]:
    """``n`` states that must hold jobs, half of them with torn unflushed writes kept."""
    holding = [s for s, pts in states.items() if any(required[p].unstarted | required[p].started for p in pts)]
    torn = [s for s in holding if s.kept]
    chosen = set(rng.sample(torn, min(n // 2, len(torn))))
    rest = [s for s in holding if s not in chosen]
    return chosen | set(rng.sample(rest, min(n - len(chosen), len(rest))))


def _mount_and_inventory(stack: contextlib.ExitStack, rec: Recording, image: Path, mnt: Path) -> Inventory:
    """Attach and mount a crash image (the filesystem replays its journal), list its spool."""
    dev = attach_loop(stack, image)
    mount(stack, rec.kind, dev, mnt)
    return take_inventory(mnt / "spool")


def _drain(spool: Path, present: set[str], marks: Path) -> list[str]:
    """Run ``spoolq worker --burst`` on a crash image: recovery, then every job.  Returns the
    problems: a required job that neither ran nor failed with a reason, a job left behind."""
    marks.write_bytes(b"")
    env = child_env(POWERLOSS_MARKS=str(marks), SPOOLQ_BURST_HORIZON="5")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spoolq",
            "--spool",
            str(spool),
            "worker",
            "--burst",
            "-I",
            "powerloss_tasks",
            "-c",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=HANG_S * 2)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return [f"drain of {spool} did not finish within the bound"]
    problems = []
    if proc.returncode != 0:
        problems.append(f"drain exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    ran = {line.split(" ", 1)[1] for line in marks.read_text().splitlines() if line.startswith("ran ")}
    after = take_inventory(spool)
    unaccounted = present - ran - set(after.failed_reasons)
    problems += [f"{j}: neither ran nor failed with a reason" for j in sorted(unaccounted)]
    left = {j for j, states in after.found.items() if set(states) & set(LIVE_STATES) - {"delayed"}}
    problems += [f"{j}: left in {after.found[j]} after the drain" for j in sorted(left)]
    return problems
