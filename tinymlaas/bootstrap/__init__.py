"""The LwM2M bootstrap server (``server``) and what it gives each device (``configs``)."""
