"""Loopback servers that answer in a provider API's own wire format, one module per API."""
