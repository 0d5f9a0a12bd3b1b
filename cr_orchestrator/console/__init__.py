"""``crctl serve``: the web console (pages, actions, /metrics)."""
