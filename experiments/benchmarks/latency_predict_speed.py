"""Benchmark: how long predict_many takes for 10,000 architectures from a built table (target < 1 s).

Uses a throw-away host-cpu table whose numbers come from a fake measurement, so the figure is
the predictor's own cost (lookups + numpy), not the machine's speed at measuring.

    python experiments/benchmarks/latency_predict_speed.py [--space mnasnet] [--n 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from nas.latency.calibrate import Calibration
from nas.latency.keys import decompose
from nas.latency.measure import Timing, build_table
from nas.latency.predict import get_latency_model
from search_spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="mnasnet", choices=("mnasnet", "mobilenetv3"))
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    space, rng = get_space(args.space), np.random.default_rng(0)
    specs = [space.sample(rng) for _ in range(args.n)]
    keys = {str(k) for spec in specs for k in decompose(spec)}
    with tempfile.TemporaryDirectory() as tmp:
        build_table(sorted(keys), Path(tmp), measure=lambda chunk: [Timing(1.0, 0.0, 1) for _ in chunk],
                    progress=False)
        Calibration(1.05, 0.3).save(Path(tmp))
        model = get_latency_model("host-cpu", table_dir=Path(tmp), measure_missing=False)
        start = time.perf_counter()
        model.predict_many(specs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        model.predict_many(specs)
        warm = time.perf_counter() - start
    print(f"{args.space}: {args.n} archs, {len(keys)} distinct keys: predict_many {cold:.3f} s "
          f"(first call, fills the layer cache), {warm:.3f} s (cached); target < 1 s")


if __name__ == "__main__":
    main()
