"""Security of the server: DTLS-PSK sessions, device credentials bound to endpoints, who may
register what (``authorizer``), and the settings that govern them (``settings``)."""
