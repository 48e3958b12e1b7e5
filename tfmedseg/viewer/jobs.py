"""The viewer's segmentation queue: requests run one at a time, in order, none is lost.

A browser posts a segmentation request and gets a job id at once; one worker thread takes the jobs
in submission order (the CPU / GPU does one model call at a time anyway) and records each job's
state, stage and progress, which the page polls. A failing job keeps its one-line error message and
the queue goes on with the next.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from typing import Any, Callable

from tfmedseg.errors import TfMedSegError

_log = logging.getLogger(__name__)

__all__ = ["Job", "JobQueue", "JOB_STATES"]

#: Job states in the order a job goes through them (``error`` instead of ``done`` when it fails).
JOB_STATES = ("queued", "running", "done", "error")


@dataclasses.dataclass
class Job:
    """One request. ``progress`` is in [0, 1]; ``stage`` says what runs now; ``result`` is the
    worker's return value (JSON-able), ``error`` the user-facing message of a failure."""

    id: str
    scan_id: str
    model_id: str
    state: str = "queued"
    stage: str = "waiting for earlier requests"
    progress: float = 0.0
    submitted: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None

    def report(self, stage: str, progress: float) -> None:
        """Called by the worker function between its steps."""
        self.stage, self.progress = stage, max(self.progress, min(1.0, float(progress)))


class JobQueue:
    """FIFO of :class:`Job` run by one worker thread with ``work(job)``.

    Args:
        work: Runs one job; returns its result, raises :class:`TfMedSegError` for a user error.
        start: Start the worker thread now (tests start it later to see jobs waiting).
    """

    def __init__(self, work: Callable[[Job], Any], *, start: bool = True):
        self._work = work
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        if start:
            self.start()

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tfmedseg-viewer-jobs", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def submit(self, scan_id: str, model_id: str) -> Job:
        with self._cond:
            job = Job(id=f"job-{next(self._ids)}", scan_id=scan_id, model_id=model_id)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify_all()
        _log.info("queued %s: %s with %s", job.id, scan_id, model_id)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """Jobs ahead of ``job`` (0: next); None once it runs or ran."""
        with self._cond:
            for i, waiting in enumerate(self._waiting):
                if waiting is job:
                    running = any(j.state == "running" for j in self._jobs.values())
                    return i + int(running)
        return None

    def describe(self, job: Job) -> dict[str, Any]:
        """The JSON the page polls."""
        out = {k: getattr(job, k) for k in ("id", "scan_id", "model_id", "state", "stage", "progress", "error")}
        out["position"] = self.position(job)
        if job.started and job.finished:
            out["seconds"] = round(job.finished - job.started, 3)
        if job.state == "done":
            out["result"] = job.result
        return out

    def wait(self, job: Job, timeout: float = 120.0) -> Job:
        """Block until ``job`` is done or failed (tests, scripts)."""
        deadline = time.time() + timeout
        while job.state not in ("done", "error") and time.time() < deadline:
            time.sleep(0.02)
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.state, job.stage, job.started = "running", "starting", time.time()
            try:
                job.result = self._work(job)
                job.state, job.stage, job.progress = "done", "done", 1.0
            except TfMedSegError as exc:
                job.state, job.error = "error", str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug: keep the server up and say what happened
                _log.exception("%s failed", job.id)
                job.state, job.error = "error", f"internal error: {type(exc).__name__}: {exc}"
            finally:
                job.finished = time.time()
