"""Ray addresses: parsed, probed before Ray is asked, and a real cluster started by ``ray start``."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from nas.cluster import endpoint, probe
from nas.errors import NasError
from nas.latency.predict import get_latency_model
from nas.netadapt.finetune import run_jobs
from nas.search.objectives import Objective
from nas.search.runner import SearchConfig, run_search
from test_netadapt_run import TINY as FINE_TUNE
from test_netadapt_run import assert_same_results, proposal_jobs
from test_search import TINY, _silent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address,expected", [
    ("auto", None), ("local", None), ("10.0.0.5:6379", ("10.0.0.5", 6379)),
    ("ray://head", ("head", 10001)), ("ray://head:20000", ("head", 20000)), ("[::1]:6379", ("::1", 6379)),
])
def test_endpoint_of_each_address_form(address, expected):
    assert endpoint(address) == expected


@pytest.mark.parametrize("address", ["head", "head:port", ":6379", "ray://"])
def test_malformed_address_is_refused(address):
    with pytest.raises(NasError, match="malformed Ray address"):
        endpoint(address)


def test_probe_of_a_closed_port_fails_fast_with_the_reason():
    start = time.monotonic()
    with pytest.raises(NasError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+: Connection refused"):
        probe(f"127.0.0.1:{_free_port()}")
    assert time.monotonic() - start < 5  # Ray itself would retry this address for minutes


@pytest.fixture(scope="module")
def ray_head():
    """A one-node cluster as ``ray start --head`` makes it; ``--block`` ties its processes to ours.

    Without token authentication, which ``ray start`` would turn on where a local Ray has left a
    token (a client by address then needs ``RAY_AUTH_MODE=token``, Ray's policy, not ours).
    """
    port = _free_port()
    # Its own temp dir: ``ray start`` records its address in the temp dir's ray_current_cluster,
    # which a bare ray.init() on this machine would otherwise try to join after the test.
    temp_dir = tempfile.mkdtemp(prefix="ray-test-")
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block",
                             f"--temp-dir={temp_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            probe(address, timeout=1)
            break
        except NasError:
            if head.poll() is not None or time.monotonic() > deadline:
                head.kill()
                pytest.fail("ray start --head did not come up within 60 s")
            time.sleep(0.5)
    yield address
    head.terminate()
    head.wait(60)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _tiny_search(out, **changes):
    config = SearchConfig(out=out, objective=Objective(target_ms=10.0), controller="random", trials=2, workers=2,
                          proxy=TINY, **changes)
    return run_search(config, latency_model=get_latency_model("pixel-cpu"), progress_factory=_silent)


@pytest.mark.slow
def test_search_runs_its_trials_on_a_cluster_at_an_address(tmp_path, ray_head):
    summary = _tiny_search(tmp_path, ray_address=ray_head)
    table = pd.read_csv(tmp_path / "trials.csv")
    assert summary.complete and sorted(table["trial_id"]) == [0, 1]
    assert (table["status"] == "ok").all()
    assert (tmp_path / "ray").is_dir()  # Tune's experiment folder: the trials went through Ray


@pytest.mark.slow
def test_local_search_starts_its_own_ray_beside_a_running_cluster(tmp_path, ray_head, monkeypatch):
    # A bare ray.init() would join the cluster it finds (RAY_ADDRESS, or the one ``ray start``
    # last recorded on this machine) and refuse our CPU count.
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    summary = _tiny_search(tmp_path)
    assert summary.complete and (pd.read_csv(tmp_path / "trials.csv")["status"] == "ok").all()


@pytest.mark.slow
def test_netadapt_fine_tunes_on_a_cluster_as_it_does_in_process(tmp_path, ray_head):
    import ray

    jobs = proposal_jobs(tmp_path, "here", "cluster")
    here = run_jobs(jobs["here"], FINE_TUNE, progress=False)
    try:
        remote = run_jobs(jobs["cluster"], FINE_TUNE, ray_address=ray_head, progress=False)
        assert ray.get_runtime_context().gcs_address.endswith(ray_head.rpartition(":")[2])  # joined, not local
    finally:
        ray.shutdown()
    assert_same_results(here, remote)  # the driver wrote the weights the workers sent back
