"""Pure domain: no I/O, no Flask, no vendor SDKs."""
