#!/usr/bin/python3
"""Interleaved A/B of tetherd with splice on and off (docs/internals/tuning.md, "splice(2)"):
50 MB downloads from nginx (sendfile on) with curl -o /dev/null, through two tetherds (1 worker
each, splice = on / off) and straight; tetherd CPU per MB from /proc/PID/task/*/schedstat.
Usage: bench/splice_ab.py build-release/tetherd [ROUNDS]   (3 downloads per mode per round)"""
import glob, os, socket, statistics, subprocess, sys, tempfile, time
TETHERD = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
S = tempfile.mkdtemp(prefix="splice-ab-")
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
def wait_port(p):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit(f"port {p}")
def cpu_ns(pid):
    return sum(int(open(t).read().split()[0]) for t in glob.glob(f"/proc/{pid}/task/*/schedstat"))
os.makedirs(f"{S}/root", exist_ok=True)
if not os.path.exists(f"{S}/root/big"):
    with open(f"{S}/root/big", "wb") as f: f.write(os.urandom(50 * 1000 * 1000))
np = free_port()
for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"): os.makedirs(f"{S}/{d}", exist_ok=True)
open(f"{S}/nginx.conf", "w").write(f"""user root; worker_processes 1; pid {S}/nginx.pid; error_log {S}/err.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; keepalive_timeout 60s;
client_body_temp_path {S}/client_body; proxy_temp_path {S}/proxy; fastcgi_temp_path {S}/fastcgi; uwsgi_temp_path {S}/uwsgi; scgi_temp_path {S}/scgi;
server {{ listen 127.0.0.1:{np}; root {S}/root; }} }}
""")
ng = subprocess.Popen(["/usr/sbin/nginx", "-p", S, "-c", f"{S}/nginx.conf", "-e", f"{S}/err.log", "-g", "daemon off;"])
wait_port(np)
procs = {}
try:
    for mode in ("on", "off"):
        p = free_port()
        open(f"{S}/{mode}.ini", "w").write(f"[tether]\nworkers = 1\nlog_level = warn\n[upstream u]\nurl = http://127.0.0.1:{np}\nlisten = 127.0.0.1:{p}\nsplice = {mode}\n")
        procs[mode] = (subprocess.Popen([TETHERD, "-c", f"{S}/{mode}.ini"]), p)
        wait_port(p)
    res = {"on": ([], []), "off": ([], []), "direct": ([], [])}
    for r in range(ROUNDS):
        order = ("on", "off", "direct") if r % 2 == 0 else ("direct", "off", "on")
        for mode in order:
            port = np if mode == "direct" else procs[mode][1]
            pid = procs[mode][0].pid if mode != "direct" else None
            for _ in range(3):
                c0 = cpu_ns(pid) if pid else 0
                t0 = time.monotonic()
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/big"], check=True)
                t1 = time.monotonic()
                c1 = cpu_ns(pid) if pid else 0
                res[mode][0].append((c1 - c0) / 1e6 / 50)
                res[mode][1].append((t1 - t0) * 1000)
    for mode, (cpu, wall) in res.items():
        line = f"{mode:6} wall ms median {statistics.median(wall):.0f} ({min(wall):.0f}-{max(wall):.0f})"
        if mode != "direct":
            line += f"  CPU ms/MB median {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f})"
        print(line)
finally:
    for pr, _ in procs.values(): pr.terminate(); pr.wait()
    ng.terminate(); ng.wait()
    subprocess.run(["rm", "-rf", S])
