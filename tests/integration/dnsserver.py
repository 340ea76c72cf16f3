"""A DNS server of the tests' own, on 127.0.0.1 (UDP), whose answers the test changes.

    dns = DnsServer()              # a thread in the test process; dns.port is its port
    dns.set("svc.test", ["127.0.0.2", "127.0.0.3"], ttl=1)
    dns.mode = "servfail"          # "answer" (default), "nxdomain", "servfail", "silent"
    dns.queries                    # how many queries it has seen
    dns.close()

Names without a record get NXDOMAIN. AAAA queries get the IPv6 addresses set for the name (none by
default, which is an empty NOERROR answer). Built on Debian's python3-dnslib.
"""

import ipaddress
import socket
import threading

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord


class DnsServer:
    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.records = {}
        self.mode = "answer"
        self.queries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def resolver(self):
        """The value for tether's `resolver` key."""
        return f"127.0.0.1:{self.port}"

    def set(self, name, addresses, ttl=1):
        with self._lock:
            self.records[name.rstrip(".").lower()] = (list(addresses), ttl)

    def _answer(self, request):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        with self._lock:
            mode, entry = self.mode, self.records.get(name)
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if mode == "nxdomain" or entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        addresses, ttl = entry
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version == 4 and request.q.qtype == QTYPE.A:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
            elif ip.version == 6 and request.q.qtype == QTYPE.AAAA:
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
        return reply

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                request = DNSRecord.parse(data)
            except Exception:  # not DNS: ignore, as a server would
                continue
            with self._lock:
                self.queries += 1
                silent = self.mode == "silent"
            if not silent:
                self.sock.sendto(self._answer(request).pack(), peer)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
