"""Foreign models the tests build themselves: files as other people's training code writes them."""

from __future__ import annotations

from pathlib import Path


def torch_onnx_segmenter(path: Path, size: int = 64, classes: int = 3, *, layout: str = "NCHW",
                         dynamic_size: bool = False) -> Path:
    """A tiny PyTorch encoder-decoder segmenter (Conv2d, BatchNorm, ReLU, ConvTranspose2d, bilinear
    upsampling), eval mode, seeded weights, exported as ONNX the way PyTorch users do: input
    `pixels` [1, 3, size, size] NCHW float (ImageNet-normalised), output `logits` [1, classes, size,
    size]. The BatchNorm statistics are set to non-trivial values so that folding them matters.

    layout="NHWC": the same network behind a permute at each end (input [1, size, size, 3], output
    [1, size, size, classes]), as a TF-trained model exported to ONNX looks from outside.
    dynamic_size: H and W exported as dynamic axes (a file `convert --from` refuses)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = block(3, 16)
            self.down1 = block(16, 24, 2)
            self.down2 = block(24, 32, 2)
            self.up1 = nn.ConvTranspose2d(32, 24, 2, stride=2)
            self.fuse = block(48, 24)
            self.head = nn.Conv2d(24 + 16, classes, 1)

        def forward(self, x):
            s = self.stem(x)
            d1 = self.down1(s)
            d2 = self.down2(d1)
            u1 = torch.relu(self.up1(d2))
            f = self.fuse(torch.cat([u1, d1], 1))
            f = nn.functional.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
            return self.head(torch.cat([f, s], 1))

    class ChannelsLast(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    model = Segmenter()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    model.eval()
    example = torch.zeros(1, 3, size, size)
    if layout == "NHWC":
        model, example = ChannelsLast(model).eval(), example.permute(0, 2, 3, 1)
    axes = {"pixels": {2: "height", 3: "width"} if layout == "NCHW" else {1: "height", 2: "width"}}
    return _export(model, example, path, dynamic_axes=axes if dynamic_size else None)


def torch_onnx_classifier(path: Path, size: int = 64, classes: int = 10) -> Path:
    """A tiny PyTorch image classifier: input `pixels` [1, 3, size, size], output `logits` [1, classes]."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, classes)).eval()
    return _export(model, torch.zeros(1, 3, size, size), path)


def _export(model, example, path: Path, dynamic_axes=None) -> Path:
    """torch.onnx.export with TorchScript (dynamo=False: the dynamo exporter needs onnxscript),
    opset 17, named `pixels` -> `logits`."""
    import warnings

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(model, (example,), str(path), opset_version=17, input_names=["pixels"],
                          output_names=["logits"], dynamic_axes=dynamic_axes, dynamo=False)
    return path
