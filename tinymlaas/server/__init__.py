"""The LwM2M server, organised by feature (as Leshan's server):

- ``registrations``: the live registration table and its persistence;
- ``registration``: the registration interface (``/rd``: Register, Update, De-register, expiry);
- ``operations``: one class per device-management operation (Read, Write, Execute, ...);
- ``device_client``: sends operations to registered devices (Accept choice, timeouts);
- ``queue``: queue mode (requests held for sleeping devices);
- ``observation``: Observe / Cancel Observation, latest values, subscribers;
- ``server``: ``LwM2MServer``, which wires them to one CoAP context and one store.
"""
