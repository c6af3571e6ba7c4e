"""``python -m synthcount``: the ``synthcount`` command line (see ``synthcount --help``)."""

from cli.main import main

if __name__ == "__main__":  # pragma: no cover - run as a module
    main(prog_name="synthcount")
