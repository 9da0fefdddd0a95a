"""The REST API: datasets, jobs, models and OpenAI-compatible embeddings over ``core``."""
