"""spoolq: a background-job queue for one host that needs no broker.

Jobs are JSON files in a spool directory; a supervisor fans them out to worker processes;
failed jobs wait for their retry in timestamped files.  See README.md for the tour.
"""

from .app import App, current_app, task
from .errors import (
    ConfigError,
    DuplicateJob,
    InvalidJobId,
    JobFormatError,
    JobGone,
    JobNotFound,
    JobTooLarge,
    MaxRetriesExceeded,
    NameTaken,
    ResultTimeout,
    Retry,
    SoftTimeLimitExceeded,
    SpoolError,
    SpoolGone,
    SpoolLocked,
    SpoolqError,
    TaskFailed,
    TaskNotFound,
)
from .job import Job
from .result import AsyncResult
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "ConfigError",
    "DuplicateJob",
    "InvalidJobId",
    "Job",
    "JobFormatError",
    "JobGone",
    "JobNotFound",
    "JobTooLarge",
    "MaxRetriesExceeded",
    "NameTaken",
    "ResultTimeout",
    "Retry",
    "SoftTimeLimitExceeded",
    "SpoolError",
    "SpoolGone",
    "SpoolLocked",
    "SpoolqError",
    "Task",
    "TaskFailed",
    "TaskNotFound",
    "current_app",
    "task",
]
