"""The small error tree: every failure registrar reports is one of these."""


class RegistrarError(Exception):
    """Base of registrar's own errors; its message is one line fit for an operator."""


class ConfigError(RegistrarError):
    """The configuration (flags, environment, files) cannot work."""


class DockerError(RegistrarError):
    """The Docker engine could not be reached, refused a request, or did not answer it in time."""


class DockerUnreachable(DockerError):
    """The engine could not be reached (connection refused, reset or not made in time): Docker is down, not one
    request. A request the engine took and did not answer in time is a plain DockerError."""


class ConsulError(RegistrarError):
    """The Consul agent could not be reached or refused a request."""


class ConsulRejected(ConsulError):
    """The agent refused a registration as invalid (HTTP 400): retrying the same body cannot help."""
