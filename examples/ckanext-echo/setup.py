"""ckanext-echo: an extension that ships spoolq tasks, laid out like a CKAN extension."""

from setuptools import find_packages, setup

setup(
    name="ckanext-echo",
    version="0.1.0",
    description="Example spoolq tasks shipped by a CKAN-style extension",
    packages=find_packages(include=["ckanext", "ckanext.*"]),
    python_requires=">=3.10",
    install_requires=["spoolq"],
    entry_points={
        # The worker imports what task_imports() returns: CKAN's Celery pattern.
        "spoolq.tasks": ["echo = ckanext.echo.plugin:task_imports"],
    },
)
