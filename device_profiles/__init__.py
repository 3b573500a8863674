"""One data file per real MCU (SRAM, flash, core, runtimes), with the datasheet reference.

Not built yet. It will never import ``tinymlaas``.
"""
