"""Export a trained model for deployment: BatchNorm folded, as TorchScript and ONNX, each checked
against the eager model on a random batch before it is reported as written.

ONNX needs the ``export`` extra (onnx, onnxscript; onnxruntime for the check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.errors import NasError
from nas.model import fuse_bn

TOLERANCE = 1e-4
FORMATS = ("torchscript", "onnx")


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: Path
    max_abs_error: float


def _reference(model: nn.Module, resolution: int, batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    fused = fuse_bn(model).cpu().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, generator=generator)
    with torch.no_grad():
        return fused, x, model.cpu().eval()(x)


def _check(name: str, path: Path, got: torch.Tensor | np.ndarray, expected: torch.Tensor) -> ExportResult:
    error = float((torch.as_tensor(got) - expected).abs().max())
    if not error <= TOLERANCE:
        raise NasError(f"{name} export {path} differs from the eager model by {error:.2e} (> {TOLERANCE})")
    return ExportResult(name, path, error)


def export_torchscript(model: nn.Module, path: Path, *, resolution: int = 224, batch: int = 2) -> ExportResult:
    """Trace the BN-fused model to TorchScript, save it, reload it and compare with eager outputs."""
    fused, x, expected = _reference(model, resolution, batch)
    with torch.no_grad():
        traced = torch.jit.trace(fused, x)
    path = Path(path)
    traced.save(str(path))
    with torch.no_grad():
        got = torch.jit.load(str(path))(x)
    return _check("torchscript", path, got, expected)


def export_onnx(model: nn.Module, path: Path, *, resolution: int = 224, batch: int = 2) -> ExportResult:
    """Export the BN-fused model to ONNX (dynamic batch) and compare onnxruntime with eager outputs."""
    try:
        import onnxruntime
    except ImportError:
        raise NasError("ONNX export needs the export extra: pip install 'latency-nas[export]'") from None
    fused, x, expected = _reference(model, resolution, batch)
    path = Path(path)
    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    try:
        torch.onnx.export(fused, (x,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"x": {0: batch_dim}}, dynamo=True, verbose=False)
    except ImportError as err:
        raise NasError(f"ONNX export needs the export extra ({err})") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    return _check("onnx", path, got, expected)


def export(model: nn.Module, out_dir: Path, *, formats: tuple[str, ...] = FORMATS, resolution: int = 224,
           name: str = "model") -> list[ExportResult]:
    """Write ``name.pt`` (TorchScript) and/or ``name.onnx`` into ``out_dir``, each verified."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise NasError(f"unknown export format {unknown[0]!r}; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {"torchscript": (export_torchscript, ".pt"), "onnx": (export_onnx, ".onnx")}
    return [writers[f][0](model, out_dir / f"{name}{writers[f][1]}", resolution=resolution) for f in formats]
