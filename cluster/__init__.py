"""relatent's distribution on Ray: shard planning, encoder actors, the driver loop, stream
assembly, Parquet manifests, retries, catalog runs and the Ray Jobs client.

Import the modules themselves (``from cluster.driver import run_job``); the package holds no
names of its own, so importing it loads nothing. The module map is in
docs/operations-distributed.md.
"""

__all__: list[str] = []
