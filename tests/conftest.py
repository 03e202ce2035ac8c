import os

import numpy as np
import pyro
import pytest
import torch

os.environ.setdefault("PYROVAE_OFFLINE", "1")  # tests never download
torch.set_num_threads(min(2, torch.get_num_threads()))

# CI replays a fixed set of examples (a gate that passes or fails the same way each time); a
# developer's run draws new ones, which is where new failures are found.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("PYROVAE_HYPOTHESIS_PROFILE", "default"))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture
def binary_npy(tmp_path):
    """300 binary 6x5 'images' with structure (two prototypes plus noise), as a .npy file."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((2, 6, 5)) > 0.5
    which = rng.integers(0, 2, 300)
    flips = rng.random((300, 6, 5)) < 0.1
    data = (prototypes[which] ^ flips).astype(np.float32)
    path = tmp_path / "tiny.npy"
    np.save(path, data)
    return path


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is not beside this checkout")
    return os.path.abspath(SHARED_DATA)


@pytest.fixture
def labelled_npz(tmp_path):
    """240 8x8 binary images of three noisy prototypes with their labels, as an .npz with train
    (180) and test (60) splits."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((3, 8, 8)) > 0.5
    labels = rng.integers(0, 3, 240)
    images = (prototypes[labels] ^ (rng.random((240, 8, 8)) < 0.1)).astype(np.uint8) * 255
    path = tmp_path / "labelled.npz"
    np.savez(path, train=images[:180], train_labels=labels[:180], test=images[180:], test_labels=labels[180:])
    return path
