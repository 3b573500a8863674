"""The ``tinymlaas`` command line (typer). ``main.app`` is the console script."""
