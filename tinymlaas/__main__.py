"""``python -m tinymlaas`` is the ``tinymlaas`` command."""

from tinymlaas.cli.main import app

app()
