"""Searches sharing one PostgreSQL database: each run owns its study, kills resume, collisions are refused.

A throwaway PostgreSQL server is started once for the session (``initdb`` + ``pg_ctl`` on a free
localhost port, as an unprivileged user when the tests run as root, since ``initdb`` refuses root);
every test gets a database of its own in it.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
from test_search import ROOT, TINY_ARGS, _exported_ok, _silent, config

from nas.cli import run
from nas.errors import NasError
from nas.latency.predict import get_latency_model
from nas.search.__main__ import main
from nas.search.runner import run_search


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """The URL of a PostgreSQL server that lives as long as the test session."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH")
    root = Path(tempfile.mkdtemp(prefix="nas-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and runuser is missing to start PostgreSQL as another user")
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "nas", "--auth=trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://nas@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(postgres):
    """A fresh database on the session's server."""
    import psycopg

    name = f"search_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{postgres}/{name}"


def _command(out: Path, storage: str, controller: str, trials: int) -> list[str]:
    return [sys.executable, "-m", "nas.search", "--target", "pixel-cpu", "--controller", controller,
            "--trials", str(trials), "--workers", "0", "--storage", storage, "--out", str(out), *TINY_ARGS]


def test_concurrent_searches_on_one_database_stay_apart_and_a_killed_one_resumes(tmp_path, database):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first, second = tmp_path / "a" / "first", tmp_path / "b" / "second"
    killed = subprocess.Popen(_command(first, database, "rl", 4), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    beside = subprocess.Popen(_command(second, database, "tpe", 2), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while _exported_ok(first / "trials.csv") < 2:
        assert killed.poll() is None, "the search ended before it could be interrupted"
        assert time.monotonic() < deadline, "no trial finished within 90 s"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    kept = pd.read_csv(first / "trials.csv").query("status == 'ok'").set_index("trial_id")
    assert beside.wait(timeout=120) == 0, beside.stderr.read()
    resumed = subprocess.run(_command(first, database, "rl", 4), cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr

    tables = {name: pd.read_csv(tmp_path / folder / name / "trials.csv")
              for folder, name in (("a", "first"), ("b", "second"))}
    run_ids = {name: json.loads((tmp_path / folder / name / "config.json").read_text())["run_id"]
               for folder, name in (("a", "first"), ("b", "second"))}
    assert run_ids["first"] != run_ids["second"]
    for name, controller, trials in (("first", "rl", 4), ("second", "tpe", 2)):
        table = tables[name]
        assert sorted(table["trial_id"]) == list(range(trials)) and (table["status"] == "ok").all()
        assert set(table["controller"]) == {controller} and set(table["run_id"]) == {run_ids[name]}
        assert set(table["seed"]) == {0}
    after = tables["first"].set_index("trial_id")
    assert after.loc[kept.index, "accuracy"].tolist() == kept["accuracy"].tolist()
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage=database)}
    assert {name: s.n_trials for name, s in studies.items()} == {"nas.search:first": 4, "nas.search:second": 2}
    assert studies["nas.search:first"].user_attrs["run_id"] == run_ids["first"]


def test_a_run_whose_study_name_is_taken_is_refused_in_one_line(tmp_path, database, capsys):
    pixel = get_latency_model("pixel-cpu")
    first = config(tmp_path / "a" / "run", storage=database, trials=1)
    run_search(first, latency_model=pixel, progress_factory=_silent)
    run_id = json.loads((tmp_path / "a" / "run" / "config.json").read_text())["run_id"]

    other = tmp_path / "b" / "run"  # another folder of the same name, another controller
    code = run(main, ["--out", str(other), "--controller", "tpe", "--storage", database, "--workers", "0", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and not err[-1].startswith("error: error")
    assert (f"study 'nas.search:run' in {database} belongs to run {run_id} of {tmp_path / 'a' / 'run'}, "
            "controller random; this run (controller tpe) needs its own") in err[-1]
    assert not (other / "config.json").exists()
    with pytest.raises(NasError, match=f"belongs to run {run_id}"):  # even with the very same settings
        run_search(replace(first, out=other), latency_model=pixel, progress_factory=_silent)

    # The study, not the folder, holds the settings: a copied config.json cannot change them.
    copied = tmp_path / "c" / "run"
    copied.mkdir(parents=True)
    saved = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    saved["fixed"]["controller"] = "tpe"
    (copied / "config.json").write_text(json.dumps(saved))
    with pytest.raises(NasError, match="study 'nas.search:run' in .* was started with other settings "
                                       r"\(controller: 'random' there, 'tpe' now\)"):
        run_search(replace(first, out=copied, controller="tpe"), latency_model=pixel, progress_factory=_silent)

    moved = tmp_path / "d" / "run"  # a run resumes wherever its folder is now
    shutil.move(tmp_path / "a" / "run", moved)
    summary = run_search(replace(first, out=moved, trials=2), latency_model=pixel, progress_factory=_silent)
    assert summary.complete and [r.run_id for r in summary.records] == [run_id, run_id]
    [study] = optuna.get_all_study_summaries(storage=database)
    assert study.n_trials == 2


@pytest.mark.parametrize("url,module,install", [
    ("postgresql+psycopg2://nas@127.0.0.1:1/db", "psycopg2", "pip install psycopg2-binary"),
    ("postgresql://nas:secret@127.0.0.1:1/db", "psycopg", "pip install 'latency-nas[postgres]'"),
])
def test_a_missing_database_driver_says_what_to_install(tmp_path, monkeypatch, url, module, install):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(NasError) as caught:
        run_search(config(tmp_path, storage=url), latency_model=get_latency_model("pixel-cpu"),
                   progress_factory=_silent)
    message = str(caught.value)
    assert f"the database driver {module!r}" in message and install in message
    assert "secret" not in message and "\n" not in message
