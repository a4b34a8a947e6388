"""The NetAdapt loop end to end: target reached, resume after a kill, unreachable target, Ray, CLI."""

import pandas as pd
import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import run
from nas.errors import NasError
from nas.model import build_model
from nas.netadapt import LatencyTarget, Settings, TargetUnreachable, netadapt
from nas.netadapt import loop as loop_module
from nas.netadapt.__main__ import main
from nas.netadapt.finetune import Job, load_checkpoint, run_jobs, save_checkpoint
from nas.netadapt.units import units, with_width
from nas.train.proxy import ProxyTraining
from netadapt_toys import toy_latency

SMALL = ArchSpec.from_string(
    "stem_k3_s2_c16_hswish ds_k3_s1_e16_c16_relu_skip ir_k3_s2_e48_c24_hse0.25_hswish "
    "ir_k5_s1_e72_c24_relu_skip conv_k3_s2_e32_c32_se0.25_relu ir_k3_s1_e96_c40_hse0.25_hswish "
    "head_c64_h80_hswish_d0.2_n10"
)
TINY = ProxyTraining(synthetic_train=48, synthetic_val=16, batch_size=16, bn_batches=1)


def _check_run(out, seed, delta_ms, target_ms):
    """Target met, every step cut >= delta, residual groups intact, final checkpoint loads strictly."""
    history = pd.read_csv(out / "history.csv")
    assert history["iteration"].tolist() == list(range(len(history)))
    assert history["latency_ms"].iloc[-1] <= target_ms < history["latency_ms"].iloc[-2]
    cuts = -history["latency_ms"].diff().iloc[1:]
    assert (cuts >= history["step_ms"].iloc[1:] - 1e-9).all() and (cuts == history["cut_ms"].iloc[1:]).all()
    assert (history["step_ms"].iloc[1:] >= delta_ms / 2 ** loop_module.STEP_HALVINGS - 1e-9).all()
    final = ArchSpec.from_json((out / "final_spec.json").read_text())
    assert final.to_string() == history["spec"].iloc[-1]
    assert len(final.layers) == len(seed.layers) and [l.op for l in final.layers] == [l.op for l in seed.layers]
    widths = {f"out[{i}]": layer.out for i, layer in enumerate(final.layers)} | {"stem": final.stem.channels}
    for i, layer in enumerate(final.layers):
        assert layer.residual == seed.layers[i].residual
        if layer.residual:
            assert layer.out == widths["stem" if i == 0 else f"out[{i - 1}]"]
    width_columns = [c for c in history.columns if c.startswith(("stem", "exp[", "out[", "head", "hidden"))]
    changed = history.iloc[-1][width_columns] != history.iloc[0][width_columns]
    assert changed.any() and (history.iloc[-1][width_columns][changed] % 8 == 0).all()
    checkpoint = torch.load(out / "final.pt", weights_only=True)
    build_model(final).load_state_dict(checkpoint["state_dict"], strict=True)
    assert (out / "history.png").stat().st_size > 1000
    proposals = pd.read_csv(out / "proposals.csv")
    assert proposals.groupby("iteration")["selected"].sum().eq(1).all()
    return history, final


@pytest.mark.parametrize("arch", ["mnasnet_a1", "mobilenet_v3_large"])
def test_cli_reaches_a_pixel_target_from_the_published_seeds(arch, tmp_path, capsys):
    from nas.latency.predict import get_latency_model

    out = tmp_path / arch
    argv = ["--arch", arch, "--target", "pixel-cpu", "--latency-ratio", "0.8", "--delta-ratio", "0.08",
            "--short-term-steps", "2", "--pretrain-steps", "1", "--max-proposals", "2", "--batch-size", "8",
            "--synthetic-train", "48", "--synthetic-val", "16", "--bn-batches", "1", "--workers", "1",
            "--quiet", "--out", str(out)]
    assert run(main, argv) == 0
    seed = zoo.get(arch, num_classes=10)
    model = get_latency_model("pixel-cpu")
    seed_ms = model.predict(seed, 224).ms
    history, final = _check_run(out, seed, 0.08 * seed_ms, 0.8 * seed_ms)
    assert model.predict(final, 224).ms == pytest.approx(history["latency_ms"].iloc[-1])
    assert "final network" in capsys.readouterr().out


class Killed(BaseException):
    """Stands in for the process dying: nothing in the loop may catch it."""


@pytest.mark.slow
def test_resume_after_a_kill_mid_iteration_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    settings = Settings(delta_ratio=0.1, short_term_steps=2, pretrain_steps=2, max_proposals=3)
    target = LatencyTarget(ratio=0.75)
    reference = netadapt(SMALL, target=target, latency=toy_latency, training=TINY, settings=settings,
                         out=tmp_path / "ref", progress=False)
    assert len(reference.history) >= 3

    calls, killed = [], []
    real_run_jobs = loop_module.run_jobs

    def killed_in_iteration_2(jobs, config, **kwargs):
        calls.append([job.name for job in jobs])
        if "iter_002" in str(jobs[0].result) and not killed:
            killed.append(True)
            real_run_jobs(jobs[:1], config, **kwargs)  # one proposal finishes, then the process dies
            raise Killed
        return real_run_jobs(jobs, config, **kwargs)

    monkeypatch.setattr(loop_module, "run_jobs", killed_in_iteration_2)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        netadapt(SMALL, target=target, latency=toy_latency, training=TINY, settings=settings, out=out,
                 progress=False)
    assert pd.read_csv(out / "history.csv")["iteration"].tolist() == [0, 1]
    assert not (out / "final.pt").exists()

    calls.clear()
    resumed = netadapt(SMALL, target=target, latency=toy_latency, training=TINY, settings=settings, out=out,
                       progress=False)
    assert len(calls[0]) == 2  # iteration 2 resumed: its finished proposal was reused
    assert resumed.spec == reference.spec and resumed.accuracy == reference.accuracy
    assert pd.read_csv(out / "history.csv").equals(pd.read_csv(tmp_path / "ref" / "history.csv"))
    assert not (out / "work" / "iter_002").exists()

    calls.clear()  # a finished run reruns as a no-op
    assert netadapt(SMALL, target=target, latency=toy_latency, training=TINY, settings=settings, out=out,
                    progress=False).spec == reference.spec and not calls
    with pytest.raises(NasError, match="other settings"):
        netadapt(SMALL, target=target, latency=toy_latency, training=TINY, out=out, progress=False,
                 settings=Settings(delta_ratio=0.1, short_term_steps=3, pretrain_steps=2))
    (out / "history.csv").write_text("garbage\n\x00\x01\n")
    with pytest.raises(NasError, match="corrupt table"):
        netadapt(SMALL, target=target, latency=toy_latency, training=TINY, settings=settings, out=out,
                 progress=False)


def test_the_step_halves_when_no_unit_can_cut_the_scheduled_one(tmp_path):
    """No single unit of SMALL can cut 40 % of its latency (28 % at most): the run goes on at 20 %."""
    seed_ms = toy_latency(SMALL)
    settings = Settings(delta_ratio=0.4, short_term_steps=1, pretrain_steps=1, max_proposals=2)
    result = netadapt(SMALL, target=LatencyTarget(ratio=0.6), latency=toy_latency, training=TINY, settings=settings,
                      out=tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert result.reached and result.latency_ms <= 0.6 * seed_ms
    steps = history["step_ms"].iloc[1:] / (0.4 * seed_ms)
    assert steps.iloc[0] == pytest.approx(0.5)
    assert set(steps.round(9)) <= {0.5, 0.25, 0.125}
    assert (history["cut_ms"].iloc[1:] >= history["step_ms"].iloc[1:] - 1e-9).all()


def test_an_unreachable_target_stops_with_a_message_and_keeps_the_best_network(tmp_path):
    settings = Settings(delta_ratio=0.25, short_term_steps=1, max_proposals=2, long_term_steps=2)
    with pytest.raises(TargetUnreachable, match="unreachable.*best network found") as error:
        netadapt(SMALL, target=LatencyTarget(ms=1e-3), latency=toy_latency, training=TINY, settings=settings,
                 out=tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) >= 2 and history["latency_ms"].is_monotonic_decreasing
    final = ArchSpec.from_json((tmp_path / "final_spec.json").read_text())
    assert final.to_string() == history["spec"].iloc[-1]
    assert toy_latency(final) == pytest.approx(history["latency_ms"].min())
    kept = load_checkpoint(tmp_path / "final.pt")
    build_model(final).load_state_dict(kept["state_dict"], strict=True)
    last = load_checkpoint(tmp_path / "checkpoints" / f"iter_{len(history) - 1:03d}.pt")
    assert kept["long_term_steps"] == 2 and last["spec"] == final
    assert not all(torch.equal(kept["state_dict"][k], v) for k, v in last["state_dict"].items())  # fine-tuned
    assert (tmp_path / "history.png").exists()
    assert str(tmp_path / "final_spec.json") in str(error.value)
    carried = error.value.result  # the caller needs no second read of the files
    assert not carried.reached and carried.spec == final and carried.accuracy == kept["accuracy"]
    assert [row.to_row() for row in carried.history] == history.to_dict("records")


def proposal_jobs(tmp_path, *wheres: str) -> dict[str, list[Job]]:
    """Two shrunk children of SMALL fine-tuned from one saved parent, a job list per place to run them."""
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, SMALL, build_model(SMALL).state_dict(), accuracy=0.0)
    children = [with_width(SMALL, unit, 8) for unit in units(SMALL)[1:3]]
    return {where: [Job(f"p{i}", child, parent, tmp_path / f"{where}{i}.pt", 2, i) for i, child in enumerate(children)]
            for where in wheres}


def assert_same_results(first, second) -> None:
    """Same accuracies, and the saved checkpoints hold identical weights."""
    assert [r.accuracy for r in second] == [r.accuracy for r in first]
    for a, b in zip(first, second):
        state_a, state_b = load_checkpoint(a.path)["state_dict"], load_checkpoint(b.path)["state_dict"]
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.slow
def test_ray_workers_match_the_in_process_path_and_report_a_failed_worker(tmp_path):
    ray = pytest.importorskip("ray")
    jobs = proposal_jobs(tmp_path, "local", "ray")
    local = run_jobs(jobs["local"], TINY, workers=1, progress=False)
    try:
        remote = run_jobs(jobs["ray"], TINY, workers=2, progress=False)
        assert_same_results(local, remote)
        other_blocks = ArchSpec.from_string(SMALL.to_string().replace("conv_k3_s2_e32_c32", "ir_k3_s2_e32_c32"))
        broken = Job("exp[2]", other_blocks, tmp_path / "parent.pt", tmp_path / "x.pt", 1, 0)
        with pytest.raises(NasError, match=r"proposal exp\[2\]: fine-tuning worker failed: .*cannot inherit"):
            run_jobs([jobs["ray"][0], broken], TINY, workers=2, progress=False)
        assert not (tmp_path / "x.pt").exists()
    finally:
        ray.shutdown()


def test_cli_bad_input_is_one_error_line(tmp_path, capsys):
    base = ["--target", "pixel-cpu", "--out", str(tmp_path), "--quiet"]
    assert run(main, ["--arch", "no_such_net", "--latency-ratio", "0.8", *base]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        line for line in ["error: unknown architecture 'no_such_net'; known: " + ", ".join(zoo.names())]]
    assert run(main, ["--arch", "mnasnet_a1", "--latency-ratio", "1.5", *base]) == 2
    assert capsys.readouterr().err.strip() == "error: the latency ratio must lie in (0, 1], got 1.5"
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run(main, ["--arch", "mnasnet_a1", "--latency-ratio", "0.8", "--checkpoint", str(bad), *base]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: unreadable checkpoint")
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--latency-ratio" in capsys.readouterr().out
