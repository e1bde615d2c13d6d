"""Whether this machine can reach any of the hosts a download would connect to, answered in seconds.

Asked before TFDS downloads a dataset: without a network, TFDS's downloader retries each URL for
minutes before it gives up, while a TCP connection to the same host fails (or times out) in
seconds. Standard library only; nothing here knows about datasets.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable

Address = tuple[str, int]

# Seconds a probe waits for any host to accept a connection: a reachable host, even across the
# world, answers in well under one; an unreachable one is refused at once or never answers.
PROBE_TIMEOUT = 3.0

# The port a URL (or a proxy URL) without one connects to.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21,
                  "socks4": 1080, "socks4a": 1080, "socks5": 1080, "socks5h": 1080}


def _address(url: str) -> Address | None:
    """(host, port) that `url` connects to, or None when it names no host or an unknown scheme."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number, or out of range
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def connect_targets(urls: Iterable[str]) -> list[Address]:
    """The distinct (host, port) pairs that fetching `urls` connects to first: each URL's own host,
    or the proxy the environment names for its scheme (https_proxy, http_proxy, ftp_proxy, else
    all_proxy, in either case; hosts in no_proxy go direct), the way `requests`, TFDS's downloader,
    chooses. Behind a proxy, direct connections may be blocked while downloads work, so the proxy
    is what to probe. URLs that are not http, https or ftp (gs://, local files) are left out."""
    proxies = urllib.request.getproxies()
    targets: dict[Address, None] = {}  # a dict keeps the URLs' order, for the message that names them
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https", "ftp") or not parts.hostname:
            continue
        proxy = proxies.get(parts.scheme) or proxies.get("all")
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            # `requests` reads a proxy given without a scheme ("host:3128") as an http:// one.
            address = _address(proxy if "://" in proxy else f"http://{proxy}")
        else:
            address = _address(url)
        if address is not None:
            targets[address] = None
    return list(targets)


def _try_connect(address: Address, timeout: float, answers: queue.Queue) -> None:
    try:
        with socket.create_connection(address, timeout=timeout):
            answers.put((address, True))
    except Exception:  # any failure (unknown name, refused, timed out, a malformed host) means: not reachable
        answers.put((address, False))


def first_reachable(addresses: Iterable[Address], timeout: float = PROBE_TIMEOUT) -> Address | None:
    """The first of `addresses` to accept a TCP connection, all tried at once, or None when none
    does within `timeout` seconds. Returns as soon as one connects or all have failed.

    Name resolution counts against the timeout too: `getaddrinfo` takes no timeout (an unreachable
    DNS server can hold it for tens of seconds), so each attempt runs in a daemon thread that is
    simply abandoned at the deadline, neither delaying the answer nor keeping the process alive."""
    distinct = list(dict.fromkeys(addresses))
    answers: queue.Queue = queue.Queue()
    for address in distinct:
        threading.Thread(target=_try_connect, args=(address, timeout, answers), daemon=True,
                         name=f"probe {address[0]}:{address[1]}").start()
    deadline = time.monotonic() + timeout
    for _ in distinct:
        try:
            address, connected = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if connected:
            return address
    return None
