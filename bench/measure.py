"""bench/run's measuring: commands pinned to a core, wrk's rate and latency,
the CPU time a request costs core 0 (PostgreSQL's and the server's, from
/proc/<pid>/stat; a baseline's, from /proc/stat), memory and wall time."""

import os
import re
import statistics
import subprocess
import sys
import time

# The servers (and the cluster they start) run on core 0, every load generator on core 1.
SERVER_CORE, LOAD_CORE = "0", "1"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def pinned(core, cmd):
    return ["taskset", "-c", core] + cmd


def wrk(url, connections, seconds, headers=(), script=None):
    """Requests/s and the p99 latency (ms) of wrk against url, from core 1."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = run(pinned(LOAD_CORE, cmd + [url]))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx answers\n{out}")
    return rate, float(p99.group(1)) * scale[p99.group(2)]


def cpu_ticks(pids):
    """utime + stime (clock ticks) of each of pids still running, by pid."""
    ticks = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[pid] = int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return ticks


def postgres_pids(ff):
    """The embedded cluster's postmaster and every process it started."""
    with open(f"{ff.work}/data/postgres/data/postmaster.pid") as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return pids


def with_cpu(ff, secs, load):
    """Runs load() (a wrk measure: rate, p99) and returns it with the CPU time
    PostgreSQL and the server spent per request, in µs (both are pinned to core 0,
    so together they are what one request costs that core)."""
    pg, server = postgres_pids(ff), [ff.pid()]
    before_pg, before_srv = cpu_ticks(pg), cpu_ticks(server)
    rate, p99 = load()
    after_pg, after_srv = cpu_ticks(pg), cpu_ticks(server)
    requests = rate * secs  # wrk's rate over its own secs
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")

    def per_request(before, after):
        spent = sum(after[p] - before[p] for p in after if p in before)
        return spent * tick_us / requests

    return rate, p99, per_request(before_pg, after_pg), per_request(before_srv, after_srv)


def with_core(secs, load):
    """Runs load() (a wrk measure: rate, p99) and returns it with the time core 0
    (the servers' core) was busy per request, in µs: all of a baseline's cost."""
    def busy():
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{SERVER_CORE} "):
                    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in line.split()[1:8])
                    return user + nice + system + irq + softirq
        raise RuntimeError("no core 0 in /proc/stat")

    before = busy()
    rate, p99 = load()
    spent = busy() - before
    return rate, p99, spent * 1e6 / os.sysconf("SC_CLK_TCK") / (rate * secs)


def slack(target, rates, costs):
    """What a target ratio leaves per request beside the baseline's own core-0
    time: 1 / (target × the baseline's rate) − its time, µs, per pair."""
    return [1e6 / (target * r) - c for r, c in zip(rates, costs)]


def status_mib(pid, field):
    """A size from /proc/<pid>/status (VmRSS, VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def hwm_reset(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def hwm_mib(pid):
    """The peak RSS since the last hwm_reset, MiB."""
    return status_mib(pid, "VmHWM")


def timed(cmd, **kw):
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    return time.monotonic() - start


def median_ms(fn, n=7):
    times = []
    for _ in range(n):
        start = time.monotonic()
        fn()
        times.append((time.monotonic() - start) * 1000)
    return statistics.median(times)


def wrk_latency(url, script, secs, allow_errors=False):
    cmd = ["wrk", "-t1", "-c1", f"-d{secs}s", "--latency", "-s", script, url]
    out = run(pinned(LOAD_CORE, cmd))
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
