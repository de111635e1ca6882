"""spoolq: a broker-less background-job queue for one host."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="spoolq",
    version="0.1.0",
    description="A background-job queue for one host: JSON job files in a spool directory, no broker.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["spoolq", "spoolq.*"]),
    python_requires=">=3.10",
    install_requires=["watchdog>=3", "filelock>=3.12", "click>=8.1"],
    extras_require={
        # ruff, mypy and import-linter are run by tests/test_shape.py: the shape is tested too.
        "test": [
            "pytest>=7",
            "hypothesis>=6.80",
            "pytest-timeout>=2.1",
            "supervisor>=4.2",
            "mfusepy>=3.0",
            "ruff>=0.5",
            "mypy>=1.10",
            "import-linter>=2.0",
        ],
        # Same pins as bench/requirements-bench.txt: the peers' numbers are for these versions.
        "bench": ["huey==3.5.4", "celery[redis]==5.7.0", "redis==8.1.0", "rq==2.12.0", "dramatiq[redis]==2.2.1"],
    },
    entry_points={"console_scripts": ["spoolq = spoolq.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX",
        "Topic :: System :: Distributed Computing",
    ],
)
