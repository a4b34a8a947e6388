import subprocess
import sys

import pytest
import torch

from nas import zoo
from nas.arch import ArchSpec
from nas.model import build_model, fuse_bn
from bn_stats import randomise_bn

SMALL = ArchSpec.from_string(
    "stem_k3_s2_c8_hswish ir_k3_s1_e16_c8_hse0.25_relu_skip conv_k3_s2_e16_c16_se0.25_relu "
    "ds_k5_s1_e16_c16_relu6_skip ir_k7_s2_e48_c24_hswish head_c32_h48_hswish_d0.2_n5"
)


def test_bn_fusion_keeps_outputs_and_removes_bn():
    model = randomise_bn(build_model(zoo.get("mobilenet_v3_small", num_classes=10)))
    x = torch.randn(2, 3, 96, 96)
    fused = fuse_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_channels_last_matches_contiguous():
    model = randomise_bn(build_model(SMALL))
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    cl = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(x.to(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-5)


def test_output_stride_dilates_instead_of_striding():
    spec = zoo.get("mobilenet_v3_small", num_classes=3)
    feats = {os: build_model(spec, output_stride=os).forward_features(torch.randn(1, 3, 64, 64)).shape[-1]
             for os in (8, 16, 32)}
    assert feats == {8: 8, 16: 4, 32: 2}


def test_every_op_appears_in_the_small_net():
    ops = {layer.op for layer in SMALL.layers}
    assert ops == {"ir", "ds", "conv"}
    out = build_model(SMALL)(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 5)


def test_torch_compile_matches_eager():
    model = randomise_bn(build_model(SMALL))
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    model = randomise_bn(build_model(SMALL))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.cuda()(x.cuda()).cpu(), model.cpu()(x), atol=1e-4, rtol=1e-4)


def test_show_cli_prints_params_as_json():
    out = subprocess.run([sys.executable, "-m", "nas.arch", "show", "mobilenet_v3_large", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert '"params": 5483032' in out


def test_show_cli_bad_input_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "nas.arch", "show", "mobilenet_v9"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: unknown architecture 'mobilenet_v9'")
