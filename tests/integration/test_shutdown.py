"""Graceful shutdown: SIGTERM/SIGINT stop accepting, let requests in flight finish within
drain_timeout, then tetherd exits 0."""

import signal
import socket
import time

import pytest

from helpers import Client, ConnectionClosed, build_request, wait_for


def refuses_connections(port):
    """True once connects fail. A connect that races the listener's close is reset rather than
    refused: that is a refusal too."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_request_in_flight_completes_and_new_connections_are_refused(start_proxy, sig):
    tetherd, upstream = start_proxy(tether_cfg="drain_timeout = 5s")
    with Client(tetherd.port) as client:
        client.send(build_request("GET", "/slow", [("X-Delay-Ms", "1500"),
                                                   ("X-Body-Size", "5000")]))
        wait_for(lambda: upstream.stats()["requests"] == 1, 3, "the request to reach the upstream")
        tetherd.signal(sig)
        wait_for(lambda: refuses_connections(tetherd.port), 1, "the listener to close")
        resp = client.read_response()
    assert resp.status == 200
    assert resp.header("X-Upstream-Target") == "/slow"
    assert len(resp.body) == 5000
    assert tetherd.wait(5) == 0


def test_drain_timeout_bounds_the_wait_for_slow_requests(start_proxy):
    tetherd, upstream = start_proxy(tether_cfg="drain_timeout = 1s")
    with Client(tetherd.port) as client:
        client.send(build_request("GET", "/", [("X-Delay-Ms", "8000")]))
        wait_for(lambda: upstream.stats()["requests"] == 1, 3, "the request to reach the upstream")
        start = time.monotonic()
        tetherd.signal(signal.SIGTERM)
        assert tetherd.wait(4) == 0
        assert time.monotonic() - start >= 0.9
        with pytest.raises(ConnectionClosed):
            client.read_response()


def test_idle_client_connections_do_not_delay_exit(start_proxy):
    tetherd, _ = start_proxy(tether_cfg="drain_timeout = 10s")
    with Client(tetherd.port) as idle_client:
        assert idle_client.request().status == 200
        start = time.monotonic()
        tetherd.signal(signal.SIGTERM)
        assert tetherd.wait(3) == 0, "an idle keep-alive connection has nothing in flight"
        assert idle_client.closed_by_server(timeout=1)
    assert time.monotonic() - start < 3
