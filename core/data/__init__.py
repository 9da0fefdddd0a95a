"""Datasets: the in-memory record type the loop trains on, and readers for the upload formats."""

from core.data.records import InputSpec, Records

__all__ = ["InputSpec", "Records"]
