"""PyTorch side of the training benchmark (model-server/training/benches/training_throughput.rs).

One configuration per call: the model with formula weights, the first units
frozen (eval mode, no gradient), the last `--unfrozen` units and the head in
train mode, BCEWithLogitsLoss, torch.optim.AdamW; the mean seconds of
`--steps` steps after a warm-up and the process's peak RSS, as JSON.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
import torchxrayvision as xrv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity"))
from make_fixtures import formula  # noqa: E402


def load_all(model, stems=()):
    state = {k: (v if k.endswith("num_batches_tracked") else formula(k, tuple(v.shape), 1 / 1024 if k in stems else 1.0)) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def build(name, unfrozen):
    if name == "resnet50":
        m = torchvision.models.resnet50(weights=None)
        m.fc = torch.nn.Sequential(torch.nn.Linear(2048, 256), torch.nn.ReLU(), torch.nn.Dropout(0.0), torch.nn.Linear(256, 2))
        m = load_all(m)
        units = [torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)] + [b for layer in (m.layer1, m.layer2, m.layer3, m.layer4) for b in layer]
        head = [m.fc]
        channels, scale = 3, 1.5

        def forward(x):
            return m(x)
    else:
        net = xrv.models.DenseNet(weights=None, num_classes=2, apply_sigmoid=False)
        m = load_all(net, stems=("features.conv0.weight",))
        f = m.features
        units = [torch.nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0), f.denseblock1, f.transition1, f.denseblock2, f.transition2, f.denseblock3, f.transition3, f.denseblock4, f.norm5]
        head = [m.classifier]
        channels, scale = 1, 1024.0

        def forward(x):
            out = torch.nn.functional.relu(f(x))
            return m.classifier(torch.nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    learning = []
    for module in units[len(units) - unfrozen:] + head:
        module.train()
        for p in module.parameters():
            p.requires_grad_(True)
            learning.append(p)
    return forward, learning, channels, scale


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--unfrozen", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    forward, learning, channels, scale = build(args.model, args.unfrozen)
    n = args.batch * channels * 224 * 224
    x = torch.from_numpy((scale * np.sin(0.37 * np.arange(n))).astype(np.float32).reshape(args.batch, channels, 224, 224))
    t = torch.tensor([[float(i % 3 == 0) for i in range(b * 2, b * 2 + 2)] for b in range(args.batch)])
    optimizer = torch.optim.AdamW(learning, lr=1e-3, weight_decay=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn(forward(x), t)
        loss.backward()
        optimizer.step()
        if step > 0:
            times.append(time.perf_counter() - started)
    # VmHWM, not ru_maxrss: a child started by the Rust bench reports the
    # parent's high-water mark there.
    with open("/proc/self/status") as status:
        hwm = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    print(json.dumps({"mean_seconds": sum(times) / len(times), "peak_rss_mib": hwm / 1024}))


if __name__ == "__main__":
    main()
