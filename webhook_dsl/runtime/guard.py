"""Decides, before any connection, whether an outbound request may go where it points.

Every destination must be a public unicast address. The range table below is
explicit, because ``ipaddress`` flags differ between Python versions and miss
cases (``::ffff:127.0.0.1`` is not ``is_loopback`` on 3.11; ``100.64.0.1`` is
not ``is_private``). Addresses that carry an IPv4 address inside an IPv6 one
(mapped, compatible, NAT64, 6to4, Teredo) are judged by the IPv4 inside. Host
names in numeric disguise (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are read
the way ``inet_aton`` reads them and judged as the address they reach; other
names are resolved once, every address is checked, and the connection is made to
the checked addresses only (see ``runtime``), leaving no DNS-rebinding window.

A refusal's message reaches the LLM and the API caller, so for a name it never says
what the name resolved to (that would map a private DNS zone for whoever steers the
LLM); ``BlockedError.detail``, logged for the operator on ``webhook_dsl.runtime.guard``,
does. A name that does not resolve at all is ``UnresolvedName`` (category ``dns``), so
that a typo is not mistaken for a policy refusal. A refusal the operator could lift names
the option that would (``--allow-network`` / ``WEBHOOK_DSL_ALLOW_NETWORKS``, ``--allow-host``
/ ``WEBHOOK_DSL_ALLOW_HOSTS``), for a name without saying which network it would open.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "BlockedError",
    "NetworkSpecError",
    "OutboundGuard",
    "Resolver",
    "UnresolvedName",
    "parse_network",
    "parse_numeric_host",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``async (host, port) -> [address, ...]``; tests pass a stub, never real DNS.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_V4 = [
    ("0.0.0.0/8", "'this network' (RFC 791)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared CGNAT space (RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112 (RFC 7535)"),
    ("192.52.193.0/24", "AMT (RFC 7450)"),
    ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("192.175.48.0/24", "AS112 direct delegation (RFC 7534)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("255.255.255.255/32", "broadcast"),
]
_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
]
BLOCKED_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(cidr), why) for cidr, why in _V4 + _V6)
_TEREDO = ipaddress.ip_network("2001::/32")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")

#: Names that mean "this machine" or a cloud metadata service whatever DNS says.
BLOCKED_NAMES = (
    "localhost",
    "localhost.localdomain",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "metadata",
    "kubernetes.default.svc",
)
BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


_log = logging.getLogger("webhook_dsl.runtime.guard")


class BlockedError(Exception):
    """The destination is not allowed; nothing was sent.

    The message says why in words safe to show anyone (the LLM, the API caller); ``detail`` is the
    operator's version, which may name the private address a name resolved to. ``category`` is the
    call's failure category."""

    category = "blocked"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message
        _log.info("%s: %s", self.category, self.detail)


class UnresolvedName(BlockedError):
    """The host name does not resolve (no such name, no address, the lookup failed or stalled); nothing was
    sent. A ``BlockedError`` so that every path that refuses a destination refuses this one too, with its
    own category: a typo in a URL is not a policy to loosen."""

    category = "dns"


class NetworkSpecError(ValueError):
    """An ``allow_networks``/``deny_networks`` entry (``--allow-network``) that is not a network as written;
    the message, one line, says what was probably meant."""


def parse_network(text: str) -> IPNetwork:
    """A network written as CIDR (or one address), strictly: ``127.0.0.1/0`` is an error, not the whole
    IPv4 space, because whoever wrote it almost certainly meant something narrower.

    >>> parse_network("10.0.0.0/8")
    IPv4Network('10.0.0.0/8')
    >>> parse_network("127.0.0.1/0")
    Traceback (most recent call last):
    ...
    webhook_dsl.runtime.guard.NetworkSpecError: 127.0.0.1/0 has host bits set; did you mean 127.0.0.1/32 or 0.0.0.0/0?
    """
    written = text.strip()
    try:
        return ipaddress.ip_network(written, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(written, strict=False)
    except ValueError:
        raise NetworkSpecError(
            f"{text!r} is not a network; write an address or CIDR, such as 10.0.0.0/8 or fd00::/8"
        ) from None
    address = written.split("/", 1)[0]
    raise NetworkSpecError(
        f"{written} has host bits set; did you mean {address}/{loose.max_prefixlen} or {loose}?"
    ) from None


@functools.lru_cache(maxsize=4096)
def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a host written as numbers reaches, read as ``inet_aton`` (and WHATWG URL) do.

    ``2130706433``, ``0x7f000001``, ``0x7f.1``, ``0177.1``, ``127.1`` are all
    127.0.0.1; ``012.0.0.1`` is 10.0.0.1 (octal). Returns None for real names.
    """
    text = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                numbers.append(int(lowered[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            elif part.isdigit():
                numbers.append(int(part, 10))
            else:
                return None
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _TRANSLATED or address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    if address in _TEREDO and address.teredo is not None:
        return address.teredo[1]  # the client address; the server part is public by construction
    return None


def why_blocked(address: IPAddress) -> str | None:
    """Why this address is not public unicast, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an IPv6 address with a zone (scope id)"
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = why_blocked(inner)
            return f"carries {inner}, which is {reason}" if reason else None
    for network, reason in BLOCKED_RANGES:
        if address.version == network.version and address in network:
            return reason
    return None


@dataclass(frozen=True)
class OutboundGuard:
    """The policy: what may be reached. Allow entries win over the built-in table; deny entries win over
    every allow entry, hosts and networks alike (an allowed name that resolves into a denied network is
    refused, and so is an address carrying a denied IPv4 address inside an IPv6 one)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    deny_networks: tuple[IPNetwork, ...] = ()
    deny_hosts: frozenset[str] = frozenset()
    resolver: Resolver | None = None
    resolve_timeout: float = 5.0
    _names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        allow_networks: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
        deny_networks: Iterable[str] = (),
        deny_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        resolve_timeout: float = 5.0,
    ) -> OutboundGuard:
        """Networks are parsed strictly (``parse_network``); ``NetworkSpecError`` says what was meant."""
        return cls(
            allow_networks=tuple(parse_network(n) for n in allow_networks),
            allow_hosts=frozenset(_normal(h) for h in allow_hosts),
            deny_networks=tuple(parse_network(n) for n in deny_networks),
            deny_hosts=frozenset(_normal(h) for h in deny_hosts),
            resolver=resolver,
            resolve_timeout=resolve_timeout,
        )

    def denied(self, address: IPAddress) -> bool:
        """Whether a deny entry covers the address, or the IPv4 address it carries."""
        if not self.deny_networks:
            return False
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if inner is not None:
                forms.append(inner)
        return any(form.version == net.version and form in net for form in forms for net in self.deny_networks)

    def check_address(self, address: IPAddress, host: str) -> None:
        """Refuse an address the host was written as (numbers in any notation)."""
        if self.denied(address) or str(address) in self.deny_hosts:
            raise BlockedError(f"{host} is on the deny list")
        for network in self.allow_networks:
            if address.version == network.version and address in network:
                return
        reason = why_blocked(address)
        if reason:
            shown = f"{host} is {address}" if str(address) != host.strip("[]") else f"{address}"
            raise BlockedError(f"{shown}: {reason}; not a public address ({_allow_network_hint(address)})")

    def check_resolved(self, address: IPAddress, host: str, *, allowed_name: bool = False) -> None:
        """Refuse an address a name resolved to. The message never shows it (see the module docstring)."""
        if self.denied(address):
            raise BlockedError(_name_refused(host), f"{host} resolves to {address}, which the deny list blocks")
        if allowed_name or any(address.version == n.version and address in n for n in self.allow_networks):
            return
        reason = why_blocked(address)
        if reason:
            detail = f"{host} resolves to {address}: {reason}"
            raise BlockedError(f"{_name_refused(host)} ({_allow_host_hint(host)})", detail)

    def check_name(self, host: str) -> str:
        """Refuse names that are local by definition; return the normalized name."""
        name = _normal(host)
        if name in self.deny_hosts:
            raise BlockedError(f"{host} is on the deny list")
        if name in self.allow_hosts:
            return name
        if name in BLOCKED_NAMES or name.endswith(BLOCKED_SUFFIXES):
            raise BlockedError(f"{host} names this machine or an internal service ({_allow_host_hint(host)})")
        return name

    def numeric(self, host: str) -> IPAddress | None:
        """If the host is an address in any notation, check it and return it."""
        address = parse_numeric_host(host)
        if address is not None:
            self.check_address(address, host)
        return address

    async def resolve(self, host: str, port: int) -> list[str]:
        """Resolve once, check every address, return them all (or raise ``BlockedError``)."""
        address = self.numeric(host)
        if address is not None:
            return [str(address)]
        name = self.check_name(host)
        resolver = self.resolver or system_resolver
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses = await resolver(name, port)
        except TimeoutError:
            raise UnresolvedName(f"looking up {host} took longer than {self.resolve_timeout:g} s") from None
        except OSError as error:
            raise UnresolvedName(_unresolved(host), f"cannot look up {host}: {error.strerror or error}") from None
        if not addresses:
            raise UnresolvedName(_unresolved(host), f"{host} has no address")
        allowed_name = name in self.allow_hosts
        for text in addresses:
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                raise UnresolvedName(_unresolved(host), f"{host}: the resolver answered {text!r}") from None
            self.check_resolved(parsed, host, allowed_name=allowed_name)
        return addresses


def _name_refused(host: str) -> str:
    """What anyone but the operator learns about a name that resolves to a refused address: not which."""
    return f"{host}: its address is not public"


def _unresolved(host: str) -> str:
    """What anyone but the operator learns about a name that does not resolve (the resolver's words are logged)."""
    return f"{host}: the name does not resolve"


def _allow_network_hint(address: IPAddress) -> str:
    """The options that would let a request reach this address (the address the caller wrote, no wider)."""
    return f"allow it with --allow-network {address}/{address.max_prefixlen} or WEBHOOK_DSL_ALLOW_NETWORKS"


def _allow_host_hint(host: str) -> str:
    """The options that would let a request reach this name: by name, so that no address is shown."""
    return f"allow it with --allow-host {_normal(host)} or WEBHOOK_DSL_ALLOW_HOSTS"


def _normal(host: str) -> str:
    name = host.strip().lower().rstrip(".")
    try:
        return name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return name


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), addresses only, order kept, no repeats."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
