"""Helpers the labelled models share: checking labels, one-hot inputs broadcast against particles
and enumerated values, and the class-balanced labelled subset of a semi-supervised run."""

import numpy as np
import torch

__all__ = ["check_labels", "concat_broadcast", "balanced_labelled_subset"]


def check_labels(y, num_examples, num_classes):
    """``y`` as a long tensor of shape (N,) with values in [0, num_classes), else a ValueError."""
    if not torch.is_tensor(y):
        raise TypeError(f"labels must be a torch.Tensor of shape ({num_examples},); got {type(y).__name__}")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ValueError("labels must be integers (class indices)")
    if tuple(y.shape) != (num_examples,):
        raise ValueError(f"labels must have shape ({num_examples},), one per example; got {tuple(y.shape)}")
    y = y.long()
    if len(y) and not bool(((y >= 0) & (y < num_classes)).all()):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise ValueError(f"labels must be class indices in [0, {num_classes}); got {int(bad)}")
    return y


def concat_broadcast(*tensors):
    """Concatenates on the last dimension after broadcasting the leading (batch) dimensions, so a
    per-example input meets per-particle or enumerated values."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], -1)


def balanced_labelled_subset(labels, count, num_classes, seed):
    """Indices of ``count`` examples, count / num_classes of each class (the remainder to the first
    classes), drawn by ``seed``; a ValueError where the data cannot supply them."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ValueError(f"labels (the labelled examples) must be an integer; got {count!r}")
    if count < num_classes:
        raise ValueError(f"labels={count}: a semi-supervised run needs at least one labelled example per class "
                         f"({num_classes} classes)")
    if count > len(labels):
        raise ValueError(f"labels={count}: the training data hold only {len(labels)} examples")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        wanted = count // num_classes + (1 if c < count % num_classes else 0)
        pool = np.flatnonzero(labels == c)
        if len(pool) < wanted:
            raise ValueError(f"labels={count}: class {c} has only {len(pool)} training examples, {wanted} needed")
        chosen.append(rng.choice(pool, wanted, replace=False))
    return torch.as_tensor(np.sort(np.concatenate(chosen)))
