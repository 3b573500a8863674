"""The LwM2M protocol as data: paths, the object model, content-format codecs, link format, the
model package format, and (``updates``) the Firmware Update and Software Management machines.

A library of its own, below both the server (``tinymlaas``) and the simulated devices
(``simulator``), like aiocoap below its users: it never imports either of them, the store or
the API, and does no I/O except reading DDF XML files it is pointed at.
"""
