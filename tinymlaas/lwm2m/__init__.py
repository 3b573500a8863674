"""The LwM2M protocol as data: paths, the object model, content-format codecs, link format.

This package is shared by the server and the simulator. It never imports the server, the
store or the API; it does no I/O except reading DDF XML files it is pointed at.
"""
