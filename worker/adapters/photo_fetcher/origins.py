"""Which origins ``http(s)://`` references may reach, and the addresses a fetch may connect to.

A photo event is untrusted input, and the worker sits inside the cluster: every URI it fetches
is a request forgery waiting to happen. Two rules close it:

* **An allow-list of origins.** Each entry names scheme, host and port (``https://img.example.com:443``)
  or an explicit port range (``http://10.0.0.7:8000-8099``); a reference must match one entry
  exactly. A host alone would allow every port of it (the metrics of the other workers, the
  Milvus and Kafka ports), so an entry without a port is refused when the settings are read.
* **Public addresses only, unless named.** Each address a host name resolves to is checked
  before anything is sent to it: loopback, private, link-local (the cloud metadata service),
  shared, reserved, multicast and unspecified addresses are refused, unless the entry names
  that address itself (an IP literal) or it falls in a network the operator lists explicitly
  (``--reference-private-networks``). The connection is made to the checked address, never by
  resolving the name again, so DNS rebinding cannot slip another address in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class RefusedAddress(Exception):
    """A reference's host resolved only to addresses the policy refuses (or to none)."""


@dataclass(frozen=True)
class AllowedOrigin:
    """One allow-list entry: a scheme, a host (lower case, no trailing dot) and a port range."""

    scheme: str
    host: str
    first_port: int
    last_port: int

    def __str__(self) -> str:
        ports = (
            str(self.first_port)
            if self.first_port == self.last_port
            else f"{self.first_port}-{self.last_port}"
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{ports}"

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address when the entry names one, else None."""
        return _ip(self.host)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        return (
            scheme == self.scheme
            and _canonical_host(host) == self.host
            and self.first_port <= port <= self.last_port
        )


def _ip(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _canonical_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _ip(host)
    return str(address) if address is not None else host


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"reference origin {entry!r}: port {text!r} is not in 1..65535")
    return int(text)


def parse_origin(entry: str) -> AllowedOrigin:
    """Parse ``scheme://host:port`` or ``scheme://host:first-last``.

    Raises:
        ValueError: the entry lacks a scheme or a port, has a path, user-info or another
            scheme, or its ports are out of range or reversed.
    """
    text = entry.strip()
    scheme, separator, rest = text.partition("://")
    scheme = scheme.lower()
    example = "e.g. https://images.example.com:443 or http://10.0.0.7:8000-8099"
    if not separator or scheme not in SCHEMES:
        raise ValueError(
            f"reference origin {entry!r} must start with http:// or https:// ({example})"
        )
    if any(mark in rest for mark in "/?#@") or not rest:
        raise ValueError(
            f"reference origin {entry!r} must be scheme://host:port only, no path or "
            f"user-info ({example})"
        )
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"reference origin {entry!r} must name a port ({example})")
        port_text = port_text[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or ":" in host:
            raise ValueError(
                f"reference origin {entry!r} must name a port: a host alone would allow "
                f"every port of it ({example})"
            )
    first_text, dash, last_text = port_text.partition("-")
    first = _port(first_text, entry)
    last = _port(last_text, entry) if dash else first
    if last < first:
        raise ValueError(f"reference origin {entry!r}: port range {first}-{last} is reversed")
    host = _canonical_host(host)
    if not host:
        raise ValueError(f"reference origin {entry!r} names no host")
    return AllowedOrigin(scheme, host, first, last)


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (not loopback, private, link-local, the
    shared 100.64/10 range, reserved, multicast or unspecified)."""
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class OriginPolicy:
    """The allow-list and the non-public networks the operator opened explicitly."""

    origins: tuple[AllowedOrigin, ...] = ()
    private_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, origins: Iterable[str], private_networks: Iterable[str] = ()) -> OriginPolicy:
        """Parse the settings' strings.

        Raises:
            ValueError: an origin (see :func:`parse_origin`) or a network that does not parse.
        """
        networks = []
        for text in private_networks:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError as error:
                raise ValueError(f"reference private network {text!r}: {error}") from None
        return cls(tuple(parse_origin(entry) for entry in origins), tuple(networks))

    def origin_for(self, scheme: str, host: str, port: int | None) -> AllowedOrigin | None:
        """The entry a URI's scheme, host and port (default port of the scheme) match."""
        effective = port if port is not None else DEFAULT_PORTS.get(scheme, -1)
        for origin in self.origins:
            if origin.matches(scheme, host, effective):
                return origin
        return None

    def address_allowed(self, origin: AllowedOrigin, address: IPAddress) -> bool:
        """Whether a fetch for ``origin`` may connect to ``address``."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if origin.address is not None and origin.address == address:
            return True
        if is_public(address):
            return True
        return any(address in network for network in self.private_networks)

    def connect(
        self,
        origin: AllowedOrigin,
        host: str,
        port: int,
        timeout: float | None,
    ) -> socket.socket:
        """A TCP connection to the first address of ``host`` the policy allows.

        Raises:
            RefusedAddress: the host resolves to no allowed address.
            OSError: resolving or connecting failed.
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed = [info for info in infos if self.address_allowed(origin, _info_address(info))]
        if not allowed:
            raise RefusedAddress(
                f"{host} resolves only to non-public addresses; list the network in "
                "--reference-private-networks (or name the address in the origin) to allow it"
            )
        error: OSError | None = None
        for family, kind, proto, _, address in allowed:
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not None:
                    sock.settimeout(timeout)
                sock.connect(address)
            except OSError as failure:
                sock.close()
                error = failure
                continue
            peer = _ip(str(sock.getpeername()[0]))
            if peer is None or not self.address_allowed(origin, peer):  # never expected
                sock.close()
                raise RefusedAddress(f"{host} connected to a refused address")
            return sock
        assert error is not None
        raise error


def _info_address(info: tuple[object, ...]) -> IPAddress:
    sockaddr = info[4]
    assert isinstance(sockaddr, tuple)
    address = _ip(str(sockaddr[0]).split("%", 1)[0])
    assert address is not None
    return address
