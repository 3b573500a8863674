"""tinymlaas: TinyML-as-a-Service, an LwM2M device-management server that compiles models for MCUs.

Layers (imports go downward only):
- below it: ``lwm2m`` (the protocol as data: paths, object model, codecs, link format,
  package format), ``compilers`` (the model compiler and its backends, through
  ``compilers.backends.registry``) and ``device_profiles``;
- ``tinymlaas.store``: persistence (sqlmodel tables, the batched writer);
- ``tinymlaas.server``: the LwM2M server, organised by feature (registration, device
  management, observation, queue mode); ``tinymlaas.deploy``: choosing, building, signing and
  delivering models; neither imports the simulator;
- ``tinymlaas.api``: the admin HTTP API on loopback; ``tinymlaas.cli``: the typer CLI and
  ``tinymlaas.demo``: the only places that use the simulator (``simulator``, which imports
  nothing of ``tinymlaas``), to run simulated fleets beside the server.
"""

__version__ = "0.1.0"
