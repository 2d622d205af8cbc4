"""Expected results of one PyTorch training step, for the training parity test.

Builds torchvision's ResNet-50 with the transfer-learning head and
TorchXRayVision's DenseNet-121 with formula weights (make_fixtures.py's
formula), freezes the backbone but its last units as the trainer's
unfrozen phase does (frozen modules in eval(), no gradient; the last units
in train(): batch statistics, running statistics updated with momentum
0.1), runs one batch of formula inputs through
BCEWithLogitsLoss(pos_weight) or CrossEntropyLoss(weight), back-propagates,
and takes one torch.optim.AdamW step. Writes only summaries to
expected/training_*.json: the loss, sampled gradients of named tensors,
sampled weights after the step, sampled running statistics. The Rust test
`cargo test -p cxr-training --test parity` does the same in candle.

    python3 -m venv /tmp/parity && /tmp/parity/bin/pip install torch torchvision torchxrayvision
    /tmp/parity/bin/python model-server/parity/make_training_fixtures.py
"""

import json
import os

import numpy as np
import torch
import torchvision
import torchxrayvision as xrv

from make_fixtures import formula

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)
SIDE = 128
# With every layer in train() mode, formula weights make batch norm
# ill-conditioned: PyTorch's own float32 and float64 logits then differ by
# about 40 %. Frozen early units (eval) keep it well-conditioned (1e-6).
LR, WEIGHT_DECAY = 1e-3, 1e-2
PICKS = 7  # sampled elements per tensor


def load_all_formula(model, stems=()):
    """Every parameter and buffer from the formula, the head included."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = tensor
            continue
        state[name] = formula(name, tuple(tensor.shape), 1.0 / 1024 if name in stems else 1.0)
    model.load_state_dict(state)
    return model


def inputs(batch, channels, scale):
    """x[b, i] = scale * sin(0.37 i + 1.3 b), i over (channel, row, column)."""
    n = channels * SIDE * SIDE
    i = np.arange(n, dtype=np.float64)
    x = np.stack([scale * np.sin(0.37 * i + 1.3 * b) for b in range(batch)]).astype(np.float32)
    return torch.from_numpy(x.reshape(batch, channels, SIDE, SIDE))


def picks(t):
    flat = t.detach().reshape(-1).double()
    idx = [int(k * (flat.numel() - 1) / (PICKS - 1)) for k in range(PICKS)]
    return {"sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()), "indices": idx, "values": [float(flat[k]) for k in idx]}


def step(model, trainable, x, loss_fn, targets, watched, statistics):
    """trainable: the modules that learn (train mode); the rest is frozen."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    learning = []
    for module in trainable:
        module.train()
        for p in module.parameters():
            p.requires_grad_(True)
            learning.append(p)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(learning, lr=LR, weight_decay=WEIGHT_DECAY)
    optimizer.zero_grad()
    logits = model(x)
    loss = loss_fn(logits, targets)
    loss.backward()
    grads = {name: picks(params[name].grad) for name in watched}
    optimizer.step()
    after = {name: picks(params[name]) for name in watched}
    buffers = dict(model.named_buffers())
    return {
        "logits": logits.detach().tolist(),
        "loss": float(loss),
        "gradients": grads,
        "weights_after_step": after,
        "running_statistics": {name: picks(buffers[name]) for name in statistics},
    }


def float64_logits(build):
    """The same forward pass (frozen units in eval(), the learning ones in
    train()) in float64: the exact answer float32 implementations are
    judged against. Its own model, so the float32 step is untouched."""
    model, trainable, x = build()
    model = model.double()
    model.eval()
    for module in trainable:
        module.train()
    with torch.no_grad():
        return model(x.double()).tolist()


def resnet_model():
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Sequential(torch.nn.Linear(2048, 256), torch.nn.ReLU(), torch.nn.Dropout(0.0), torch.nn.Linear(256, 2))
    model = load_all_formula(model)
    return model, [model.layer4[1], model.layer4[2], model.fc], inputs(4, 3, 1.5)


def resnet():
    model, trainable, x = resnet_model()
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    pos_weight = torch.tensor([2.0, 0.5])
    watched = ["fc.3.weight", "fc.0.bias", "layer4.2.bn3.weight", "layer4.2.conv3.weight", "layer4.1.conv2.weight", "layer4.1.bn1.bias"]
    statistics = ["layer4.1.bn1.running_mean", "layer4.1.bn1.running_var", "layer4.2.bn3.running_mean", "layer4.2.bn3.running_var"]
    out = step(model, trainable, x, torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight), targets, watched, statistics)
    out["logits_float64"] = float64_logits(resnet_model)
    out.update({"model": "torchvision resnet50, fc = Sequential(Linear(2048, 256), ReLU, Dropout(0), Linear(256, 2)), formula weights, layer4.1, layer4.2 and fc learning", "unfrozen_units": 2, "input": {"batch": 4, "channels": 3, "side": SIDE, "scale": 1.5}, "targets": targets.tolist(), "pos_weight": pos_weight.tolist()})
    return out


class XrvForward(torch.nn.Module):
    """TorchXRayVision's forward without its resolution fix-up (it resizes
    anything that is not 224 x 224): features -> ReLU -> pool -> classifier."""

    def __init__(self, net):
        super().__init__()
        self.features = net.features
        self.classifier = net.classifier

    def forward(self, x):
        out = torch.nn.functional.relu(self.features(x))
        return self.classifier(torch.nn.functional.adaptive_avg_pool2d(out, (1, 1)).flatten(1))


def densenet_model():
    net = xrv.models.DenseNet(weights=None, num_classes=3, apply_sigmoid=False)
    model = load_all_formula(XrvForward(net), stems=("features.conv0.weight",))
    return model, [model.features.denseblock4, model.features.norm5, model.classifier], inputs(4, 1, 1024.0)


def densenet():
    model, trainable, x = densenet_model()
    classes = torch.tensor([0, 2, 1, 2])
    weight = torch.tensor([1.0, 2.0, 0.5])
    watched = ["classifier.weight", "classifier.bias", "features.norm5.weight", "features.denseblock4.denselayer16.conv2.weight", "features.denseblock4.denselayer1.norm1.weight"]
    statistics = ["features.denseblock4.denselayer1.norm1.running_mean", "features.denseblock4.denselayer1.norm1.running_var", "features.norm5.running_mean", "features.norm5.running_var"]
    out = step(model, trainable, x, torch.nn.CrossEntropyLoss(weight=weight), classes, watched, statistics)
    out["logits_float64"] = float64_logits(densenet_model)
    out.update({"model": "torchxrayvision DenseNet-121, 3 classes, formula weights, denseblock4, norm5 and classifier learning", "unfrozen_units": 2, "input": {"batch": 4, "channels": 1, "side": SIDE, "scale": 1024.0}, "classes": classes.tolist(), "class_weight": weight.tolist()})
    return out


def main():
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__, "torchxrayvision": xrv.__version__}
    for name, build in (("training_resnet50_bce.json", resnet), ("training_densenet121_ce.json", densenet)):
        out = build()
        out["versions"] = versions
        out["optimizer"] = {"kind": "torch.optim.AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "betas": [0.9, 0.999], "eps": 1e-8}
        with open(os.path.join(HERE, "expected", name), "w") as f:
            json.dump(out, f, indent=1)
        print(name, "loss", out["loss"])


if __name__ == "__main__":
    main()
