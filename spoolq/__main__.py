"""``python -m spoolq``: the same as the ``spoolq`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="spoolq")
