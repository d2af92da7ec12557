"""A Firecracker-compatible API on a Unix socket: `Instance` (the microVM it describes and
drives), `Router` (Firecracker's paths, and pyvisor's own under /pyvisor/), `ApiServer`
(HTTP/1.1 on the socket) and `load_config_file` (Firecracker's --config-file JSON)."""
from .config_file import load_config_file
from .instance import HostOptions, Instance
from .routes import Router
from .server import ApiServer

__all__ = ["ApiServer", "HostOptions", "Instance", "Router", "load_config_file"]
