"""The reachability probe run before TFDS downloads a dataset: its verdicts on hosts that cannot
answer and on one that does, each within its timeout whatever this machine's network (every host
here is local or unresolvable by definition), the proxies it probes instead, and the command failing
in seconds, not after TFDS's minutes of retries, where a dataset's hosts cannot be reached."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from helpers.commands import assert_one_line_error, run_dirs

from cnnexp.data.network import connect_targets, first_reachable
from cnnexp.data.tfds_source import open_tfds
from cnnexp.errors import UserError

# Seconds a probe with a 1 s timeout may take: a correctness bound (it waits for no more than its
# timeout, however many hosts hang), generous for a loaded machine, not a benchmark.
BOUND = 5.0
PROXY_VARIABLES = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")


def _timed_probe(addresses, timeout):
    start = time.monotonic()
    found = first_reachable(addresses, timeout)
    return found, time.monotonic() - start


@pytest.fixture
def no_proxies(monkeypatch):
    """No proxy variable set, in either case, whatever the environment running the tests has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def listening():
    """The address of a local server that accepts connections."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[:2]


@pytest.fixture
def unanswering():
    """A local address that never answers a connection, like a blackholed host: a server that accepts
    nothing, its one-connection queue filled, so the kernel drops further connection requests.
    Addresses meant to be blackholed (192.0.2.1, 10.255.255.1) are refused, or even accepted, on
    some networks (this one's sandbox accepts them), so they cannot be relied on."""
    with socket.socket() as server, contextlib.ExitStack() as clients:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = server.getsockname()[:2]
        timed_out = False
        for _ in range(8):
            client = clients.enter_context(socket.socket())
            client.settimeout(0.2)
            try:
                client.connect(address)
            except TimeoutError:
                timed_out = True
                break
        if not timed_out:
            pytest.skip("this system answers connections beyond a full listen queue")
        yield address


def test_an_unresolvable_host_is_unreachable():
    found, elapsed = _timed_probe([("something.invalid", 443)], timeout=1.0)
    assert found is None and elapsed < BOUND


def test_a_closed_port_is_unreachable_at_once(closed_port):
    found, elapsed = _timed_probe([("127.0.0.1", closed_port)], timeout=1.0)
    assert found is None and elapsed < BOUND


def test_a_listening_server_is_reachable(listening):
    found, elapsed = _timed_probe([listening], timeout=1.0)
    assert found == listening and elapsed < BOUND


def test_a_host_that_never_answers_is_unreachable_after_the_timeout(unanswering):
    found, elapsed = _timed_probe([unanswering], timeout=1.0)
    assert found is None
    assert 0.9 <= elapsed < BOUND, elapsed


def test_the_probe_stops_at_the_first_host_that_answers(unanswering, closed_port, listening):
    """All hosts are tried at once: one that never answers does not delay the one that does."""
    found, elapsed = _timed_probe([unanswering, ("127.0.0.1", closed_port), listening], timeout=10.0)
    assert found == listening
    assert elapsed < BOUND, elapsed  # well before the unanswering host's 10 s timeout


def test_the_probe_stops_once_every_host_has_failed(closed_port):
    """Refused everywhere: the answer comes at once, not at the timeout."""
    found, elapsed = _timed_probe([("127.0.0.1", closed_port), ("localhost", closed_port)], timeout=10.0)
    assert found is None and elapsed < BOUND, elapsed


def test_targets_are_the_urls_distinct_hosts_and_ports(no_proxies):
    urls = ["https://a.example/x.tar.gz", "https://a.example/y.tar.gz", "http://b.example/z",
            "https://c.example:8443/w", "ftp://d.example/v", "gs://bucket/u", "file:///tmp/t", "not a url"]
    assert connect_targets(urls) == [("a.example", 443), ("b.example", 80), ("c.example", 8443),
                                     ("d.example", 21)]


def test_behind_a_proxy_the_proxy_is_probed(no_proxies, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert connect_targets(["https://a.example/x", "https://b.example/y", "http://c.example/z"]) == [
        ("proxy.example", 3128), ("c.example", 80)]  # no http_proxy: plain http goes direct
    monkeypatch.setenv("HTTP_PROXY", "proxy.example:8080")  # no scheme: requests reads it as http://
    assert connect_targets(["http://c.example/z"]) == [("proxy.example", 8080)]


def test_all_proxy_and_no_proxy_are_respected(no_proxies, monkeypatch):
    monkeypatch.setenv("all_proxy", "socks5h://socks.example")
    monkeypatch.setenv("no_proxy", "inside.example")
    assert connect_targets(["https://a.example/x", "http://b.example/y", "https://inside.example/z"]) == [
        ("socks.example", 1080), ("inside.example", 443)]


def test_an_unreachable_download_is_refused_in_seconds_and_says_how_to_get_the_dataset(
        no_proxies, monkeypatch, closed_port, tmp_path):
    """Every proxy variable points at a closed port, so the dataset's hosts are unreachable here
    whatever this machine's network is."""
    for name in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"cannot download dataset 'kmnist': no connection to "
                                        rf"127\.0\.0\.1:{closed_port} .*data\.data_dir"):
        open_tfds("kmnist", str(tmp_path / "tfds"), None, True)
    assert time.monotonic() - start < BOUND


def test_a_manually_downloaded_dataset_is_not_probed(no_proxies, monkeypatch, closed_port, tmp_path):
    """ImageNet's files are fetched by hand: TFDS reads them from its manual folder, no network
    needed, so its listed hosts being unreachable must not stop it; TFDS's own message says what
    is missing."""
    for name in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
    with pytest.raises(UserError, match="Manual directory") as refused:
        open_tfds("imagenet2012", str(tmp_path / "tfds"), None, True)
    assert "no connection to" not in str(refused.value)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "choice"), [("cifar10", ["data=cifar10"]),
                                              ("kmnist", ["data=tfds", "data.name=kmnist"])])
def test_a_dataset_that_needs_a_download_fails_fast_without_a_network(cnnexp, tmp_path, name, choice):
    """Without a network, `cnnexp train` on a dataset that must be downloaded stops in seconds (3.3 s
    measured on an idle machine, start-up included), where TFDS alone retries for about 3.5 minutes.
    The bound here is loose, for a test machine busy with other tests: the probe's own bound is
    checked in-process above. Skipped where this machine reaches the dataset's hosts (or proxy):
    there the command would really download."""
    import tensorflow_datasets as tfds

    reached = first_reachable(connect_targets(tfds.builder_cls(name).url_infos or ()))
    if reached is not None:
        pytest.skip(f"this machine reaches {name}'s download host {reached[0]}:{reached[1]}")
    start = time.monotonic()
    result = cnnexp("train", *choice, f"data.data_dir={tmp_path / 'tfds'}", "trainer.epochs=1",
                    "trainer.progress=false", timeout=120)
    elapsed = time.monotonic() - start
    assert_one_line_error(result, f"cannot download dataset {name!r}")
    assert "data.data_dir" in result.stderr
    assert elapsed < 60, f"took {elapsed:.1f} s"
    assert run_dirs(tmp_path / "outputs") == []
