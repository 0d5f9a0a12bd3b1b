"""The lab: a multi-host, two-site world on one machine (network namespaces), with faults.

Public API::

    from cr_orchestrator.testworld.lab import Lab
    lab = Lab.up(name="crlab", base="198.18.0.0/20")   # or Lab.load(name="crlab")
    lab.run_on("mail-a", "ls /srv/mail/Maildir/new")
    lab.fail("mail-a", "crash", for_s=5); lab.heal("mail-a")
    lab.down()

See docs/lab.md for the topology, addresses and fault modes.
"""

from cr_orchestrator.testworld.lab.core import DEFAULT_BASE, DEFAULT_NAME, HostAddresses, Lab, lab_from_env
from cr_orchestrator.testworld.lab.faults import FaultMode

__all__ = ["DEFAULT_BASE", "DEFAULT_NAME", "FaultMode", "HostAddresses", "Lab", "lab_from_env"]
