"""Connectors to the participating organisations, one folder each, with their sandboxes."""
