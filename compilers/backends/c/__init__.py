"""The portable C backend: IR ``Graph`` -> one dependency-free C99 file implementing the tinyml
ABI v1 (``emit.to_c``, op emitters in ``ops`` and ``ops_nn`` over ``context``), its flash and
RAM measured for a board's core (``cross``, ``build.build_c``); ``backend``: ``BACKEND``, the
export-only plug-in (entry point ``c``)."""
