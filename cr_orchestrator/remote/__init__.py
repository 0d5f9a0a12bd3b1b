"""Remote: how the orchestrator reaches hosts. One SSH transport (:mod:`.ssh`) for the
probes, the peer checks, the sync and the take-over's helpers; WinRM lives in
:mod:`cr_orchestrator.remote.winrm`."""
