"""Use cases. They see ports only (through the Container) and no web framework."""
