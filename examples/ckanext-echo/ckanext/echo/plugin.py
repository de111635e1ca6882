"""The extension's plugin module; spoolq finds the tasks through ``task_imports``.

In a real CKAN extension this module would also hold the ``IPlugin`` class.  The entry point
``spoolq.tasks: echo = ckanext.echo.plugin:task_imports`` names the function below; the
worker calls it and imports every module it returns.
"""


def task_imports():
    """The modules that declare this extension's tasks."""
    return ["ckanext.echo.tasks"]
