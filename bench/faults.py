"""What a worker does while I/O keeps failing: CPU and log lines per minute, per failure.

    sudo python bench/faults.py [--window 60] [--repo PATH] [--only NAME]

Each scenario starts a real ``spoolq worker`` on a fresh spool, brings about one failure that
does not go away by itself, waits until the worker has met it, then measures the worker
process's CPU time and its log lines over ``--window`` seconds.  ``--repo`` runs another
checkout's spoolq (e.g. an older commit in a worktree) with this checkout's rigs, so that a
before/after pair comes from one machine in one session.  Needs root (mounts, loop devices).
The rigs are those of ``tests/test_torture_io.py`` (``tests/io_faults.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _load(repo: Path) -> None:
    sys.path[:0] = [str(HERE / "tests"), str(repo)]  # the rigs from here, spoolq from ``repo``
    os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), str(HERE / "tests"), os.environ.get("PYTHONPATH", "")])


class Scenarios:
    """One method per persistent failure: each yields a worker that has met it, then cleans up."""

    def __init__(self, repo: Path) -> None:
        import io_faults
        import torture_tasks

        import spoolq

        torture_tasks.REPO_DIR = repo  # the workers import spoolq from there
        self.rig, self.tt, self.spoolq = io_faults, torture_tasks, spoolq

    def enqueue(self, spool: Path, ids: list[str], task: str = "torture.record", **options: object) -> None:
        app = self.spoolq.App(spool)
        for job_id in ids:
            app.send_task(task, args=["/dev/null", job_id], task_id=job_id, **options)
        app.spool.close()

    @contextmanager
    def worker(self, spool: Path, log: Path, obey_modes: bool = False) -> Iterator[object]:
        w = self.rig.LiveWorker(spool, log, obey_modes=obey_modes)
        try:
            w.wait_for(lambda: "ready:" in w.text(), "ready")
            yield w
        finally:
            try:
                os.kill(w.proc.pid, signal.SIGCONT)
                w.stop(20)
            except Exception:  # noqa: BLE001 - a spinning old worker may not stop: kill it
                try:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def enospc(self, tmp: Path) -> Iterator[object]:
        with self.rig.small_ext4(tmp / "disk") as disk:
            assert not isinstance(disk, str), disk
            spool = disk / "spool"
            subprocess.run(
                self.tt.worker_argv(spool, "--burst"),
                env=self.tt.child_env(),
                cwd=self.tt.TESTS_DIR,
                capture_output=True,
                timeout=60,
            )
            self.enqueue(spool, [f"m{i:04d}-{'x' * 40}" for i in range(300)], countdown=3600)
            for _ in range(3):
                self.rig.fill(disk / "ballast")
                os.sync()
            n = 0
            while True:
                try:
                    (spool / "delayed" / f"filler-{n:05d}-{'f' * 40}").touch()
                except OSError:
                    break
                n += 1
            with self.worker(spool, tmp / "log") as w:
                yield w

    def read_only(self, tmp: Path) -> Iterator[object]:
        with self.rig.small_ext4(tmp / "disk", 32, "errors=remount-ro") as disk:
            assert not isinstance(disk, str), disk
            spool = disk / "spool"
            self.enqueue(spool, ["warm"])
            with self.worker(spool, tmp / "log") as w:
                os.kill(w.proc.pid, signal.SIGSTOP)
                self.enqueue(spool, [f"ro{i}" for i in range(50)], task="torture.keep")
                self.rig.break_ext4(disk)
                os.kill(w.proc.pid, signal.SIGCONT)
                yield w

    def new_not_writable(self, tmp: Path) -> Iterator[object]:
        spool = tmp / "spool"
        self.enqueue(spool, ["warm"])
        with self.worker(spool, tmp / "log", obey_modes=True) as w:
            os.chmod(spool / "new", 0o500)
            self.enqueue(spool, [f"n{i}" for i in range(20)])
            yield w
            os.chmod(spool / "new", 0o700)

    def failed_not_writable(self, tmp: Path) -> Iterator[object]:
        spool = tmp / "spool"
        self.enqueue(spool, ["warm"])
        with self.worker(spool, tmp / "log", obey_modes=True) as w:
            os.chmod(spool / "failed", 0o500)
            app = self.spoolq.App(spool)
            app.send_task("no.such.task", task_id="unknown")
            app.send_task("torture.fail", args=["/dev/null", "fails"], task_id="fails")
            yield w
            os.chmod(spool / "failed", 0o700)

    def _removed(self, tmp: Path, state: str) -> Iterator[object]:
        spool = tmp / "spool"
        self.enqueue(spool, ["warm"])
        with self.worker(spool, tmp / "log") as w:
            shutil.rmtree(spool / state)
            self.enqueue(spool, [f"r{i}" for i in range(20)])
            self.enqueue(spool, [f"f{i}" for i in range(3)], task="torture.fail")
            yield w

    def ready_removed(self, tmp: Path) -> Iterator[object]:
        yield from self._removed(tmp, "ready")

    def active_removed(self, tmp: Path) -> Iterator[object]:
        yield from self._removed(tmp, "active")

    def running_file_removed(self, tmp: Path) -> Iterator[object]:
        spool = tmp / "spool"
        self.spoolq.App(spool).send_task("torture.sleep", args=["/dev/null", "long", 1.0], task_id="long")
        with self.worker(spool, tmp / "log") as w:
            w.wait_for(lambda: (spool / "active" / "long.json").exists(), "the long job")
            (spool / "active" / "long.json").unlink()
            time.sleep(1.5)
            self.enqueue(spool, [f"after{i}" for i in range(5)])
            yield w

    def spool_removed(self, tmp: Path) -> Iterator[object]:
        spool = tmp / "spool"
        self.enqueue(spool, ["warm"])
        with self.worker(spool, tmp / "log") as w:
            shutil.rmtree(spool)
            yield w


NAMES = {
    "enospc": "ENOSPC on a move (new/ -> delayed/)",
    "read_only": "read-only filesystem (ext4 error)",
    "new_not_writable": "new/ not writable",
    "failed_not_writable": "failed/ not writable",
    "ready_removed": "ready/ removed",
    "active_removed": "active/ removed",
    "running_file_removed": "a running job's active/ file removed",
    "spool_removed": "the spool removed (rm -rf)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per scenario [60]")
    parser.add_argument("--repo", type=Path, default=HERE, help="the checkout whose spoolq runs [this one]")
    parser.add_argument("--only", action="append", choices=sorted(NAMES), help="run only this scenario (repeatable)")
    args = parser.parse_args()
    _load(args.repo.resolve())
    scenarios = Scenarios(args.repo.resolve())
    print(f"# spoolq from {args.repo} ({_head(args.repo)}), window {args.window:g} s")
    print("| persistent error | worker CPU | log lines / min | worker after |")
    print("| --- | --- | --- | --- |")
    for key, name in NAMES.items():
        if args.only and key not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="spoolq-faults-") as d:
            it = getattr(scenarios, key)(Path(d))
            w = next(it)
            time.sleep(2.0)  # let it meet the error
            usage = w.measure(args.window)
            after = f"exited {w.proc.returncode}" if w.proc.poll() is not None else "running"
            print(f"| {name} | {usage.cpu_percent:.1f} % | {usage.lines_per_minute:,.0f} | {after} |", flush=True)
            for _ in it:
                pass


def _head(repo: Path) -> str:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
