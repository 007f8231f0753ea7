"""Data plane: configuration, schema and migrations, the MQTT contract and the ingest service."""

from cityops.ingest.config import Settings

__all__ = ["Settings"]
