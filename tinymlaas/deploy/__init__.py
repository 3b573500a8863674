"""Deploy: run a registered model on devices (decision, compile cache, signed packages,
delivery over LwM2M object 9 / 5, verification, rollback) and roll it out to fleets.

Modules, by feature: ``target`` (what a device offers, from its capability snapshot),
``choice`` (backend and precision that fit), ``cache`` (content-addressed compile cache),
``signing`` (the server's Ed25519 key, sealed packages), ``delivery`` (object 9 and object 5
state machines driven from the server), ``service`` (``Deployer``: one deployment from
decision to verified inference, persisted), ``groups`` and ``campaigns`` (staged roll-outs).
"""
