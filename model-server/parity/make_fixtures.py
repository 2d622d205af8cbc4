"""Expected outputs of the upstream PyTorch models for the parity tests.

Builds TorchXRayVision's DenseNet (densenet121-res224-all's architecture)
with deterministic formula weights (the same formula as
model-server/inference/src/formula_weights.rs), runs TorchXRayVision's own
preprocessing on formula images, and writes the inputs' statistics and the
outputs to expected/*.json. CI compares against those files without Python.

    python3 -m venv .venv && .venv/bin/pip install torch torchvision torchxrayvision
    .venv/bin/python model-server/parity/make_fixtures.py
"""

import json
import math
import os

import numpy as np
import torch
import torchvision
import torchxrayvision as xrv

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)  # deterministic summation order on CPU


def formula(name, shape, scale=1.0):
    """formula_weights.rs, element by element (f64, then f32)."""
    k = (sum(name.encode()) % 97) / 10.0
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    last = name.rsplit(".", 1)[-1]
    parts = name.split(".")
    is_norm = any(p.startswith("norm") or p.startswith("bn") for p in parts) or "downsample.1" in name
    if last == "running_var":
        v = 0.75 + 0.25 * np.sin(1.1 * i + k)
    elif last == "running_mean":
        v = 0.1 * np.sin(1.3 * i + k)
    elif last == "bias":
        v = 0.05 * np.sin(0.9 * i + k)
    elif last == "weight" and is_norm and len(shape) == 1:
        v = 1.0 + 0.1 * np.sin(0.5 * i + k)
    else:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        v = 2.0 / math.sqrt(max(fan_in, 1)) * np.sin(0.7 * i + k)
    return torch.from_numpy((v * scale).astype(np.float32).reshape(shape))


def load_formula(model, stems=()):
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked") or name == "op_threshs":
            state[name] = tensor
            continue
        state[name] = formula(name, tuple(tensor.shape), 1.0 / 1024 if name in stems else 1.0)
    model.load_state_dict(state)
    return model.eval()


def grey_image():
    """600 wide, 520 high, 8-bit: shrinks (anti-aliasing on)."""
    y, x = np.mgrid[0:520, 0:600]
    return ((x * 7 + y * 13 + (x * y) % 31) % 256).astype(np.uint8)


def rgb_image():
    """200 wide, 300 high, 8-bit RGB: grows (no anti-aliasing)."""
    y, x = np.mgrid[0:300, 0:200]
    return np.stack([(x * 3 + y) % 256, (x + y * 5) % 256, (x * y) % 256], axis=2).astype(np.uint8)


def xrv_preprocess(img):
    """What TorchXRayVision's README does with a PNG."""
    img = xrv.datasets.normalize(img, 255)
    if img.ndim > 2:
        img = img.mean(2)
    img = img[None, :, :]
    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)])
    return transform(img)


def input_summary(x):
    flat = x.reshape(-1).astype(np.float64)
    picks = list(range(0, flat.size, 797))
    return {"sum": float(flat.sum()), "abs_sum": float(np.abs(flat).sum()), "indices": picks, "values": [float(flat[p]) for p in picks]}


def densenet():
    model = load_formula(xrv.models.DenseNet(weights=None), stems=("features.conv0.weight",))
    assert sum(p.numel() for p in model.parameters()) == 6966034
    thresholds = [0.3 + 0.4 * i / 17 for i in range(18)]
    thresholds[5] = float("nan")  # an uncalibrated output answers 0.5
    cases = {}
    for case, img in (("grey_600x520_u8", grey_image()), ("rgb_200x300_u8", rgb_image())):
        x = xrv_preprocess(img)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None])
            model.op_threshs = torch.tensor(thresholds, dtype=torch.float32)
            calibrated = model(torch.from_numpy(x)[None])
            model.op_threshs = None
        cases[case] = {"input": input_summary(x), "logits": logits[0].tolist(), "calibrated": calibrated[0].tolist()}
    return {
        "model": "torchxrayvision DenseNet (densenet121-res224-all architecture), formula weights",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "torchxrayvision": xrv.__version__},
        "op_threshs": [None if math.isnan(t) else t for t in thresholds],
        "cases": cases,
    }


def imagenet_preprocess(img):
    """torchvision's evaluation transforms on a float tensor (v2 tensor path)."""
    from torchvision.transforms.v2 import functional as F

    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0
    x = F.resize(x, 256, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    x = F.center_crop(x, 224)
    return F.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def resnet50(head, classes):
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Sequential(
        torch.nn.Linear(2048, head), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(head, classes)
    )
    model = load_formula(model)
    cases = {}
    for case, img in (("grey_600x520_u8", grey_image()), ("rgb_200x300_u8", rgb_image())):
        x = imagenet_preprocess(img)
        with torch.no_grad():
            logits = model(x[None])
        probabilities = torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=1)
        cases[case] = {
            "input": input_summary(x.numpy()),
            "logits": logits[0].tolist(),
            "probabilities": probabilities[0].tolist(),
        }
    return {
        "model": "torchvision resnet50, fc = Sequential(Linear(2048, %d), ReLU, Dropout, Linear(%d, %d)), formula weights" % (head, head, classes),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "hidden": head,
        "classes": classes,
        "cases": cases,
    }


def main():
    outputs = {
        "densenet121_xrv.json": densenet,
        "resnet50_pneumonia.json": lambda: resnet50(256, 1),
        "resnet50_covid3.json": lambda: resnet50(256, 3),
    }
    for name, make in outputs.items():
        out = os.path.join(HERE, "expected", name)
        with open(out, "w") as f:
            json.dump(make(), f, indent=1)
        print("wrote", out)


if __name__ == "__main__":
    main()
