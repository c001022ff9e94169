"""Fail closed: in local mode nothing in this process may reach beyond loopback.

Every AWS client is pointed at local endpoints; this guard is the backstop for anything that is
not (a missing endpoint variable, a library phoning home). It refuses before any packet or DNS
query leaves: names other than localhost are not resolved, non-loopback addresses are not dialled.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_installed = False


class NonLoopbackRefused(ConnectionRefusedError):
    pass


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(target: Any) -> NonLoopbackRefused:
    return NonLoopbackRefused(f"local mode never reaches beyond loopback; refused {target!r}")


def install() -> None:
    global _installed
    if _installed:
        return
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
            raise _refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise _refuse(address)

    def connect(self, address):
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    _installed = True
