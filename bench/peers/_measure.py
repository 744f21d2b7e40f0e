"""Timing and memory helpers shared by the peer benchmark's scripts (standard library + torch only,
so they import in the project's venv and in bench/.peers-venv alike).

A measurement runs in its own fresh process. Peak memory is the kernel's high-water mark of the
resident set (VmHWM in /proc/self/status): the whole process's peak, and the peak over the timed
steps alone, after the high-water mark was reset (writing 5 to /proc/self/clear_refs) once the
warm-up steps (and any compilation) were done.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import time
from collections.abc import Callable


def set_threads() -> int:
    import torch
    n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(r"VmRSS:\s+(\d+)\s+kB", f.read()).group(1)) / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StepClock:
    """Collects the end time of every training step; the first `warmup` steps are excluded, the
    rest are cut into `windows` windows of `per_window` steps each, and the throughput is the
    median over windows."""

    def __init__(self, warmup: int, windows: int, per_window: int, tokens_per_step: int):
        self.warmup, self.windows, self.per_window = warmup, windows, per_window
        self.tokens_per_step = tokens_per_step
        self.start = time.perf_counter()
        self.ends: list[float] = []
        self.process_peak_before_timing_mb = None
        self.peak_reset = False

    @property
    def total_steps(self) -> int:
        return self.warmup + self.windows * self.per_window

    def mark(self) -> None:
        self.ends.append(time.perf_counter())
        if len(self.ends) == self.warmup:
            self.process_peak_before_timing_mb = peak_rss_mb()
            self.peak_reset = reset_peak()

    def run(self, step: Callable[[], None]) -> None:
        for _ in range(self.total_steps):
            step()
            self.mark()

    def result(self) -> dict:
        if len(self.ends) < self.total_steps:
            raise RuntimeError(f"only {len(self.ends)} of {self.total_steps} steps ran")
        starts = [self.start, *self.ends[:-1]]
        steps = [e - s for s, e in zip(starts, self.ends, strict=True)]
        rates = []
        for w in range(self.windows):
            a = self.warmup + w * self.per_window
            seconds = self.ends[a + self.per_window - 1] - self.ends[a - 1] if a else \
                self.ends[self.per_window - 1] - self.start
            rates.append(self.per_window * self.tokens_per_step / seconds)
        return {
            "tokens_per_s": statistics.median(rates),
            "window_tokens_per_s": [round(r, 1) for r in rates],
            "step_s_median": statistics.median(steps[self.warmup:]),
            "first_step_s": steps[0],
            "warmup_steps_s": [round(s, 3) for s in steps[: self.warmup]],
            "warmup": self.warmup, "windows": self.windows, "steps_per_window": self.per_window,
            "tokens_per_step": self.tokens_per_step,
            "peak_rss_mb_timed": peak_rss_mb() if self.peak_reset else None,
            "peak_rss_mb_process": max(peak_rss_mb(), self.process_peak_before_timing_mb or 0.0),
        }


def cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` knows."""
    import platform
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak() -> float:
    """fp32 matmul FLOP/s on this machine's threads: the best of a few timed square products (512 and
    2048 wide), the denominator of model FLOP utilization."""
    import torch
    best = 0.0
    for n in (512, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def step_flops(step: Callable[[], None]) -> float:
    """FLOPs of one call of `step` (one eager training step), counted by torch's FlopCounterMode:
    matrix products and convolutions, forward and backward, whatever the implementation."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def emit(payload: dict) -> None:
    """The one JSON line a measurement script prints (the driver reads the last line starting
    with '{')."""
    print(json.dumps(payload, default=str), flush=True)
