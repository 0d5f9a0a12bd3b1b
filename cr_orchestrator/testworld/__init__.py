"""The test world: what stands in for the real one in tests, the demo and the benches —
the network-namespace lab (:mod:`.lab`), the WS-Man simulator (:mod:`.wsman_sim`), the
client watch (:mod:`.clientwatch`) and the demo (:mod:`.demo`). Not used by the
orchestrator itself."""
