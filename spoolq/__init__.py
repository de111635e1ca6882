"""spoolq: a background-job queue for one host that needs no broker.

Jobs are JSON files in a spool directory; a supervisor fans them out to worker processes;
failed jobs wait for their retry in timestamped files.  See README.md for the tour.
"""

from .app import App, AsyncResult, current_app
from .errors import (
    ConfigError,
    DuplicateJob,
    InvalidJobId,
    JobFormatError,
    JobNotFound,
    JobTooLarge,
    MaxRetriesExceeded,
    ResultTimeout,
    Retry,
    SoftTimeLimitExceeded,
    SpoolError,
    SpoolLocked,
    SpoolqError,
    TaskFailed,
    TaskNotFound,
)
from .job import Job
from .task import Task, task

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "ConfigError",
    "DuplicateJob",
    "InvalidJobId",
    "Job",
    "JobFormatError",
    "JobNotFound",
    "JobTooLarge",
    "MaxRetriesExceeded",
    "ResultTimeout",
    "Retry",
    "SoftTimeLimitExceeded",
    "SpoolError",
    "SpoolLocked",
    "SpoolqError",
    "Task",
    "TaskFailed",
    "TaskNotFound",
    "current_app",
    "task",
]
