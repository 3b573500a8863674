"""tinymlaas: TinyML-as-a-Service, an LwM2M device-management server that compiles models for MCUs.

Layers (imports go downward only):
- ``tinymlaas.lwm2m``: the protocol as data and codecs (paths, object model, content formats,
  link format). Shared with ``simulator/``; imports nothing from the server or its store.
- ``tinymlaas.store``: persistence (sqlmodel tables, the batched writer).
- ``tinymlaas.server``: the LwM2M server, organised by feature (registration, device
  management, observation, queue mode).
- ``tinymlaas.api``: the admin HTTP API on loopback; ``tinymlaas.cli``: the typer CLI.
"""

__version__ = "0.1.0"
