"""The power-loss test's machinery: a logging FUSE disk, the workload, crash-image replay."""
