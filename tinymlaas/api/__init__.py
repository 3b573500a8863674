"""The admin HTTP API (FastAPI, loopback, bearer token). See ``app.create_app``."""
