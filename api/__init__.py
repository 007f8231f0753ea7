"""HTTP API (FastAPI) and the `cityops` command line: the outer edge that composes the packages."""
