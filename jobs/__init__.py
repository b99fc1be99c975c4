"""The ``relatent`` command line and its job entrypoints, thin over :mod:`pipeline` and
:mod:`cluster` (the entry point is :func:`jobs.cli.main`). ``ray.init`` and other
process-wide settings happen only here."""

__all__: list[str] = []
