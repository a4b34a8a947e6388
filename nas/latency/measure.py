"""How latency is measured on the machine in hand (``host-cpu``, ``cuda``), per key and end to end.

The protocol, shared by per-key and whole-network timings so that their numbers are comparable:

* Inference as deployed: ``eval()``, BatchNorm folded into the convolutions (:func:`fuse_bn`),
  ``torch.inference_mode()``, float32, batch 1, NCHW, ``torch.set_num_threads(threads)``
  (default 1 thread, as in the MnasNet and MobileNetV3 papers).
* Warm-up calls first (allocator, oneDNN primitive creation), then ``rounds`` timed samples of
  one call each. Candidates are **interleaved**: every round times each candidate of a chunk
  once, in a fresh random order, so a burst of load from another process spreads over all
  candidates instead of spoiling one.
* The statistic is a low **quantile** of the samples (load on a shared machine only ever adds
  time); the spread recorded is their inter-quartile range. The timer's own cost (a no-op timed
  the same way) is subtracted.
* **Passes**: load from other processes (their memory traffic slows ours even on the thread
  clock) comes in bursts of seconds, longer than one interleaved chunk: re-measuring a table
  found whole chunks 10-40 % slow. So everything is measured in ``passes`` sweeps over all the
  candidates, and a candidate's time is the lowest of its per-pass statistics: a burst has to
  cover the same candidate in every sweep to inflate it.
* **Realistic caches**: inside a network a block's input was just written by the block before
  it (hot), but its weights were last touched a whole forward pass ago (evicted from the private
  caches). So a key is timed on one hot input while cycling through enough independently
  initialised copies of the block that their weights together exceed ``cold_bytes``; timing one
  module over and over would keep its weights in L1/L2 and under-state its cost.
* **Clock**: at 1 thread, the calling thread's CPU time (torch runs every op on the calling
  thread then, so on a quiet machine it equals wall-clock latency, and on a shared machine time
  spent preempted by other processes is not counted); wall clock for N > 1 threads.
* **Allocator in its steady state**: on glibc, freed memory is kept and reused
  (:func:`steady_allocator`: no ``mmap`` for large blocks, no trimming). glibc's default hands
  large tensors (> 128 KiB, a threshold it moves with the history of the process) back to the
  OS on free, so the next call page-faults them in again: at 112x112 a block took 7,000 minor
  faults and 2-3x its fault-free time, and whether it did depended on what the process had run
  before. That made isolated keys and whole networks disagree by up to 2x, in both directions.
* ``cuda``: the same, with samples taken by CUDA events around the call.

:func:`build_table` measures only the keys a table lacks, in chunks, saving after every chunk:
an interrupted build keeps what it measured and the next run measures only the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import functools
import itertools
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nas.arch import ArchSpec, HeadSpec, LayerSpec
from nas.blocks import ConvBNAct, SqueezeExcite, make_block, make_head
from nas.errors import NasError
from nas.latency.keys import LatencyKey, parse_key
from nas.latency.table import LatencyTable, TableMeta, check_compatible
from nas.model import build_model, fuse_bn

MEASURABLE_TARGETS = ("host-cpu", "cuda")
CLOCKS = ("auto", "wall", "thread-cpu")
NETWORK_BURST = 5  # consecutive timed forward passes of one network per round (steady state)


@dataclass(frozen=True)
class Protocol:
    """The knobs of a measurement; recorded in the table's metadata and part of its identity."""

    threads: int = 1
    batch: int = 1
    warmup: int = 3
    rounds: int = 25
    passes: int = 5
    quantile: float = 0.2
    cold_bytes: int = 8 << 20
    max_copies: int = 8
    chunk: int = 16
    clock: str = "auto"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise NasError(f"unknown clock {self.clock!r}; known: {', '.join(CLOCKS)}")
        if min(self.threads, self.batch, self.rounds, self.passes, self.chunk) < 1 or self.warmup < 0:
            raise NasError(f"invalid measurement protocol {self}")
        if not 0 <= self.quantile <= 1:
            raise NasError(f"protocol quantile must lie in [0, 1], got {self.quantile}")

    def clock_for(self, target: str) -> str:
        """``auto``: CUDA events on cuda, thread CPU time at 1 thread, wall clock otherwise."""
        if target == "cuda":
            return "cuda-events"
        if self.clock == "auto":
            return "thread-cpu" if self.threads == 1 else "wall"
        return self.clock

    def to_dict(self) -> dict:
        return {"statistic": f"lowest over passes of the quantile {self.quantile} of single-call samples",
                "spread": "inter-quartile range", "interleaved": True, "bn_folded": True, "memory_format": "NCHW",
                "allocator": allocator_policy(), **asdict(self)}


@dataclass(frozen=True)
class Timing:
    """A robust time (ms), its spread (ms) and the number of samples behind it."""

    ms: float
    spread_ms: float
    n: int


def best_of(a: Timing, b: Timing) -> Timing:
    """Two passes over the same candidate combined: the lower time (with its spread), all samples."""
    low = a if a.ms <= b.ms else b
    return Timing(low.ms, low.spread_ms, a.n + b.n)


def summarize(samples_ms: Sequence[float], quantile: float, overhead_ms: float = 0.0) -> Timing:
    """The protocol's statistic over raw samples, minus the timer's own cost (never below 0)."""
    values = np.asarray(samples_ms, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise NasError("no valid timing samples")
    q25, q75 = np.quantile(values, [0.25, 0.75])
    return Timing(max(float(np.quantile(values, quantile)) - overhead_ms, 0.0), float(q75 - q25), int(values.size))


def key_module(key: LatencyKey) -> nn.Module:
    """The module a key stands for, built exactly as :func:`nas.model.build_model` builds it."""
    if key.kind == "stem":
        module: nn.Module = ConvBNAct(3, key.cout, key.kernel, key.stride, act=key.act)
    elif key.kind == "head":
        module = make_head(HeadSpec(channels=key.exp, hidden=key.hidden, act=key.act, num_classes=key.cout),
                           key.cin)
    else:
        layer = LayerSpec(key.kind, key.kernel, key.stride, key.exp, key.cout, act=key.act, residual=key.residual)
        module = make_block(layer, key.cin)
        if key.se:  # the key records the squeeze width itself, not the ratio it came from
            module.se = SqueezeExcite(key.exp, key.se, "hard" if key.se_hard else "sigmoid")
    return fuse_bn(module).eval()


# ---------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(target: str, protocol: Protocol) -> dict:
    """What a measured table of ``target`` must match to be valid here (see table.check_compatible)."""
    check_target(target)
    if target == "cuda":
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        threads = None
    else:
        device, threads = cpu_model(), protocol.threads
    return {"device": device, "torch_version": torch.__version__, "threads": threads, "batch": protocol.batch,
            "dtype": "float32", "protocol": protocol.to_dict()}


def check_target(target: str) -> None:
    if target not in MEASURABLE_TARGETS:
        raise NasError(f"target {target!r} cannot be measured here; measurable: {', '.join(MEASURABLE_TARGETS)}")
    if target == "cuda" and not torch.cuda.is_available():
        raise NasError("target 'cuda' needs a CUDA GPU and none is available here")


def new_meta(target: str, protocol: Protocol) -> TableMeta:
    env = environment(target, protocol)
    return TableMeta(target=target, device=env["device"], kind="measured", torch_version=env["torch_version"],
                     threads=env["threads"], batch=protocol.batch, dtype="float32",
                     date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     protocol=env["protocol"], sources=(f"measured with nas.latency.measure on {platform.node()}",))


# ---------------------------------------------------------------- allocator

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters
_STEADY = "glibc heap: no mmap, no trim (freed memory reused, no page faults per call)"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") else None


def allocator_policy() -> str:
    """The allocator state measurements run in (part of the protocol's identity)."""
    return _STEADY if _glibc() is not None else "system default"


@functools.cache
def steady_allocator() -> str:
    """Keep freed memory in the process so every timed call reuses it (see the module docstring).

    Process-wide and irreversible (glibc has no getter to restore from): a process that measures
    keeps its memory. Memory use grows to the peak of what was measured, never more.
    """
    libc = _glibc()
    if libc is None:
        return allocator_policy()
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))):
        raise NasError("glibc mallopt refused the steady-allocator settings; cannot measure by the protocol")
    return _STEADY


# ---------------------------------------------------------------- timing


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _wall_sample(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def _thread_cpu_sample(fn: Callable[[], object]) -> float:
    start = time.thread_time_ns()
    fn()
    return (time.thread_time_ns() - start) / 1e6


def _cuda_sample(fn: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


_SAMPLERS = {"wall": _wall_sample, "thread-cpu": _thread_cpu_sample, "cuda-events": _cuda_sample}


def time_interleaved(candidates: Sequence[Callable[[], object]], protocol: Protocol, *, target: str = "host-cpu",
                     seed: int = 0, burst: int = 1) -> list[Timing]:
    """Time each zero-argument callable by the protocol, interleaved round by round.

    ``burst`` > 1 times each candidate that many times in a row per round, after one untimed
    call: a whole network is timed in its steady state (its own weights cached as in a
    benchmark loop), while the rounds still spread load bursts over all candidates.
    """
    sample = _SAMPLERS[protocol.clock_for(target)]
    steady_allocator()
    noop: Callable[[], object] = lambda: None  # noqa: E731 -- the timer's own cost, timed like the rest
    everyone = [noop, *candidates]
    samples: list[list[float]] = [[] for _ in everyone]
    rng = random.Random(seed)
    with torch.inference_mode():
        for fn in everyone:
            for _ in range(protocol.warmup):
                fn()
        if target == "cuda":
            torch.cuda.synchronize()
        order = list(range(len(everyone)))
        for _ in range(math.ceil(protocol.rounds / burst)):
            rng.shuffle(order)
            for i in order:
                if burst > 1:
                    everyone[i]()
                samples[i] += [sample(everyone[i]) for _ in range(burst)]
    overhead = summarize(samples[0], protocol.quantile).ms
    return [summarize(s, protocol.quantile, overhead) for s in samples[1:]]


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _key_candidate(key: LatencyKey, protocol: Protocol, device: torch.device) -> Callable[[], object]:
    first = key_module(key).to(device)
    copies = min(protocol.max_copies, max(1, math.ceil(protocol.cold_bytes / max(_param_bytes(first), 1))))
    modules = [first, *(key_module(key).to(device) for _ in range(copies - 1))]
    x = torch.randn(protocol.batch, key.cin, key.hw, key.hw, device=device)
    cycle = itertools.cycle(modules)
    return lambda: next(cycle)(x)


def measure_keys(keys: Sequence[LatencyKey | str], *, target: str = "host-cpu",
                 protocol: Protocol = Protocol()) -> list[Timing]:
    """Per-key timings, interleaved (call it with one chunk at a time to bound memory)."""
    check_target(target)
    device = torch.device("cuda" if target == "cuda" else "cpu")
    parsed = [parse_key(k) if isinstance(k, str) else k for k in keys]
    with _threads(protocol.threads):
        candidates = [_key_candidate(key, protocol, device) for key in parsed]
        return time_interleaved(candidates, protocol, target=target)


def measure_networks(specs: Sequence[ArchSpec], resolution: int = 224, *, target: str = "host-cpu",
                     protocol: Protocol = Protocol(), chunk: int = 8, progress: bool = True) -> list[Timing]:
    """End-to-end timings of whole networks by the same protocol: ``protocol.passes`` sweeps over
    all of them, ``chunk`` networks interleaved at a time, the best pass kept per network."""
    check_target(target)
    device = torch.device("cuda" if target == "cuda" else "cpu")
    best: list[Timing | None] = [None] * len(specs)
    bar = tqdm(total=len(specs) * protocol.passes, desc=f"measure networks ({target})", unit="net",
               disable=not progress, leave=False)
    with _threads(protocol.threads), bar:
        for sweep in range(protocol.passes):
            for start in range(0, len(specs), chunk):
                group = specs[start:start + chunk]
                nets = [fuse_bn(build_model(spec)).to(device) for spec in group]
                x = torch.randn(protocol.batch, 3, resolution, resolution, device=device)
                timings = time_interleaved([lambda net=net: net(x) for net in nets], protocol, target=target,
                                           seed=sweep * len(specs) + start, burst=NETWORK_BURST)
                for i, timing in enumerate(timings, start):
                    best[i] = timing if best[i] is None else best_of(best[i], timing)
                bar.update(len(group))
    return [t for t in best if t is not None]


# ---------------------------------------------------------------- tables


def open_table(table_dir: Path, target: str, protocol: Protocol, *, force: bool = False) -> LatencyTable:
    """The table in ``table_dir`` checked against this machine, or a new empty one."""
    if (Path(table_dir) / "meta.json").exists() or (Path(table_dir) / "table.csv").exists():
        table = LatencyTable.load(table_dir)
        if table.meta.target != target:
            raise NasError(f"latency table {table_dir} is for target {table.meta.target!r}, not {target!r}")
        check_compatible(table.meta, environment(target, protocol), where=str(table_dir), force=force)
        return table
    return LatencyTable.empty(new_meta(target, protocol))


KeyMeasurer = Callable[[Sequence[LatencyKey]], Sequence[Timing]]


def build_table(keys: Sequence[LatencyKey | str], table_dir: Path, *, target: str = "host-cpu",
                protocol: Protocol = Protocol(), measure: KeyMeasurer | None = None, force: bool = False,
                progress: bool = True) -> LatencyTable:
    """Measure what ``table_dir`` lacks, saving after every chunk; return the updated table.

    A key is complete after ``protocol.passes`` sweeps (``n >= passes * rounds`` samples); each
    sweep re-measures, chunk by chunk, every requested key still short of that, and keeps the
    lower time (:func:`best_of`). An interrupted build therefore resumes where it stopped, even
    mid-sweep. ``measure`` replaces the real measurement (tests pass a fake that counts its calls
    or fails).
    """
    table = open_table(table_dir, target, protocol, force=force)
    wanted = list(dict.fromkeys(map(str, keys)))
    samples = dict(zip(table.frame["key"], table.frame["n"]))
    sweeps = {k: max(0, protocol.passes - int(samples.get(k, 0)) // protocol.rounds) for k in wanted}
    if measure is None:
        check_target(target)
        measure = lambda chunk: measure_keys(chunk, target=target, protocol=protocol)  # noqa: E731
    with tqdm(total=sum(sweeps.values()), desc=f"latency table {target}", unit="key",
              disable=not progress or not any(sweeps.values()), leave=False) as bar:
        while todo := [k for k in wanted if sweeps[k] > 0]:
            for start in range(0, len(todo), protocol.chunk):
                chunk = todo[start:start + protocol.chunk]
                timings = measure([parse_key(k) for k in chunk])
                if len(timings) != len(chunk):
                    raise NasError(f"measurement returned {len(timings)} timings for {len(chunk)} keys")
                rows = []
                for key, timing in zip(chunk, timings):
                    if key in table:
                        row = table.frame.loc[table.frame["key"] == key].iloc[0]
                        timing = best_of(Timing(float(row["ms"]), float(row["spread_ms"]), int(row["n"])), timing)
                    rows.append({"key": key, "ms": timing.ms, "spread_ms": timing.spread_ms, "n": timing.n,
                                 "provenance": "measured"})
                    sweeps[key] -= 1
                table = table.with_rows(rows)
                table.save(table_dir)
                bar.update(len(chunk))
    return table
