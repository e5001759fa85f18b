"""Ports: the protocols services depend on. One adapter per technology implements each."""
