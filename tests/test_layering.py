"""Imports flow down: the import-linter contracts in ``pyproject.toml`` hold.

``tinymlaas`` (server, deploy, API, CLI, demo) sits above ``simulator``, which sits above
``device_profiles``, which sits above the two libraries ``lwm2m`` (the protocol) and
``compilers`` (the model compiler and its backends), which do not import each other; and no
part of the server imports the simulator (only the CLI and the demo run simulated fleets);
``tinymlaas.security`` (credentials, the authorizer's rules, settings) imports no server,
deployer, API or bootstrap module: the server applies it (``tinymlaas/server/security.py``).
The check is import-linter's (grimp builds the import graph from the sources), so a new
import that breaks a layer fails here with the chain of modules that does it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = ["-c", "import sys; from importlinter.cli import lint_imports_command; "
              "sys.exit(lint_imports_command(sys.argv[1:]))"]


def test_import_contracts_are_kept() -> None:
    done = subprocess.run([sys.executable, *LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the layers with the simulator under the protocol is broken."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["simulator", "lwm2m"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\n'
                      'layers = ["lwm2m", "simulator"]\n')
    done = subprocess.run([sys.executable, *LINT, "--config", str(config), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "BROKEN" in done.stdout and "simulator" in done.stdout
