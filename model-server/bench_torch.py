"""PyTorch side of the CPU throughput benchmark (model-server/inference/benches/cpu_throughput.rs).

Same architectures, same formula weights (make_fixtures.py), same input size,
same thread count; eager mode, float32, torch.no_grad(). Prints one JSON
object per (model, batch) with the per-batch latencies in milliseconds.

    python model-server/bench_torch.py --threads 2 --iterations 10,5,3 --batches 1,8,32

With --serve it measures on request instead, so the Rust side can alternate
with it: after a first line {"torch": version}, each stdin line
"model batch count" is answered by one such JSON object.
"""

import argparse
import json
import os
import sys
import time

import torch
import torchvision
import torchxrayvision as xrv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity"))
from make_fixtures import load_formula  # noqa: E402


def models():
    densenet = load_formula(xrv.models.DenseNet(weights=None), stems=("features.conv0.weight",))
    resnet = torchvision.models.resnet50(weights=None)
    resnet.fc = torch.nn.Sequential(torch.nn.Linear(2048, 256), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(256, 1))
    resnet = load_formula(resnet)
    return {"densenet121": (densenet, 1), "resnet50": (resnet, 3)}


def measure(model, channels, name, batch, count):
    x = torch.rand(batch, channels, 224, 224) * (2048 if name == "densenet121" else 4) - (1024 if name == "densenet121" else 2)
    with torch.no_grad():
        model(x)  # warm-up
        latencies = []
        for _ in range(count):
            start = time.perf_counter()
            model(x)
            latencies.append((time.perf_counter() - start) * 1000)
    return {"model": name, "batch": batch, "latencies_ms": latencies, "torch": torch.__version__}


def serve(nets):
    print(json.dumps({"torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        name, batch, count = line.split()
        model, channels = nets[name]
        print(json.dumps(measure(model, channels, name, int(batch), int(count))), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--iterations", default="10,5,3")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = models()
    if args.serve:
        serve(nets)
        return
    batches = [int(b) for b in args.batches.split(",")]
    iterations = [int(i) for i in args.iterations.split(",")]
    for name, (model, channels) in nets.items():
        for batch, count in zip(batches, iterations):
            print(json.dumps(measure(model, channels, name, batch, count)), flush=True)


if __name__ == "__main__":
    main()
