"""torchvision models scripted by TorchScript load in Kiln and agree with ``torch.jit.load``.

Skipped where torchvision (or a working torch.jit) is not installed.  The detection model
exercises a custom operator (``torchvision::nms``), registered when torchvision is imported.
"""

from __future__ import annotations

import io

import pytest
import torch

import kiln

tv = pytest.importorskip("torchvision")


def _archive(jit, model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    jit.save(jit.script(model.eval()), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 3, 64, 64)),
                                         ("mobilenet_v3_small", (1, 3, 64, 64))])
def test_classification_models(jit, name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    blob = _archive(jit, getattr(tv.models, name)(weights=None))
    x = torch.randn(*shape)
    expected = jit.load(io.BytesIO(blob))(x)
    loaded = kiln.load(blob)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
    assert kiln.serialize(loaded) == kiln.serialize(kiln.load(kiln.serialize(loaded)))


def test_segmentation_model(jit) -> None:
    torch.manual_seed(0)
    blob = _archive(jit, tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                               num_classes=3))
    x = torch.randn(1, 3, 64, 64)
    expected = jit.load(io.BytesIO(blob))(x)
    got = kiln.load(blob)(x)
    torch.testing.assert_close(got["out"], expected["out"], rtol=1e-4, atol=1e-4)


def test_detection_model_with_nms(jit) -> None:
    torch.manual_seed(0)
    model = tv.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0)
    blob = _archive(jit, model)
    from kiln.serialization.archive import open_archive
    reader = open_archive(blob)
    assert any(b"ops.torchvision.nms" in reader.read(n) for n in reader.names() if n.endswith(".py"))
    images = [torch.rand(3, 120, 160)]
    _, expected = jit.load(io.BytesIO(blob))(images)
    _, got = kiln.load(blob)(images)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(g["labels"], e["labels"])
