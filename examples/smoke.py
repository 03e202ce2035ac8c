"""``PYROVAE_SMOKE=1``: every example runs on a small budget (a few hundred examples, one or two
epochs, few importance samples), as CI runs them. Imported by the example scripts."""

import os

SMOKE = os.environ.get("PYROVAE_SMOKE") == "1"


def budget(full, smoke):
    """``smoke`` under PYROVAE_SMOKE=1, else ``full``."""
    return smoke if SMOKE else full


def shrink(dataset, examples=512):
    """The first ``examples`` examples under PYROVAE_SMOKE=1, else the whole dataset."""
    if not SMOKE:
        return dataset
    dataset.data = dataset.data[:examples]
    if dataset.targets is not None:
        dataset.targets = dataset.targets[:examples]
    return dataset
