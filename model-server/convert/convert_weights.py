"""One-time conversion of published PyTorch weights into a model directory
the Rust model server loads: model.safetensors + model.json.

TorchXRayVision publishes densenet121-res224-all as a pickled whole nn.Module
(.pt), which candle cannot read; torchvision ResNet-50 fine-tunes are state
dicts. Both become safetensors with the parameter names the Rust models use
(torchvision's), plus the manifest (labels, preprocessing, thresholds).

    pip install torch torchvision torchxrayvision safetensors
    python convert_weights.py xrv-densenet121 --out models/densenet121-res224-all
    python convert_weights.py resnet50 --state-dict pneumonia.pth --labels Pneumonia \
        --output sigmoid --hidden 256 --version 1 --out models/resnet50-pneumonia
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file


def tensors(state):
    # Buffers the Rust side does not load: BN step counters and xrv's op_threshs
    # (thresholds go into model.json instead).
    return {
        name: t.detach().to(torch.float32).contiguous()
        for name, t in state.items()
        if not name.endswith("num_batches_tracked") and name != "op_threshs"
    }


def write(out, state, manifest):
    os.makedirs(out, exist_ok=True)
    save_file(tensors(state), os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print("wrote", out)


def xrv_densenet(args):
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=args.weights)  # downloads the .pt once
    thresholds = None
    if getattr(model, "op_threshs", None) is not None:
        thresholds = [None if math.isnan(t) else float(t) for t in model.op_threshs.tolist()]
    labels = [label if label else "(unused %d)" % i for i, label in enumerate(model.pathologies)]
    write(args.out, model.state_dict(), {
        "name": args.weights,
        "version": args.version or xrv.__version__,
        "architecture": {"kind": "densenet121-xrv"},
        "labels": labels,
        "preprocessing": "xrv224",
        "output": "sigmoid-calibrated" if thresholds else "sigmoid",
        "thresholds": thresholds or [],
        "trained": True,
        "weights": "model.safetensors",
    })


def resnet50(args):
    state = torch.load(args.state_dict, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    write(args.out, state, {
        "name": args.name or "resnet50-" + "-".join(l.lower() for l in args.labels),
        "version": args.version,
        "architecture": {"kind": "resnet50", "hidden": args.hidden},
        "labels": args.labels,
        "preprocessing": "imagenet224",
        "output": args.output,
        "thresholds": [],
        "trained": True,
        "weights": "model.safetensors",
    })


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="kind", required=True)
    xrv_parser = sub.add_parser("xrv-densenet121")
    xrv_parser.add_argument("--weights", default="densenet121-res224-all")
    xrv_parser.add_argument("--version")
    xrv_parser.add_argument("--out", required=True)
    rn = sub.add_parser("resnet50")
    rn.add_argument("--state-dict", required=True)
    rn.add_argument("--labels", nargs="+", required=True)
    rn.add_argument("--output", choices=["sigmoid", "softmax"], required=True)
    rn.add_argument("--hidden", type=int, default=256)
    rn.add_argument("--name")
    rn.add_argument("--version", required=True)
    rn.add_argument("--out", required=True)
    args = parser.parse_args()
    (xrv_densenet if args.kind == "xrv-densenet121" else resnet50)(args)


if __name__ == "__main__":
    main()
