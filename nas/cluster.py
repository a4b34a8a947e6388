"""Where Ray work runs: a private local Ray of ``workers`` CPUs, or a cluster at an address.

Two Ray behaviours are turned into clear errors here. Asked for an address nobody listens on,
``ray.init`` retries for minutes, so a ``host:port`` (or ``ray://host[:port]``) address is probed
first. And a bare ``ray.init()`` joins any cluster it finds (``RAY_ADDRESS``, or the last
``ray start`` on this machine) and then refuses our CPU count, so a local run asks for a new
instance explicitly.

Token authentication is Ray's policy, kept as it is: ``ray start`` turns it on where this machine
holds a Ray token, a client joining by address only with ``RAY_AUTH_MODE=token``; a refused
connection says so.
"""

from __future__ import annotations

import logging
import os
import socket

from nas.errors import NasError

RAY_CLIENT_PORT = 10001  # Ray's default for ray:// addresses
PROBE_SECONDS = 10.0


def endpoint(address: str) -> tuple[str, int] | None:
    """The ``(host, port)`` a Ray address will connect to, or None for "auto"/"local" (Ray looks it up)."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    hostport = address[len("ray://"):] if client else address
    host, colon, port = hostport.rpartition(":")
    if not colon:
        host, port = hostport, str(RAY_CLIENT_PORT) if client else ""
    if not host or not port.isdigit():
        raise NasError(f"malformed Ray address {address!r}; use auto, HOST:PORT or ray://HOST[:PORT]")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise :class:`NasError` unless something accepts connections at ``address``."""
    target = endpoint(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise NasError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def start_ray(workers: int, address: str | None = None) -> bool:
    """Start (or join) Ray unless this process already has; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            probe(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if not address:
            raise NasError(f"cannot start Ray: {err}") from None
        hint = "" if "RAY_AUTH_MODE" in os.environ else " (if it uses token authentication, set RAY_AUTH_MODE=token)"
        raise NasError(f"cannot join the Ray cluster at {address}: {err}{hint}") from None
    return True
