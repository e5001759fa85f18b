"""Flask entrypoints, one blueprint per caller. HTTP status codes are decided here."""
