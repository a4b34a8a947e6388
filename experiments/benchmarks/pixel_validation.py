"""Print the pixel-cpu figures of every calibration: published runs, V3 ratios, effects, sources, speed.

    python experiments/benchmarks/pixel_validation.py [--out runs/pixel-validation]

Per calibration (``mobilenetv3-paper``, the default, and ``readme-2018``):

1. every published Pixel 1 row of that calibration's run, model beside the a*MAdds+b baseline,
   and the summary for the calibration and held-out sets, priced the way the product prices
   (that calibration's table, model for missing keys); the MobileNetV3 / -minimalistic ratios
   (:func:`nas.latency.pixel.validate.validate_published`, as ``python -m nas.latency validate
   --target pixel-cpu``);
2. the known effects: SE / no-SE ratio against nn-Meter Pixel 1, h-swish per element against a
   residual add (nn-Meter-derived model vs Note10, another phone), kernel 3 < 5 < 7, stride-2
   priced on its input; the h-swish estimate from parts of nn-Meter's table;
3. how each source compares with the model (their TFLite builds differ by up to 1.8x);
4. pricing speed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from nas import zoo
from nas.errors import NasError
from nas.latency.keys import LatencyKey, decompose
from nas.latency.pixel import fit, sources
from nas.latency.pixel.model import FEATURES, PixelCostModel
from nas.latency.pixel.validate import format_validation, validate_published


def effects(model: PixelCostModel) -> pd.DataFrame:
    rows = []
    measured = {m.key: m.ms for m in sources.nn_meter_blocks()}
    pairs = [(k, replace(k, se=0, se_hard=False)) for k in measured if k.se]
    pairs = [(a, b) for a, b in pairs if b in measured]
    rows.append({"effect": "SE / no-SE block (nn-Meter Pixel 1 pairs, median)",
                 "source": np.median([measured[a] / measured[b] for a, b in pairs]),
                 "model": np.median([model.price(a) / model.price(b) for a, b in pairs])})
    note10 = fit._fit_alone(sources.note10_blocks())
    hswish, add = FEATURES.index("hswish_mem"), FEATURES.index("eltwise_mem")
    rows.append({"effect": "h-swish / residual-add cost per element (source: Note10, not used)",
                 "source": note10[hswish] / note10[add],
                 "model": model.coefficients["hswish_mem"] / model.coefficients["eltwise_mem"]})
    block = LatencyKey("ir", 28, 40, 240, 40, 3, 1, act="relu", residual=True)
    k3, k5, k7 = (model.price(replace(block, kernel=k)) for k in (3, 5, 7))
    rows.append({"effect": "ir 28x40 e240: k5 / k3, k7 / k3", "source": np.nan,
                 "model": f"{k5 / k3:.3f}, {k7 / k3:.3f}"})
    s2, s1_in, s1_out = (model.price(replace(block, hw=hw, stride=s, residual=False))
                         for hw, s in ((56, 2), (56, 1), (28, 1)))
    rows.append({"effect": "stride-2 at 56 vs stride-1 at 56 / at 28", "source": np.nan,
                 "model": f"{s2:.3f} ms vs {s1_in:.3f} / {s1_out:.3f} ms"})
    return pd.DataFrame(rows)


def hswish_by_subset(model: PixelCostModel) -> pd.DataFrame:
    """The h-swish estimate of the fit (ms per million elements, on the model's scale) from parts of nn-Meter's
    table: how tightly the Pixel 1 blocks pin it, beside the Note10-derived value the model used before."""
    blocks = sources.nn_meter_blocks()
    parts = {"all (the fit)": lambda k: True, "kernel 3": lambda k: k.kernel == 3, "kernel 5": lambda k: k.kernel == 5,
             "stride 1": lambda k: k.stride == 1, "stride 2": lambda k: k.stride == 2, "no SE": lambda k: not k.se,
             "input <= 32 px": lambda k: k.hw <= 32, "input >= 56 px": lambda k: k.hw >= 56}
    rows = []
    for name, keep in parts.items():
        chosen = [m for m in blocks if keep(m.key)]
        try:
            estimate = fit.hswish_cost(model.vector, chosen)
        except NasError:  # this part shows no h-swish cost at all
            estimate = 0.0
        rows.append({"nn-meter rows": name, "n": len(chosen), "hswish_mem": estimate})
    note10 = fit._fit_alone(sources.note10_blocks())
    hswish, add = FEATURES.index("hswish_mem"), FEATURES.index("eltwise_mem")
    rows.append({"nn-meter rows": "(Note10 h-swish / ADD ratio x this model's ADD cost, the old rule)", "n": 273,
                 "hswish_mem": model.coefficients["eltwise_mem"] * note10[hswish] / note10[add]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/pixel-validation"))
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    for name, (rows, summary, ratio_rows) in validate_published(args.out).items():
        model = PixelCostModel.load(calibration=name)
        print(f"\n==== calibration {name} ====")
        print(format_validation(rows, summary, ratio_rows))
        held = rows[(rows["model"] == "mnasnet_a1") & (rows["set"] == "held-out")]
        if len(held) > 2:
            worst = held["error_pct"].abs().idxmax()
            rest = held.drop(worst)
            print(f"held-out mnasnet_a1 without its worst row ({held.loc[worst, 'width']} x "
                  f"{held.loc[worst, 'resolution']}): median {rest['error_pct'].abs().median():.2f} %, "
                  f"max {rest['error_pct'].abs().max():.2f} %")
        print("\n== known effects ==")
        print(effects(model).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\n== h-swish cost per element from parts of nn-Meter's Pixel 1 table ==")
        print(hswish_by_subset(model).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\n== sources vs model (ratio = source ms / model ms) ==")
        print(fit.source_agreement(model).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {args.out / name}/")
    keys = decompose(zoo.get("mnasnet_a1"), 224)
    start = time.perf_counter()
    for _ in range(200):
        model.price_many(keys)
    per_network = (time.perf_counter() - start) / 200
    print(f"\npricing: {per_network * 1e3:.2f} ms per network ({len(keys)} keys) with PixelCostModel.price_many")


if __name__ == "__main__":
    main()
