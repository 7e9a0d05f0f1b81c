"""What a backend's session store and its login throttle share: one connection helper per backend.

``stores/`` and ``throttles/`` both import from here, never from each other,
so each backend's connection rules (SQLite's per-thread connections and
fork safety, PostgreSQL's pools and table names, Redis's client checks) are
written once. Nothing here is public API.
"""
