"""The REST API: datasets, jobs, models and OpenAI-compatible embeddings over ``core``."""

import os

# API processes interleave forward passes with an event loop on the same cores: OpenMP threads that spin
# after each parallel region steal those cores (measured in bench/serve.py). Must be set before torch loads;
# an explicit environment value wins. Training workers keep the default (active) policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
