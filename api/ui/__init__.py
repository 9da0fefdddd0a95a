"""The dashboard: static pages at /ui that call the same REST API with the user's key."""
