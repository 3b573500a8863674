"""Simulated MCUs: genuine LwM2M clients over UDP (see ``client``).

Uses the protocol layer ``lwm2m`` (codecs, object model, link format) and never
the server, its store or its API.
"""
