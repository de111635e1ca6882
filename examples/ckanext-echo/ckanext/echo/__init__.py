"""ckanext-echo: example spoolq tasks."""
