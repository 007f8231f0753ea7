"""Hypothesis strategies for text that the platform stores: the MQTT contract and the API
refuse control characters and lone surrogates (`cityops.ingest.contract.text_problem`)."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["storable_text"]


def storable_text(*, min_size: int = 0, max_size: int) -> st.SearchStrategy[str]:
    """Any text but control characters (Cc) and surrogates (Cs)."""
    return st.text(
        st.characters(blacklist_categories=("Cc", "Cs")), min_size=min_size, max_size=max_size
    )
