"""Latency keys, table files (round trip, corruption, metadata refusal) and the calibration maths."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from nas import zoo
from nas.arch import ArchSpec, HeadSpec, LayerSpec, StemSpec
from nas.errors import NasError
from nas.latency.calibrate import Calibration, accuracy, fit_calibration, spearman
from nas.latency.keys import decompose, parse_key
from nas.latency.table import LatencyTable, TableMeta, check_compatible


def _spec(*layers: LayerSpec) -> ArchSpec:
    return ArchSpec(StemSpec(16), layers, HeadSpec(64, num_classes=10))


def test_residual_and_se_give_distinct_keys():
    plain = LayerSpec("ir", 3, 1, 48, 16)
    variants = [plain, replace(plain, residual=True), replace(plain, se_ratio=0.25),
                replace(plain, se_ratio=0.25, se_style="v3"), replace(plain, act="hswish")]
    keys = [str(decompose(_spec(v))[1]) for v in variants]
    assert len(set(keys)) == len(keys)
    assert keys[1].endswith("_skip") and not keys[0].endswith("_skip")
    assert "_se0_" in keys[0] and "_se4_" in keys[2] and "_se16h_" in keys[3]
    for key in decompose(zoo.get("mobilenet_v3_large")):
        assert parse_key(str(key)) == key


def test_decompose_tracks_resolution_and_widths():
    keys = decompose(zoo.get("mobilenet_v3_small"), 224)
    assert [k.kind for k in (keys[0], keys[-1])] == ["stem", "head"]
    assert keys[0].hw == 224 and keys[1].hw == 112 and keys[-1].hw == 7
    assert all(a.cout == b.cin for a, b in zip(keys[1:-1], keys[2:-1]))


def _meta(**changes) -> TableMeta:
    base = TableMeta(target="host-cpu", device="cpu-x", torch_version="2.0", threads=1, protocol={"rounds": 3})
    return replace(base, **changes)


def _table() -> LatencyTable:
    keys = [str(k) for k in decompose(zoo.get("mobilenet_v3_small"))]
    rows = [{"key": k, "ms": 0.1 * (i + 1), "spread_ms": 0.01, "n": 5, "provenance": "measured"}
            for i, k in enumerate(dict.fromkeys(keys))]
    return LatencyTable.empty(_meta()).with_rows(rows)


def test_table_round_trip(tmp_path):
    table = _table()
    table.save(tmp_path)
    loaded = LatencyTable.load(tmp_path)
    assert loaded.meta == replace(table.meta, rows=len(table))
    assert loaded.as_dict() == pytest.approx(table.as_dict())
    key = table.frame["key"].iloc[2]
    assert key in loaded and loaded.ms(key) == pytest.approx(0.3)
    with pytest.raises(NasError, match="has no key 'ir_r9"):
        loaded.ms("ir_r9_i1_e1_o1_k3_s1_se0_relu")
    replaced = loaded.with_rows([{"key": key, "ms": 9.0, "spread_ms": 0.0, "n": 1, "provenance": "estimated"}])
    assert len(replaced) == len(loaded) and replaced.ms(key) == 9.0


@pytest.mark.parametrize("damage, message", [
    (lambda text: text.replace("measured", "guessed", 1), "provenance 'guessed'"),
    (lambda text: text.replace(",0.1,", ",nan,", 1), "ms = "),
    (lambda text: text.replace(",0.1,", ",-0.1,", 1), "not a finite number >= 0"),
    (lambda text: text.replace("stem_r224", "stem_x224", 1), "malformed key"),
    (lambda text: text.replace("spread_ms", "spread", 1), "columns"),
    (lambda text: "\n".join(text.splitlines()[:-2]) + "\n", "truncated"),
    (lambda text: text + text.splitlines()[1] + "\n", "appears twice"),
    (lambda text: "", "corrupt latency table"),
])
def test_corrupt_table_is_refused_with_the_file_and_problem(tmp_path, damage, message):
    _table().save(tmp_path)
    path = tmp_path / "table.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(NasError, match=message) as info:
        LatencyTable.load(tmp_path)
    assert "table.csv" in str(info.value) or "meta.json" in str(info.value)


def test_corrupt_or_missing_metadata(tmp_path):
    with pytest.raises(NasError, match="no latency table"):
        LatencyTable.load(tmp_path)
    _table().save(tmp_path)
    meta = tmp_path / "meta.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(NasError, match="meta.json"):
        LatencyTable.load(tmp_path)
    meta.write_text('{"target": "host-cpu", "device": "x", "rows": "many"}')
    with pytest.raises(NasError, match="rows must be a int"):
        LatencyTable.load(tmp_path)


def test_metadata_mismatch_is_refused_unless_forced():
    here = {"device": "cpu-y", "torch_version": "2.0", "threads": 1, "protocol": {"rounds": 3}}
    with pytest.raises(NasError, match="device 'cpu-x'.*--force"):
        check_compatible(_meta(), here, where="t")
    check_compatible(_meta(), here, where="t", force=True)
    check_compatible(_meta(), {**here, "device": "cpu-x"}, where="t")
    with pytest.raises(NasError, match="threads 1 .here: 4"):
        check_compatible(_meta(), {**here, "device": "cpu-x", "threads": 4}, where="t")
    with pytest.raises(NasError, match="protocol differs in rounds"):
        check_compatible(_meta(), {**here, "device": "cpu-x", "protocol": {"rounds": 9}}, where="t")
    fitted = _meta(kind="fitted", torch_version=None, threads=None)
    check_compatible(fitted, {**here, "device": "cpu-x", "torch_version": "9.9", "threads": 4}, where="t")


def test_calibration_fit_recovers_a_line_and_minimises_relative_error():
    sums = np.array([5.0, 10.0, 20.0, 40.0])
    cal = fit_calibration(sums, 1.2 * sums + 0.5)
    assert cal.scale == pytest.approx(1.2) and cal.offset == pytest.approx(0.5)
    assert cal.apply(10.0) == pytest.approx(12.5)
    assert fit_calibration([4.0], [6.0]) == Calibration(1.5, 0.0)
    with pytest.raises(NasError, match="scale"):
        fit_calibration([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    with pytest.raises(NasError):
        fit_calibration([1.0, float("nan")], [1.0, 2.0])


def test_calibration_file_round_trip(tmp_path):
    assert Calibration.load(tmp_path) is None
    Calibration(1.1, 0.2, ({"name": "x"},)).save(tmp_path)
    assert Calibration.load(tmp_path) == Calibration(1.1, 0.2)
    (tmp_path / "calibration.json").write_text("{")
    with pytest.raises(NasError, match="corrupt calibration"):
        Calibration.load(tmp_path)


def test_accuracy_report():
    report = accuracy([9.0, 21.0, 35.0, 41.0], [10.0, 20.0, 30.0, 40.0])
    assert report["within"] == 0.75
    assert report["max_abs_rel_error"] == pytest.approx(1 / 6)
    assert report["median_abs_rel_error"] == pytest.approx(0.075)
    assert report["spearman"] == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(pd.Series([1, 1, 2]).corr(pd.Series([1, 2, 3]),
                                                                                      method="spearman"))
