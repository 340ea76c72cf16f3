#!/usr/bin/python3
"""Records the fixtures of test_churn.c; run as root inside a fresh network namespace:

    unshare --net python3 tests/unit/data/record_churn.py tests/unit/data

In that namespace only this script's sockets exist, and a tracing instance filtered on the
fixture's ports keeps other traffic of the host out of the trace. It writes:

  churn_format.txt, churn_header_page.txt   the event's format file and events/header_page
  churn_trace.raw                            every trace_pipe_raw page read, each padded to 4096
  churn_diag4.bin, churn_diag6.bin           sock_diag dump replies (IPv4, IPv6)

The sockets: listeners on 127.0.0.1:40001 and [::1]:40002; three short connections to the first
and two to the second, each closed by the server first (so the server side stays in TIME_WAIT);
then one connection to 40001 kept open (ESTABLISHED on both sides) while the dumps are taken.
"""
import os
import socket
import struct
import subprocess
import sys
import time

OUT = sys.argv[1]
TRACING = "/sys/kernel/tracing"
EVENT = "events/sock/inet_sock_set_state"
PORT4, PORT6 = 40001, 40002

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
if not os.path.exists(os.path.join(TRACING, "instances")):
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True)
inst = os.path.join(TRACING, "instances", f"tether-fixture-{os.getpid()}")
os.mkdir(inst)


def write(path, text):
    with open(os.path.join(inst, path), "w") as f:
        f.write(text)


try:
    write("trace_clock", "mono")
    write(EVENT + "/filter",
          f"protocol == 6 && (newstate == 2 || newstate == 3 || newstate == 7) && "
          f"(sport == {PORT4} || dport == {PORT4} || sport == {PORT6} || dport == {PORT6})")
    write(EVENT + "/enable", "1")

    lst4 = socket.socket(socket.AF_INET)
    lst4.bind(("127.0.0.1", PORT4))
    lst4.listen(16)
    lst6 = socket.socket(socket.AF_INET6)
    lst6.bind(("::1", PORT6))
    lst6.listen(16)
    for family, lst, addr, count in ((socket.AF_INET, lst4, ("127.0.0.1", PORT4), 3),
                                     (socket.AF_INET6, lst6, ("::1", PORT6), 2)):
        for _ in range(count):
            c = socket.socket(family)
            c.connect(addr)
            s, _ = lst.accept()
            time.sleep(0.002)  # a lifetime of a few ms
            s.close()          # the server closes first: its side goes to TIME_WAIT
            c.recv(1)
            c.close()
    kept_c = socket.create_connection(("127.0.0.1", PORT4))
    kept_s, _ = lst4.accept()
    time.sleep(0.2)

    with open(os.path.join(OUT, "churn_trace.raw"), "wb") as out:
        for cpu in range(os.cpu_count()):
            path = os.path.join(inst, f"per_cpu/cpu{cpu}/trace_pipe_raw")
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            while True:
                try:
                    page = os.read(fd, 4096)
                except BlockingIOError:
                    break
                if not page:
                    break
                out.write(page.ljust(4096, b"\0"))
            os.close(fd)
    for src, dst in ((f"{TRACING}/{EVENT}/format", "churn_format.txt"),
                     (f"{TRACING}/events/header_page", "churn_header_page.txt")):
        with open(src) as f, open(os.path.join(OUT, dst), "w") as g:
            g.write(f.read())

    ext = (1 << (2 - 1)) | (1 << (8 - 1))  # INET_DIAG_INFO, INET_DIAG_SKMEMINFO
    for family, name in ((socket.AF_INET, "churn_diag4.bin"), (socket.AF_INET6, "churn_diag6.bin")):
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, ext, 0, 0xFFFFFFFF) + bytes(48)
        hdr = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0)  # SOCK_DIAG_BY_FAMILY, DUMP
        nl.sendto(hdr + req, (0, 0))
        reply = b""
        while True:
            chunk = nl.recv(65536)
            reply += chunk
            pos, done = 0, False
            while pos + 16 <= len(chunk):
                length, kind = struct.unpack_from("=IH", chunk, pos)
                done |= kind == 3  # NLMSG_DONE
                pos += (length + 3) & ~3
            if done:
                break
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(reply)
        nl.close()
    kept_c.close()
    kept_s.close()
finally:
    write(EVENT + "/enable", "0")
    os.rmdir(inst)
