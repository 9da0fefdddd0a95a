"""A typed Python client of the REST API (httpx): the same verbs as the CLI, which uses it."""

from core.client.client import ApiError, Client

__all__ = ["ApiError", "Client"]
