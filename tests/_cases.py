"""Small synthetic case files shared by the CLI tests: smooth probability volumes whose ground
truth disagrees with the prediction where it is unsure (how a network's errors cluster)."""

import numpy as np


def smooth_volume(seed, shape, *, error_rate=1.0, q=3):
    """``(probs, gt)``: float32 probabilities of smooth random logits (classes last) and a uint8
    ground truth that flips the argmax to the next class with probability
    ``error_rate * (1 - max probability)``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*shape, q))
    logits = np.cumsum(np.cumsum(logits, axis=0), axis=1) / 4
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    pred = p.argmax(-1)
    flip = rng.random(shape) < error_rate * (1 - p.max(-1))
    gt = np.where(flip, (pred + 1) % q, pred).astype(np.uint8)
    return p, gt


def save_cases(root, arrays):
    """Write ``{name: (probs, gt or None)}`` as ``<name>_softmax.npy`` / ``<name>_gt.npy``."""
    for name, (p, gt) in arrays.items():
        np.save(root / f"{name}_softmax.npy", p)
        if gt is not None:
            np.save(root / f"{name}_gt.npy", gt)
