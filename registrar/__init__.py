"""registrar: keeps Consul's service catalog equal to what runs on a Docker host."""

__version__ = "0.1.0"
