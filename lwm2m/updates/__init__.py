"""Objects 5 (Firmware Update) and 9 (Software Management) as sans-IO state machines.

``machine`` holds the shared vocabulary (reasons, actions, transitions, ``UpdateObject``),
``firmware`` and ``software`` the two objects' transition tables (data), ``reconcile`` what a
server concludes from a device's reports. The simulated device (``simulator.software``) and the
server's delivery (``tinymlaas.deploy.delivery``) both drive these tables; the I/O stays in
their thin adapters. Nothing here does I/O or imports the server, the store or the simulator.
"""

from .firmware import FIRMWARE, Event5, Phase5, Result5, State5
from .machine import (
                                             Action,
                                             Answer,
                                             Do,
                                             Effect,
                                             Failed,
                                             Impossible,
                                             Operation,
                                             Reason,
                                             Recover,
                                             Recovery,
                                             Refuse,
                                             Set,
                                             Transition,
                                             UpdateObject,
)
from .reconcile import (
                                             FIRMWARE_ROUTE,
                                             SOFTWARE_ROUTE,
                                             Decision,
                                             Reconciler,
                                             Report,
                                             Route,
                                             Verdict,
)
from .software import (
                                             SOFTWARE,
                                             Event9,
                                             Phase9,
                                             Result9,
                                             UpdateState,
)

__all__ = [
                                             "FIRMWARE",
                                             "FIRMWARE_ROUTE",
                                             "SOFTWARE",
                                             "SOFTWARE_ROUTE",
                                             "Action",
                                             "Answer",
                                             "Decision",
                                             "Do",
                                             "Effect",
                                             "Event5",
                                             "Event9",
                                             "Failed",
                                             "Impossible",
                                             "Operation",
                                             "Phase5",
                                             "Phase9",
                                             "Reason",
                                             "Reconciler",
                                             "Recover",
                                             "Recovery",
                                             "Refuse",
                                             "Report",
                                             "Result5",
                                             "Result9",
                                             "Route",
                                             "Set",
                                             "State5",
                                             "Transition",
                                             "UpdateObject",
                                             "UpdateState",
                                             "Verdict",
]
