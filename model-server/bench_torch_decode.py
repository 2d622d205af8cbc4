"""Python side of the decode + preprocessing benchmark
(model-server/inference/benches/decode_preprocess.rs): the upstream code
paths on the same files. DenseNet-121 input: torchxrayvision's own readers
(`utils.read_xray_dcm` for DICOM, `utils.load_image` for PNG), then
`XRayCenterCrop` and `XRayResizer(224)`. ResNet-50 input (PNG): PIL, then
torchvision's Resize(256), CenterCrop(224), ToTensor, Normalize. Prints one
JSON object per case with the latencies in milliseconds.

    python model-server/bench_torch_decode.py --dicom big.dcm --png big.png --runs 5
"""

import argparse
import json
import time

import torch
import torchvision.transforms as T
import torchxrayvision as xrv
from PIL import Image


def xrv_input(read, path):
    img = read(path)
    if img.ndim == 2:
        img = img[None, ...]
    img = xrv.datasets.XRayCenterCrop()(img)
    return xrv.datasets.XRayResizer(224, engine="skimage")(img)


IMAGENET = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def imagenet_input(path):
    return IMAGENET(Image.open(path).convert("RGB"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dicom", required=True)
    parser.add_argument("--png", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("dicom", "xrv", lambda: xrv_input(xrv.utils.read_xray_dcm, args.dicom)),
        ("png", "xrv", lambda: xrv_input(xrv.utils.load_image, args.png)),
        ("png", "imagenet", lambda: imagenet_input(args.png)),
    ]
    for file, pipeline, run in cases:
        run()
        latencies = []
        for _ in range(args.runs):
            started = time.perf_counter()
            run()
            latencies.append((time.perf_counter() - started) * 1000.0)
        print(json.dumps({"file": file, "pipeline": pipeline, "latencies_ms": latencies}), flush=True)


if __name__ == "__main__":
    main()
