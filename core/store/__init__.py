"""Persistence shared by the API and the worker: settings, database, tables, storage, job state.

The machine-learning modules of ``core`` never import this package.
"""
