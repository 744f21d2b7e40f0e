"""How `nldsl check` scales with the size and depth of a spec: generated specs, timed on this machine.

    python bench/huge_spec.py                       # 100,000-line specs, 10,000-deep expressions
    python bench/huge_spec.py --lines 20000 --depth 1000

Each spec is written to a temporary folder and checked by `nldsl check` in its own process, as a
user runs it (start-up, parsing, checking, the nesting graph and printing every diagnostic), so
the peak memory is that process's own. Prints a Markdown table: what each spec is, its size, the
exit status and the diagnostics' codes, the wall time, the CPU time (user + system: on a shared
machine the wall time counts waits for the CPU too) and the peak memory. Deep expressions are
expected to end in one NL004 (exit 1); everything else checks (exit 0, with NL073 warnings for the
unused values). `tests/test_huge_specs.py` checks the same generators at sizes fit for CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

IMPORT = 'import "optim/sgd.nl"\n'
TRAIN = "  train {\n    optimize all by sgd(lr = 0.1)\n  }\n"
HEADER = "vocab = 256, dim = 16, heads = 2, context = 64"


def _model(body: list[str], header: str = HEADER) -> str:
    return IMPORT + f"model Huge({header}) {{\n  block {{\n" + "\n".join(body) + "\n  }\n" + TRAIN + "}\n"


def deep_sum(depth: int) -> str:
    """One value that adds `depth + 1` terms: the sum nests `depth` operators deep."""
    return _model(["    x = rmsnorm(h)", "    s = " + " + ".join(["x"] * (depth + 1)), "    h = h + s"])


def deep_calls(depth: int) -> str:
    """`depth` calls nested in one another."""
    return _model(["    h = " + "sigmoid(" * depth + "h" + ")" * depth])


def deep_parentheses(depth: int) -> str:
    """`depth` pairs of parentheses around one name: grouping only, so nothing nests."""
    return _model(["    h = h + " + "(" * depth + "h" + ")" * depth])


def chain(lines: int) -> str:
    """A chain of values, each computed from the one before, that reaches the output."""
    n = lines - 9
    return _model(["    x0 = rmsnorm(h)", *(f"    x{i} = x{i - 1} * 0.5 + x0" for i in range(1, n)),
                   f"    h = h + x{n - 1}"])


def unused(lines: int) -> str:
    """Values that are computed and never used: one NL073 warning each."""
    n = lines - 9
    return _model([*(f"    u{i} = h * {i}" for i in range(n - 1)), "    h = h + 1"])


def blocks(lines: int) -> str:
    """Many blocks of a linear-attention layer, 10 lines each, each with a memory of its own name."""
    layer = ["  block layer{i} {{", "    x = rmsnorm(h)", "    param W_k{i} : matrix(dim, dim)",
             "    param W_v{i} : matrix(dim, dim)", "    k = x @ W_k{i}", "    v = x @ W_v{i}",
             "    memory M{i} : matrix per head init zeros",
             "    learn M{i} : dot(self(k), v) by gd(lr = 0.1) every token read after", "    h = h + M{i}(k)", "  }}"]
    count = max(1, (lines - 5) // len(layer))
    body = "\n".join(line.format(i=i) for i in range(count) for line in layer)
    return IMPORT + f"model Huge({HEADER}) {{\n{body}\n" + TRAIN + "}\n"


def optimizer_chain(lines: int) -> str:
    """An optimizer whose update reads the end of a chain of values."""
    n = lines - 4
    body = ["  v0 = grad", *(f"  v{i} = v{i - 1} * 0.5 + grad" for i in range(1, n)),
            f"  param = param - lr * v{n - 1}"]
    return "optimizer huge(lr = 0.1) {\n" + "\n".join(body) + "\n}\n"


def header(lines: int) -> str:
    """A model header of one parameter per line, each computed from the one before."""
    n = lines - 10
    params = ",\n        ".join(["vocab = 256", "dim = 16", "context = 64", "c0 = 1",
                                *(f"c{i} = c{i - 1} + 1" for i in range(1, n))])
    return IMPORT + f"model Huge({params}) {{\n  block {{\n    h = h + rmsnorm(h)\n  }}\n" + TRAIN + "}\n"


DEEP: dict[str, Callable[[int], str]] = {"deep sum": deep_sum, "deep calls": deep_calls,
                                         "deep parentheses": deep_parentheses}
LONG: dict[str, Callable[[int], str]] = {"chain of values": chain, "unused values": unused, "blocks": blocks,
                                         "optimizer chain": optimizer_chain, "header": header}


def check(path: Path, timeout: float) -> tuple[int | None, Counter[str], float, float, float]:
    """`nldsl check PATH` in a process of its own: exit status (None if it ran out of time), codes
    reported, seconds, CPU seconds, peak MiB."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "nldsl.cli", "check", str(path)], stdout=output,
                                 stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
        seconds = time.perf_counter() - start
        exit_code = os.waitstatus_to_exitcode(status)
        output.seek(0)
        codes = Counter(re.findall(rb"^(?:error|warning)\[(NL\d{3})\]", output.read(), re.M))
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    found = Counter({c.decode(): n for c, n in codes.items()})
    return (None if exit_code < 0 else exit_code), found, seconds, usage.ru_utime + usage.ru_stime, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000, help="lines of the long specs (default 100,000)")
    p.add_argument("--depth", type=int, default=10_000, help="nesting of the deep expressions (default 10,000)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one check may take (default 600)")
    args = p.parse_args()
    print(f"`nldsl check` on generated specs; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}\n")
    print("| spec | lines | MB | exit | diagnostics | seconds | CPU s | peak MiB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        specs = [(name, make, args.depth) for name, make in DEEP.items()] + \
            [(name, make, args.lines) for name, make in LONG.items()]
        for name, make, size in specs:
            text = make(size)
            path = Path(tmp) / f"{name.replace(' ', '_')}.nl"
            path.write_text(text, encoding="utf-8")
            status, codes, seconds, cpu, peak = check(path, args.timeout)
            shown = ", ".join(f"{code} ×{n:,}" for code, n in sorted(codes.items())) or "—"
            label = f"{name} ({size:,} deep)" if make in DEEP.values() else name
            took = f"{seconds:.1f}" if status is not None else f"> {args.timeout:.0f} (stopped)"
            exit_status = "—" if status is None else status
            print(f"| {label} | {text.count(chr(10)):,} | {len(text) / 1e6:.1f} | {exit_status} | {shown} | "
                  f"{took} | {cpu:.1f} | {peak:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
