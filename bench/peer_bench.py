"""nldsl against the public PyTorch implementations, side by side on this machine, in one run.

    bash bench/peers/run.sh            # = bash bench/peers/setup.sh && .venv/bin/python bench/peer_bench.py

Hope: nldsl's specs/hope.nl (compiled and eager) against the `nested-learning` package (0.2.0),
variant hope_selfmod, with its in-context updates on (its training loop's online path) and on its
read-only path. Titans: one Titans neural-memory layer in nldsl (bench/specs/titans_memory.nl)
against titans-pytorch (0.5.5) NeuralMemory. Every measurement is a fresh process (the peers run in
bench/.peers-venv, nldsl in the project's venv); peer and nldsl measurements alternate, so a
change in the machine's load during the run reaches both sides. Each child reports training
tokens/s (median over timed windows, warm-up steps and compilation excluded) and its peak RSS.
The driver also measures how much CPU other processes took during each measurement, since the
numbers are only comparable on an otherwise idle machine. Results: bench/results/peers.md (and the
raw JSON lines in bench/results/peers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
PEER_PY = ROOT / "bench" / ".peers-venv" / "bin" / "python"
NLDSL_PY = Path(sys.executable)
RESULTS = ROOT / "bench" / "results"


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat", encoding="ascii") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def foreign_load(seconds: float = 3.0) -> float:
    """Cores' worth of CPU that other processes use now (this driver sleeps meanwhile)."""
    b0, t0 = cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


class ForeignCPU:
    """CPU time used by processes that are not this driver or its descendants, sampled from
    /proc every `period` seconds while a measurement runs (a process born and gone between two
    samples is missed)."""

    def __init__(self, period: float = 0.5):
        import threading
        self.period, self.total, self.seen = period, 0.0, {}
        self.hz = os.sysconf("SC_CLK_TCK")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _snapshot(self) -> dict[int, tuple[int, float]]:
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                procs[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self.hz)
            except (OSError, IndexError, ValueError):
                continue
        return procs

    def _foreign(self, procs: dict[int, tuple[int, float]]) -> dict[int, float]:
        mine = {os.getpid()}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _) in procs.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    changed = True
        return {pid: cpu for pid, (_, cpu) in procs.items() if pid not in mine}

    def _loop(self) -> None:
        self.seen = self._foreign(self._snapshot())
        while not self.stop_event.wait(self.period):
            now = self._foreign(self._snapshot())
            for pid, cpu in now.items():
                if pid in self.seen:          # a process first seen now counts from now on
                    self.total += max(cpu - self.seen[pid], 0.0)
            self.seen = now

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()
        self.cores = self.total / max(time.perf_counter() - self.t0, 1e-9)


def wait_quiet(limit_s: float, threshold: float) -> list[float]:
    seen = []
    deadline = time.time() + limit_s
    while True:
        load = foreign_load()
        seen.append(round(load, 2))
        if load <= threshold or time.time() > deadline:
            return seen
        print(f"  the machine is busy ({load:.2f} cores used by other processes); waiting", flush=True)
        time.sleep(10)


def run_child(name: str, cmd: list[str], env: dict, timeout: float) -> dict:
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(str(c) for c in cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with ForeignCPU() as foreign:
        try:
            done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                                  timeout=timeout, check=False, cwd=ROOT)
            out, err, rc = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + \
                f"\ntimed out after {timeout:.0f} s"
            rc = -1
    wall = time.perf_counter() - t0
    other = foreign.cores
    ncpu = os.cpu_count() or 1
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if rc != 0 or not lines:
        print(f"  FAILED (exit {rc}):\n{err[-2500:]}", flush=True)
        return {"name": name, "failed": True, "error": err[-4000:], "exit": rc, "wall_s_total": wall,
                "other_load_cores": round(other, 2)}
    res = json.loads(lines[-1])
    res.update(name=name, wall_s_total=wall, other_load_cores=round(other, 2), cpus=ncpu)
    print(f"  {res['tokens_per_s']:,.1f} tokens/s (windows {res['window_tokens_per_s']}), peak RSS "
          f"{res.get('peak_rss_mb_timed') or res['peak_rss_mb_process']:,.0f} MB, {wall:.0f} s, other processes "
          f"{other:.2f} cores", flush=True)
    return res


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["cpu"] = v.strip()
            if k.strip() == "Flags":
                info["avx512"] = "avx512f" in v.split()
    except OSError:
        pass
    with open("/proc/meminfo", encoding="ascii") as f:
        info["ram_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    ver = subprocess.run([str(NLDSL_PY), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                         text=True, check=False).stdout.strip()
    pver = subprocess.run([str(PEER_PY), "-c", "import torch, importlib.metadata as m; print(torch.__version__,"
                           " m.version('nested-learning'), m.version('titans-pytorch'))"],
                          capture_output=True, text=True, check=False).stdout.split()
    info["torch_nldsl"] = ver
    if len(pver) == 3:
        info["torch_peers"], info["nested_learning"], info["titans_pytorch"] = pver
    return info


def matmul_peak() -> float:
    """The fp32 matmul peak, measured in a process of the nldsl venv with every thread."""
    code = "import json, _measure; _measure.set_threads(); print(json.dumps(_measure.matmul_peak()))"
    done = subprocess.run([str(NLDSL_PY), "-c", code], capture_output=True, text=True, check=True, cwd=PEERS)
    return float(done.stdout.strip().splitlines()[-1])


def plan(args) -> list[tuple[str, list, float]]:
    """(name, command, timeout s), peer and nldsl alternating."""
    pk = ["--warmup", str(args.peer_warmup)]
    hope_peer, titans_peer, side = PEERS / "hope_peer.py", PEERS / "titans_peer.py", PEERS / "nldsl_side.py"
    w = ["--windows", str(args.windows)]
    steps = [
        ("peer_hope_readonly", [PEER_PY, hope_peer, "--mode", "readonly", "--warmup", "3", *w,
                                "--per-window", "3"], 300),
        ("nldsl_hope_compiled", [NLDSL_PY, side, "--model", "hope", "--mode", "compiled", "--warmup", "3", *w,
                                 "--per-window", "2"], 900),
        ("peer_hope_online", [PEER_PY, hope_peer, "--mode", "online", *pk, *w, "--per-window", "1"], 900),
        ("nldsl_hope_eager", [NLDSL_PY, side, "--model", "hope", "--mode", "eager", "--warmup", "3", *w,
                              "--per-window", "1"], 600),
    ]
    if not args.skip_inplace:
        steps.append(("peer_hope_online_inplace", [PEER_PY, hope_peer, "--mode", "online-inplace", *pk, *w,
                                                   "--per-window", "1"], 900))
    steps.append(("peer_hope_poststep", [PEER_PY, hope_peer, "--mode", "poststep", "--warmup", "2", *w,
                                         "--per-window", "2"], 600))
    steps += [
        ("peer_titans_sequential", [PEER_PY, titans_peer, "--variant", "sequential", *pk, *w,
                                    "--per-window", "1"], 600),
        ("nldsl_titans_compiled", [NLDSL_PY, side, "--model", "titans_memory", "--mode", "compiled", "--warmup", "3",
                                   *w, "--per-window", "3"], 900),
        ("peer_titans_parallel", [PEER_PY, titans_peer, "--variant", "parallel", "--warmup", "2", *w,
                                  "--per-window", "2"], 600),
        ("nldsl_titans_eager", [NLDSL_PY, side, "--model", "titans_memory", "--mode", "eager", "--warmup", "3", *w,
                                "--per-window", "3"], 600),
        ("peer_titans_issue", [PEER_PY, titans_peer, "--variant", "issue", *pk, "--windows", "3",
                               "--per-window", "1"], 600),
    ]
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=5, help="timed windows per measurement (median reported)")
    p.add_argument("--peer-warmup", type=int, default=1, help="warm-up steps of the slow peer paths")
    p.add_argument("--skip-inplace", action="store_true", help="skip the peer's in-place online variant")
    p.add_argument("--wait-quiet", type=float, default=600, help="seconds to wait for other processes to "
                   "leave the CPU before starting")
    p.add_argument("--wait-each", type=float, default=120, help="seconds to wait for a quiet machine before "
                   "each measurement")
    p.add_argument("--retry-busy", type=float, default=0.5, help="measure again (once) when other processes "
                   "took more than this many cores during a measurement; 0: never")
    p.add_argument("--only", help="comma-separated measurement names (for debugging; the report needs all)")
    p.add_argument("--inductor-cache", help="reuse this inductor cache folder (default: a new, empty one)")
    p.add_argument("--out", default=str(RESULTS / "peers.md"))
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json of the last run")
    args = p.parse_args()
    out = Path(args.out)
    sys.path.insert(0, str(PEERS))
    from report import write_report  # bench/peers/report.py
    if args.report_only:
        saved = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        out.write_text(write_report(saved["machine"], saved["results"]), encoding="utf-8")
        print(f"wrote {out} from {out.with_suffix('.json')}")
        return
    if not PEER_PY.exists():
        raise SystemExit("bench/.peers-venv is missing: run bash bench/peers/setup.sh")
    info = machine()
    print(f"machine: {info}", flush=True)
    info["load_before"] = wait_quiet(args.wait_quiet, threshold=0.15)
    info["matmul_peak"] = matmul_peak()
    print(f"fp32 matmul peak: {info['matmul_peak'] / 1e9:.0f} GFLOP/s", flush=True)
    # a cold inductor cache by default, so the reported compile time is the full one
    cache = Path(args.inductor_cache) if args.inductor_cache else ROOT / "build" / f"inductor-peers-{time.time_ns()}"
    info["inductor_cache"] = "given (may be warm)" if args.inductor_cache else "empty at start"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    started = time.time()
    results = {}
    for name, cmd, timeout in plan(args):
        if args.only and name not in args.only.split(","):
            continue
        wait_quiet(args.wait_each, threshold=0.15)
        res = run_child(name, cmd, env, timeout)
        if args.retry_busy and res.get("other_load_cores", 0) > args.retry_busy:
            print(f"  other processes took {res['other_load_cores']:.2f} cores: measuring {name} again", flush=True)
            wait_quiet(args.wait_quiet, threshold=0.15)
            again = run_child(name, cmd, env, timeout)
            again["first_try"] = {k: res.get(k) for k in ("tokens_per_s", "other_load_cores", "first_step_s")}
            if again.get("failed") or again.get("other_load_cores", 0) > res.get("other_load_cores", 0):
                res["second_try"] = {k: again.get(k) for k in ("tokens_per_s", "other_load_cores")}
            else:
                res = again
        results[name] = res
    info["wall_s"] = time.time() - started
    info["load_after"] = round(foreign_load(), 2)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str),
                                        encoding="utf-8")
    out.write_text(write_report(info, results), encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.json')} ({info['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
