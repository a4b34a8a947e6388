"""The weight-sharing supernet: slicing equals stand-alone children, membership, reordering, resume, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.supernet.__main__ import main
from nas.supernet import evaluator as evaluator_module
from nas.supernet.evaluator import SupernetEvaluator, open_evaluator
from nas.supernet.network import NotAChildError, Supernet
from nas.supernet.sampling import extreme_child, random_child, step_children
from nas.supernet.training import (CHECKPOINT, METRICS, SupernetSettings, backward_children, load_supernet,
                                   soft_cross_entropy, train_supernet)
from search_spaces import get_space

V3_CHILDREN = ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_075", "mobilenet_v3_small_075",
               "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic"]
TINY = dict(resolution=8, synthetic_train=64, synthetic_val=32, batch_size=32, bn_batches=1, eval_batch_size=32)


def _randomised(space_name: str, num_classes: int = 10) -> Supernet:
    """A supernet with random weights and BatchNorm statistics, so every slice matters."""
    torch.manual_seed(0)
    net = Supernet(get_space(space_name, num_classes=num_classes))
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("running_mean", "bn.bias", "bn.weight")):
                tensor.uniform_(-0.5, 1.0)
    return net.eval()


@pytest.fixture(scope="module")
def v3_net() -> Supernet:
    return _randomised("mobilenetv3", num_classes=1000)


def _assert_same_as_standalone(net: Supernet, spec: ArchSpec, resolution: int = 32) -> None:
    child = build_model(spec)
    child.load_state_dict(net.child_state(spec), strict=True)
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sliced, standalone = net(x, spec), child.eval()(x)
    assert torch.allclose(sliced, standalone, atol=1e-5), spec.to_string()
    assert sliced.std() > 0


@pytest.mark.parametrize("space_name", ["mnasnet", "mobilenetv3"])
def test_random_children_equal_their_standalone_networks(space_name):
    net = _randomised(space_name)
    rng = np.random.default_rng(3)
    for _ in range(4):
        _assert_same_as_standalone(net, random_child(net.space, rng))


@pytest.mark.parametrize("name", V3_CHILDREN)
def test_zoo_v3_networks_are_children_that_run_as_slices(v3_net, name):
    spec = zoo.get(name)
    assert v3_net.why_not(spec) is None
    _assert_same_as_standalone(v3_net, spec)


def test_membership_says_why_not():
    net = Supernet(get_space("mnasnet", num_classes=1000))
    assert net.contains(zoo.get("mnasnet_a1")) and net.contains(zoo.get("mnasnet_b1"))
    assert "classes" in net.why_not(zoo.get("mnasnet_a1", num_classes=10))
    too_wide = zoo.get("mnasnet_a1").with_layer(2, exp=1000)
    assert "exceeds the supernet's" in net.why_not(too_wide)
    with pytest.raises(NotAChildError):
        net.extract(too_wide)


def test_v3_050_networks_are_outside_the_space(v3_net):
    assert "stem.channels 8" in v3_net.why_not(zoo.get("mobilenet_v3_small_050"))


@pytest.mark.parametrize("space_name", ["mnasnet", "mobilenetv3-shared"])
def test_channel_groups_cover_every_channel_dimension_with_one_width(space_name):
    net = Supernet(get_space(space_name, num_classes=10))
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    widths, covered = {}, set()
    for axis in net.axes():
        widths.setdefault(axis.group, set()).add(tensors[axis.path].shape[axis.dim])
        covered.add((axis.path, axis.dim))
    assert all(len(sizes) == 1 for sizes in widths.values())  # a group is one set of channels everywhere
    for path, tensor in tensors.items():  # every channel dimension is cut, but kernels, RGB and classes
        for dim, size in enumerate(tensor.shape):
            kernel_or_depthwise = dim >= 2 or (dim == 1 and size == 1 and tensor.dim() == 4)
            rgb, classes = path.endswith("stem.conv.weight") and dim == 1, "classifier" in path and dim == 0
            assert (path, dim) in covered or kernel_or_depthwise or rgb or classes, (path, dim)


def test_reorder_keeps_full_width_children_and_sorts_importance():
    net = _randomised("mnasnet")
    space = net.space
    rng = np.random.default_rng(0)
    largest = extreme_child(space, rng, largest=True)
    widest = [largest] + [space.decode([choice.options.index(op) if choice.name.endswith(".op") else index
                                        for choice, index in zip(space.choices(), space.encode(largest))])
                          for op in ("conv", "ds")]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = [net(x, spec) for spec in widest]
        stem_before = net.trunks["mnasnet"].stem.conv.weight.clone()
        net.reorder_channels()
        after = [net(x, spec) for spec in widest]
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-4)
    assert not torch.equal(net.trunks["mnasnet"].stem.conv.weight, stem_before)
    sorted_once = {k: v.clone() for k, v in net.state_dict().items()}
    net.reorder_channels()  # already sorted: nothing moves
    assert all(torch.equal(sorted_once[k], v) for k, v in net.state_dict().items())
    _assert_same_as_standalone(net, random_child(space, rng))


def test_training_one_child_in_the_supernet_is_training_it_standalone():
    net = _randomised("mobilenetv3").train()
    spec = zoo.get("mobilenet_v3_small", num_classes=10)
    child = build_model(spec).train()
    child.load_state_dict(net.child_state(spec))
    batches = [(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))) for _ in range(3)]
    losses = []
    for model, forward in ((child, child), (net, lambda x: net(x, spec))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(0)  # the same dropout masks
        run = []
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.append(loss.item())
        losses.append(run)
    assert np.allclose(losses[0], losses[1], atol=1e-4) and losses[0][0] != losses[0][-1]
    trained = net.child_state(spec)  # the supernet does not count batches (BN momentum is fixed)
    assert all(torch.allclose(trained[k], v, atol=1e-4) for k, v in child.state_dict().items()
               if not k.endswith("num_batches_tracked"))


def test_sandwich_step_runs_largest_smallest_and_random_children():
    space = get_space("mobilenetv3", num_classes=10)
    children = step_children(space, np.random.default_rng(0), rule="sandwich", random=2)
    assert len(children) == 4
    sizes = [sum(layer.exp * layer.out for layer in spec.layers) for spec in children]
    assert sizes[0] == max(sizes) and sizes[1] == min(sizes)
    assert len(step_children(space, np.random.default_rng(0), rule="uniform")) == 1


def test_a_sandwich_step_averages_its_childrens_gradients():
    net = _randomised("mobilenetv3-small-shared").train()
    children = step_children(net.space, np.random.default_rng(0), rule="sandwich", random=1)
    inputs, targets = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)  # the same dropout masks in both passes
    loss = backward_children(net, children, inputs, targets, torch.nn.CrossEntropyLoss())
    averaged = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    logits = net(inputs, children[0])
    teacher = logits.detach()
    expected_loss = torch.nn.functional.cross_entropy(logits, targets)
    expected_loss.backward()
    for child in children[1:]:
        soft_cross_entropy(net(inputs, child), teacher).backward()
    summed = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
    assert summed.keys() == averaged.keys()
    assert torch.isclose(loss, expected_loss.detach())
    for name, grad in summed.items():
        torch.testing.assert_close(averaged[name], grad / len(children), msg=name)


def test_training_resumes_bit_identically(tmp_path):
    settings = SupernetSettings(space="mnasnet", epochs=2, rule="uniform", **TINY)
    whole = train_supernet(settings, tmp_path / "whole", progress=False)
    train_supernet(settings, tmp_path / "split", progress=False, stop_after=1)
    resumed = train_supernet(settings, tmp_path / "split", progress=False, resume=True)
    a, b = whole.supernet.state_dict(), resumed.supernet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.history.drop(columns="seconds").equals(resumed.history.drop(columns="seconds"))
    assert list(resumed.history["epoch"]) == [1, 2]
    checkpoint = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=False)  # as an older layout wrote it
    checkpoint["model"] = {k.replace(".ops.", "."): v for k, v in checkpoint["model"].items()}
    torch.save(checkpoint, tmp_path / "split" / CHECKPOINT)
    for load in (lambda: load_supernet(tmp_path / "split"),
                 lambda: train_supernet(settings, tmp_path / "split", progress=False, resume=True)):
        with pytest.raises(NasError, match=r"supernet.pt: its weights do not fit this version's supernet \(trunks"):
            load()


def test_sandwich_training_smoke_and_cli(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sn"
    assert main(["train", "--space", "mobilenetv3", "--rule", "sandwich", "--sandwich-random", "1", "--epochs", "1",
                 "--train-resolution", "8", "--synthetic-train", "64", "--synthetic-val", "32", "--batch-size", "32",
                 "--bn-batches", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert (out / CHECKPOINT).is_file() and (out / METRICS).is_file()
    evaluator = SupernetEvaluator.load(out)
    assert open_evaluator(str(out)) is open_evaluator(str(out))
    score = evaluator.evaluate(zoo.get("mobilenet_v3_small"))
    assert 0 <= score.accuracy <= 1 and np.isfinite(score.val_loss)
    assert evaluator.evaluate(zoo.get("mobilenet_v3_small")).accuracy == score.accuracy  # deterministic
    assert isinstance(evaluator._held_out, list)  # decoded once: it fits in HELD_OUT_BYTES
    streamed = SupernetEvaluator.load(out)
    monkeypatch.setattr(evaluator_module, "HELD_OUT_BYTES", 0)
    assert not isinstance(streamed._held_out, list)  # too big: read from the files for every child
    assert streamed.evaluate(zoo.get("mobilenet_v3_small")).accuracy == score.accuracy
    csv = tmp_path / "children.csv"
    assert main(["evaluate", "--supernet", str(out), "mobilenet_v3_small", "--sample", "1", "--out", str(csv)]) == 0
    assert len(csv.read_text().splitlines()) == 3
    assert main(["extract", "--supernet", str(out), "mobilenet_v3_small", "--out", str(tmp_path / "child")]) == 0
    saved = torch.load(tmp_path / "child" / "checkpoint.pt", weights_only=True)
    model = build_model(ArchSpec.from_json(saved["spec"]))
    model.load_state_dict(saved["model"], strict=True)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from nas.cli import run

    assert run(main, ["evaluate", "--supernet", str(tmp_path), "mobilenet_v3_small"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a supernet run directory" in err and err.count("\n") == 1


def test_cuda_training_when_a_gpu_exists(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    settings = SupernetSettings(space="mnasnet", epochs=1, device="cuda", **TINY)
    run = train_supernet(settings, tmp_path, progress=False)
    assert np.isfinite(run.history["train_loss"]).all()
