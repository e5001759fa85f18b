"""Adapters for the ``gcp`` backend: Google Cloud services behind Herald's ports.

Nothing here creates a client at import time; each adapter takes its client (or
builds one from settings in ``from_settings``) so tests can point it at an emulator.
"""
