import importlib.util

import pytest
import torch

from nas.arch import ArchSpec
from nas.errors import NasError
from nas.model import build_model
from nas.train.export import export, export_onnx, export_torchscript
from bn_stats import randomise_bn

SMALL = ArchSpec.from_string(
    "stem_k3_s2_c8_hswish ir_k3_s1_e16_c8_hse0.25_relu_skip conv_k3_s2_e16_c16_se0.25_relu "
    "ds_k5_s1_e16_c16_relu6_skip ir_k3_s2_e48_c24_hswish head_c32_h48_hswish_d0.2_n5"
)


def _trained_like():
    """Non-trivial BN statistics and a large classifier, so a wrong fusion would show in the outputs."""
    model = randomise_bn(build_model(SMALL))
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.5)
    return model


def test_torchscript_round_trip_matches_eager(tmp_path):
    model = _trained_like()
    result = export_torchscript(model, tmp_path / "m.pt", resolution=32)
    assert result.max_abs_error <= 1e-4
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert not any("batch_norm" in str(n) for n in loaded.inlined_graph.nodes())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="export extra not installed")
def test_onnx_round_trip_matches_eager(tmp_path):
    import onnxruntime

    model = _trained_like()
    result = export_onnx(model, tmp_path / "m.onnx", resolution=32)
    assert result.max_abs_error <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)  # another batch size: the batch dimension is dynamic
    (got,) = session.run(None, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)


def test_unknown_format_is_an_error(tmp_path):
    with pytest.raises(NasError, match="unknown export format"):
        export(_trained_like(), tmp_path, formats=("tflite",))
