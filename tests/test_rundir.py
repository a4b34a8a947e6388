"""The run-directory module: atomic writes, claiming a directory with its settings, reading checkpoints."""

import json

import pandas as pd
import pytest
import torch

from nas import rundir
from nas.errors import NasError


class Unprintable:
    def __str__(self):
        raise ValueError("cannot print")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path):
    path = tmp_path / "state.pt"
    rundir.write_torch(path, {"step": 1})
    with pytest.raises(Exception):
        rundir.write_torch(path, {"step": 2, "unpicklable": lambda: None})
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert torch.load(path, weights_only=True) == {"step": 1}
    table = tmp_path / "rows.csv"
    rundir.write_table(table, [{"a": "old"}])
    with pytest.raises(ValueError, match="cannot print"):
        rundir.write_table(table, [{"a": "new"}] * 1000 + [{"a": Unprintable()}])  # fails half-way through
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "state.pt"]
    assert pd.read_csv(table).to_dict("records") == [{"a": "old"}]


def test_text_json_and_tables_are_written_whole(tmp_path):
    rundir.write_bytes(tmp_path / "state.bin", b"\x00\x01")
    assert (tmp_path / "state.bin").read_bytes() == b"\x00\x01"
    rundir.write_json(tmp_path / "a" / "done.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "done.json").read_text()) == {"x": [1, 2]}
    rows = [{"iteration": 0, "spec": "s"}, {"iteration": 1, "spec": "t"}]
    for name in ("rows.csv", "rows.parquet"):
        rundir.write_table(tmp_path / name, rows)
    assert pd.read_csv(tmp_path / "rows.csv").to_dict("records") == rows
    assert pd.read_parquet(tmp_path / "rows.parquet").to_dict("records") == rows
    assert rundir.read_table(tmp_path / "rows.csv", columns=("iteration",)) == rows
    assert rundir.read_table(tmp_path / "absent.csv") == []
    with pytest.raises(NasError, match="no column 'accuracy'"):
        rundir.read_table(tmp_path / "rows.csv", columns=("accuracy",))
    with pytest.raises(NasError, match=r"\.csv or \.parquet"):
        rundir.write_table(tmp_path / "rows.xlsx", rows)
    source = tmp_path / "rows.csv"
    rundir.copy_file(source, tmp_path / "copy" / "rows.csv")
    assert (tmp_path / "copy" / "rows.csv").read_bytes() == source.read_bytes()


def test_claim_refuses_a_changed_setting_and_accepts_the_allowed_fields(tmp_path):
    path = tmp_path / "run.json"
    settings = {"lr": 0.1, "training": {"batch_size": 32, "device": "cpu"}, "layers": (1, 2)}
    rundir.claim(path, settings, may_differ=("training.device",))
    rundir.claim(path, settings)  # the same settings (a tuple reads back as a list): accepted
    rundir.claim(path, {**settings, "training": {"batch_size": 32, "device": "cuda:1"}},
                 may_differ=("training.device",))
    rundir.claim(path, {**settings, "training": {"batch_size": 32}}, may_differ=("training.device",))
    with pytest.raises(NasError) as refused:
        rundir.claim(path, {**settings, "training": {"batch_size": 64, "device": "cpu"}},
                     may_differ=("training.device",))
    message = str(refused.value)
    assert "\n" not in message and "training.batch_size: 32 there, 64 now" in message
    with pytest.raises(NasError, match="training.device: 'cpu' there, 'cuda' now"):
        rundir.claim(path, {**settings, "training": {"batch_size": 32, "device": "cuda"}})
    with pytest.raises(NasError, match="extra: None there, 1 now"):
        rundir.claim(path, {**settings, "extra": 1})
    assert json.loads(path.read_text())["training"]["device"] == "cpu"  # the first run's record stays
    path.write_text("{not json")
    with pytest.raises(NasError, match="corrupt settings file"):
        rundir.claim(path, settings)


def test_reading_a_corrupt_or_missing_checkpoint_is_one_line(tmp_path):
    good = tmp_path / "good.pt"
    rundir.write_torch(good, {"state_dict": {"w": torch.ones(64, 64)}})
    assert torch.equal(rundir.read_checkpoint(good)["state_dict"]["w"], torch.ones(64, 64))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (truncated, garbage):
        for weights_only in (True, False):
            with pytest.raises(NasError) as error:
                rundir.read_checkpoint(path, weights_only=weights_only)
            assert str(error.value).startswith(f"{path}: unreadable checkpoint (") and "\n" not in str(error.value)
    with pytest.raises(NasError, match="absent.pt: no such checkpoint"):
        rundir.read_checkpoint(tmp_path / "absent.pt")
