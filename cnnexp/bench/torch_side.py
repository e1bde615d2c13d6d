"""The reference side of a bench row: the same model (`cnnexp.bench.torch_models`) and the same
train step (gather the batch by index, scale and standardize, forward, cross-entropy, backward,
optimizer update) written in PyTorch, on the same images, with the same optimizer settings.

PyTorch gets its own best practice: channels-last memory for convolutions, `zero_grad` to None,
bf16 autocast under `trainer.precision=bf16`, and `torch.compile` where asked (on GPUs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from cnnexp.bench.torch_models import UnsupportedReference, reference_model
from cnnexp.data import ImageDataset
from cnnexp.data.preprocess import Preprocessing
from cnnexp.models import options_of

# Preprocessings that are an affine map per channel, which the reference applies as (x - mean) / std.
AFFINE_PREPROCESSING = ("none", "center", "standardize")


@dataclass
class ReferenceSteps:
    params: int
    train: Any  # runs `steps` train steps and waits for the device
    evaluate: Any  # one pass over eval_images test images
    eval_images: int
    device: str


def _unsupported(cfg: DictConfig, preprocessing: Preprocessing) -> str | None:
    """Why the reference cannot do the same work as cnnexp's step for `cfg` (None: it can)."""
    trainer = cfg.trainer
    reasons = {
        "data.augment": any(bool(value) for value in cfg.data.augment.values()),
        f"data.preprocess={preprocessing.kind}": preprocessing.kind not in AFFINE_PREPROCESSING,
        f"loss={cfg.loss.name}": cfg.loss.name != "cross_entropy",
        "trainer.ema_decay": trainer.ema_decay is not None,
        "trainer.tta_flip": trainer.tta_flip,
        "optim.groups": bool(cfg.optim.get("groups")),
    }
    missing = [option for option, present in reasons.items() if present]
    return f"no reference for {', '.join(missing)}" if missing else None


def _optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`cfg.optim` in PyTorch: weight decay on weights (tensors of 2+ dimensions) only, as cnnexp."""
    optim = cfg.optim
    decay = optim.get("weight_decay", 0.0)
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.b1, optim.b2), eps=1e-8)
    if optim.name == "adam":  # L2 added to the gradient, as optax.add_decayed_weights before adam
        return torch.optim.Adam(groups, lr=optim.lr, betas=(optim.b1, optim.b2), eps=1e-8)
    momentum = optim.get("momentum", 0.0) if optim.name in ("momentum", "nesterov") else 0.0
    return torch.optim.SGD(groups, lr=optim.lr, momentum=momentum, nesterov=optim.name == "nesterov")


def reference_steps(cfg: DictConfig, data: ImageDataset, *, steps: int, eval_batches: int,
                    compile_model: bool) -> ReferenceSteps:
    """The PyTorch twin of `compile_steps(cfg, data, ...)`; UnsupportedReference if there is none."""
    preprocessing = data.preprocessing
    reason = _unsupported(cfg, preprocessing)
    if reason:
        raise UnsupportedReference(reason)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)
    model = reference_model(cfg.model.name, options_of(cfg.model), input_shape=data.input_shape,
                            num_classes=data.num_classes).to(device, memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    optimizer = _optimizer(cfg, model)
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16")
    mean = torch.as_tensor(np.asarray(preprocessing.mean), device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(np.asarray(preprocessing.std), device=device).view(1, -1, 1, 1)
    images = torch.from_numpy(data.train.images).to(device)
    labels = torch.from_numpy(data.train.labels.astype(np.int64)).to(device)
    batch = cfg.trainer.batch_size
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    steps_per_epoch = len(data.train) // batch
    smoothing = cfg.loss.label_smoothing

    def inputs(pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    current = {"batch": 0}

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train() -> None:
        model.train()
        for _ in range(steps):
            index = order[current["batch"] * batch:(current["batch"] + 1) * batch]
            with autocast:
                loss = F.cross_entropy(forward(inputs(images[index])), labels[index], label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            current["batch"] = (current["batch"] + 1) % steps_per_epoch
        synchronize()

    eval_batch = cfg.trainer.eval_batch_size
    test = data.test.padded(eval_batch)  # whole batches, as cnnexp's evaluation
    test_images = torch.from_numpy(test.images).to(device)
    test_labels = torch.from_numpy(test.labels.astype(np.int64)).to(device)
    batches = min(eval_batches, len(test) // eval_batch)

    def evaluate() -> None:
        model.eval()
        totals = torch.zeros(2, device=device)
        with torch.inference_mode(), autocast:
            for index in range(batches):
                window = slice(index * eval_batch, (index + 1) * eval_batch)
                logits = forward(inputs(test_images[window])).float()
                totals += torch.stack([F.cross_entropy(logits, test_labels[window], reduction="sum"),
                                       (logits.argmax(-1) == test_labels[window]).sum().float()])
        totals.tolist()  # one sync, as cnnexp's evaluation reads its sums once

    return ReferenceSteps(params, train, evaluate, batches * eval_batch, device)
