"""Contrastive embedding training library: NT-Xent losses, encoders, views, training loop, evaluation.

The machine-learning modules here know nothing of HTTP, SQL or Celery; they take their collaborators as
arguments and report through :class:`core.train.callbacks.TrainCallback`.
"""
