"""Datasets as in-memory tensors, and where their files are looked for.

Search order for a named dataset: ``data_dir`` (the folder holding that dataset's files),
``$PYROVAE_DATA/<name>/``, Debian's ``/usr/share/datasets/<name>/``, then the user cache
(``$XDG_CACHE_HOME/pyrovae/<name>/``, default ``~/.cache/pyrovae/<name>/``). Files found are used
as they are; otherwise the dataset is downloaded into the cache, and where that fails the
error lists every place looked in.
"""

import csv
import importlib.resources
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .likelihoods import Bernoulli
from .validation import require, require_finite
from .user_cache import cache_dir

__all__ = ["ArrayDataset", "load", "load_array", "search_paths", "NAMES", "binarize",
           "as_tensor", "prepare", "fixed_binarization", "BINARIZATIONS", "split_validation", "has_split"]

NAMES = ("mnist", "fashion-mnist", "frey", "binarized-mnist")
BINARIZATIONS = ("auto", "dynamic", "threshold", "none")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"


@dataclass
class ArrayDataset:
    """Examples ``data`` ``(N, *shape)`` as floats, optional integer ``targets`` (N,).

    Indexing gives ``(x, label)`` like a torchvision dataset; ``data`` is what training uses.
    """

    data: torch.Tensor
    targets: torch.Tensor = None
    name: str = "array"
    split: str = "train"

    def __post_init__(self):
        if self.targets is not None and len(self.targets) != len(self.data):
            raise ValueError(f"{len(self.targets)} targets for {len(self.data)} examples")

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index], (None if self.targets is None else self.targets[index])

    @property
    def shape(self):
        return tuple(self.data.shape[1:])

    @property
    def is_binary(self):
        return _is_binary(self.data)


def search_paths(name, data_dir=None):
    """The folders looked in for dataset ``name``, in order."""
    paths = []
    if data_dir is not None:
        paths.append(Path(data_dir))
    if os.environ.get("PYROVAE_DATA"):
        paths.append(Path(os.environ["PYROVAE_DATA"]) / name)
    paths.append(Path("/usr/share/datasets") / name)
    paths.append(cache_dir() / name)
    return paths


def _not_found(name, paths, wanted, download_error=None):
    places = "\n".join(f"  - {p}" for p in paths)
    message = f"dataset {name!r}: no folder holds {wanted}. Looked in:\n{places}"
    if download_error is not None:
        message += f"\nand the download into {paths[-1]} failed: {download_error}"
    message += "\nPut the files in one of these folders, or pass --data-dir (data_dir=...)."
    return FileNotFoundError(message)


def _find(paths, predicate):
    for path in paths:
        if path.is_dir() and predicate(path):
            return path
    return None


def _has_file(folder, stem):
    return (folder / stem).is_file() or (folder / f"{stem}.gz").is_file()


def _read_idx(folder, stem):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    path = folder / stem
    if path.is_file():
        return read_sn3_pascalvincent_tensor(str(path), strict=False)
    import gzip

    # torchvision's reader takes a plain path; decompress to a private temporary file.
    with gzip.open(folder / f"{stem}.gz", "rb") as compressed, tempfile.NamedTemporaryFile(suffix=".idx") as plain:
        plain.write(compressed.read())
        plain.flush()
        return read_sn3_pascalvincent_tensor(plain.name, strict=False)


def _load_idx_dataset(name, split, data_dir, download):
    splits = ("train", "test") if split == "all" else (split,)
    if any(s not in _IDX_FILES for s in splits):
        raise ValueError(f"dataset {name!r} has splits 'train', 'test' and 'all'; got split={split!r}")
    stems = [stem for s in splits for stem in _IDX_FILES[s]]
    paths = search_paths(name, data_dir)
    found = _find(paths, lambda p: all(_has_file(p, s) for s in stems))
    if found is None:
        found = _download_torchvision(name, paths, stems, download)
    images, labels = [], []
    for s in splits:
        image_stem, label_stem = _IDX_FILES[s]
        images.append(_read_idx(found, image_stem))
        labels.append(_read_idx(found, label_stem).long())
    data = torch.cat(images).unsqueeze(1).float().div_(255.0)
    return ArrayDataset(data, torch.cat(labels), name=name, split=split)


def _download_torchvision(name, paths, stems, download):
    wanted = ", ".join(f"{s}[.gz]" for s in stems)
    if download is False:
        raise _not_found(name, paths, wanted)
    from torchvision import datasets as tv

    cls = {"mnist": tv.MNIST, "fashion-mnist": tv.FashionMNIST}[name]
    root = cache_dir() / "torchvision"
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as error:  # no network, a refused connection, a bad mirror
        raise _not_found(name, paths, wanted, download_error=error) from None
    return root / cls.__name__ / "raw"


FREY_FRAMES = 1965
FREY_EXPRESSIONS = "data/frey_expressions.csv"  # in the package: runs of frames labelled by looking


def frey_split_order(num_frames=FREY_FRAMES):
    """The frames in the fixed order the train and test splits take them from (the test split is
    its first tenth): the frame number of each example of a split."""
    return torch.randperm(num_frames, generator=torch.Generator().manual_seed(0))


def _load_frey(split, data_dir, download, test_fraction=0.1):
    import scipy.io

    paths = search_paths("frey", data_dir)
    found = _find(paths, lambda p: (p / "frey_rawface.mat").is_file())
    if found is None:
        found = _download_file("frey", paths, FREY_URL, "frey_rawface.mat", download)
    faces = scipy.io.loadmat(str(found / "frey_rawface.mat"))["ff"].T.reshape(-1, 1, 28, 20)
    data = torch.from_numpy(faces.astype(np.float32) / 255.0)
    # The faces are frames of one video; a fixed permutation keeps neighbouring frames apart.
    order = frey_split_order(len(data))
    num_test = int(round(test_fraction * len(data)))
    index = {"train": order[num_test:], "test": order[:num_test], "all": torch.arange(len(data))}
    if split not in index:
        raise ValueError(f"dataset 'frey' has splits 'train', 'test' and 'all'; got split={split!r}")
    return ArrayDataset(data[index[split]], None, name="frey", split=split)


def frey_expressions():
    """``(smiling, mouth_open)``: one value per Frey Face frame (0-1964, the file's order, as
    ``load("frey", split="all")`` gives them), 1 or 0 where the frame was labelled by looking at it
    (smiling or neutral; mouth open or closed) and -1 where it is neither or unsure. The labels and
    how they were made are in the package's ``data/frey_expressions.csv``."""
    text = importlib.resources.files("pyrovae").joinpath(FREY_EXPRESSIONS).read_text()
    smiling = torch.full((FREY_FRAMES,), -1, dtype=torch.long)
    mouth_open = smiling.clone()
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    for row in csv.DictReader(rows):
        first, last = int(row["first"]), int(row["last"])
        for values, key in ((smiling, "smiling"), (mouth_open, "mouth_open")):
            values[first:last + 1] = int(row[key]) if row[key] else -1
    return smiling, mouth_open


def _load_binarized_mnist(split, data_dir, download):
    split = "valid" if split == "validation" else split
    splits = ("train", "valid", "test") if split == "all" else (split,)
    if any(s not in ("train", "valid", "test") for s in splits):
        raise ValueError(f"dataset 'binarized-mnist' has splits 'train', 'valid', 'test' and 'all'; got split={split!r}")
    paths = search_paths("binarized-mnist", data_dir)

    def has_amat(p):
        return all((p / f"binarized_mnist_{s}.amat").is_file() for s in splits)

    found = _find(paths, lambda p: (p / "binarized_mnist_uint8.npz").is_file() or has_amat(p))
    if found is None:
        for s in splits:
            found = _download_file(
                "binarized-mnist", paths, BINARIZED_MNIST_URL.format(split=s), f"binarized_mnist_{s}.amat", download
            )
    parts = []
    for s in splits:
        if (found / "binarized_mnist_uint8.npz").is_file():
            with np.load(found / "binarized_mnist_uint8.npz") as arrays:
                parts.append(arrays[s].astype(np.float32))
        else:
            parts.append(np.loadtxt(found / f"binarized_mnist_{s}.amat", dtype=np.float32))
    data = torch.from_numpy(np.concatenate(parts)).reshape(-1, 1, 28, 28)
    return ArrayDataset(data, None, name="binarized-mnist", split=split)


def _download_file(name, paths, url, filename, download):
    if download is False:
        raise _not_found(name, paths, filename)
    from torchvision.datasets.utils import download_url

    target = paths[-1]
    try:
        download_url(url, str(target), filename)
    except Exception as error:
        raise _not_found(name, paths, filename, download_error=error) from None
    return target


def load_array(path, split="train"):
    """A ``.npy`` file (all of it is ``train``) or an ``.npz`` (keys ``train``/``test``, or one
    array) -> ArrayDataset. uint8 data are scaled to [0, 1]; shapes (N, D), (N, H, W) -> (N, 1,
    H, W) and (N, C, H, W) are accepted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file {str(path)!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a .npy/.npz array: {error}") from None
    targets = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if split in keys:
                array = loaded[split]
                label_key = f"{split}_labels"
                targets = loaded[label_key] if label_key in keys else None
            elif len(keys) == 1 and split == "train":
                array = loaded[keys[0]]
            else:
                raise ValueError(f"{str(path)!r} has no array named {split!r}; it holds {keys}")
    else:
        if split != "train":
            raise ValueError(f"a .npy file holds one split, 'train'; got split={split!r} for {str(path)!r}")
        array = loaded
    return ArrayDataset(_to_tensor(array, path), None if targets is None else torch.as_tensor(targets).long(),
                        name=path.stem, split=split)


def _to_tensor(array, path):
    if array.ndim < 2 or array.ndim > 4:
        raise ValueError(
            f"{str(path)!r}: expected an array of shape (N, D), (N, H, W) or (N, C, H, W); got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{str(path)!r}: expected numbers; got dtype {array.dtype}")
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    data = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32) / scale)
    require_finite(data, repr(str(path)))
    if data.dim() == 3:
        data = data.unsqueeze(1)
    return data


def load(name, split="train", data_dir=None, download=None):
    """Dataset ``name`` (one of ``NAMES``, or a path to a ``.npy``/``.npz`` file) -> ArrayDataset.

    :param download: ``None`` tries a download when no files are found, unless the environment
        sets ``PYROVAE_OFFLINE=1``; ``False`` never does.
    """
    name = str(name)
    if download is None and os.environ.get("PYROVAE_OFFLINE") == "1":
        download = False
    if name.endswith((".npy", ".npz")):
        return load_array(name, split)
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, split, data_dir, download)
    if name == "frey":
        return _load_frey(split, data_dir, download)
    if name == "binarized-mnist":
        return _load_binarized_mnist(split, data_dir, download)
    raise ValueError(f"unknown dataset {name!r}; choose one of {list(NAMES)} or a path to a .npy/.npz file")


def binarize(data, mode, generator=None):
    """``"dynamic"``: x ~ Bernoulli(data), fresh each call; ``"threshold"``: x = [data > 0.5]."""
    if mode == "dynamic":
        return torch.bernoulli(data, generator=generator)
    if mode == "threshold":
        return (data > 0.5).to(data.dtype)
    raise ValueError(f"unknown binarization {mode!r}; choose 'dynamic', 'threshold' or 'none'")


def as_tensor(data, what="train"):
    """A tensor, an :class:`ArrayDataset`, a NumPy array, or a torchvision-style dataset of
    ``(x, label)`` -> ``(x as a float tensor, labels or None)``."""
    if torch.is_tensor(data):
        return data.float() if not data.is_floating_point() else data, None
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, labels = data  # (images, labels)
        if len(x) != len(labels):
            raise ValueError(f"{what}: (x, labels) of different lengths, {len(x)} and {len(labels)}")
        return (x.float() if not x.is_floating_point() else x), labels
    if hasattr(data, "data") and torch.is_tensor(data.data) and data.data.is_floating_point():
        return data.data, getattr(data, "targets", None)
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.asarray(data, dtype=np.float32)), None
    try:
        items = [data[i] for i in range(len(data))]
    except TypeError:
        raise TypeError(f"{what} must be a tensor or an indexable dataset; got {type(data).__name__}") from None
    xs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    labels = [item[1] for item in items] if items and isinstance(items[0], (tuple, list)) else None
    return torch.stack([torch.as_tensor(x) for x in xs]).float(), (torch.as_tensor(labels) if labels else None)


def _is_binary(data):
    # grey data shows itself in the first examples; the full scan runs only for data that may be binary
    head = data[:100]
    if not bool(((head == 0) | (head == 1)).all()):
        return False
    return bool(((data == 0) | (data == 1)).all())


def prepare(vae, data, binarization, what):
    """Checks ``data`` for ``vae`` once, up front (shape, emptiness, finiteness, the likelihood's
    support) and resolves ``binarization``: ``"auto"`` is ``"dynamic"`` for grey data under a
    Bernoulli likelihood, else ``"none"``. Returns (the data, threshold-binarized where asked,
    the binarization). The range comes from one pass (``aminmax``, NaN propagating); the
    element-wise checks run only to name the first bad value."""
    if torch.is_tensor(data) and data.dtype != vae.dtype:
        data = data.to(vae.dtype)  # integer, boolean or double arrays as the VAE's floats
    vae.check_data(data)
    if data.numel() == 0:
        raise ValueError(f"{what} data is empty")
    low, high = (float(v) for v in torch.aminmax(data))
    if not (math.isfinite(low) and math.isfinite(high)):
        require_finite(data, f"{what} data")
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarize {binarization!r}; choose one of {list(BINARIZATIONS)}")
    if binarization == "auto":
        grey_scored = getattr(vae.likelihood, "grey", False)  # the user asked for grey values as they are
        binarization = ("dynamic" if isinstance(vae.likelihood, Bernoulli) and not grey_scored and not _is_binary(data)
                        else "none")
    if binarization == "dynamic":
        if low < 0 or high > 1:
            require(data, (data >= 0) & (data <= 1), f"{what} data: dynamic binarization needs values in [0, 1]")
    else:
        if binarization == "threshold":
            data = binarize(data, "threshold")
        vae.likelihood.check_support(data)
    return data, binarization


def fixed_binarization(data, binarization, seed):
    """One fixed Bernoulli draw of grey ``data`` under dynamic binarization (what a run's
    per-epoch metrics and evaluation measure, the same draw every time), else ``data``."""
    if binarization != "dynamic":
        return data
    return binarize(data, "dynamic", generator=torch.Generator(device=data.device).manual_seed(seed))


def has_split(name, split):
    """Whether the named dataset ships ``split`` (``binarized-mnist`` has ``valid``)."""
    return split in {"binarized-mnist": ("train", "valid", "test")}.get(str(name), ("train", "test", "all"))


def split_validation(dataset, fraction, seed=0):
    """(train, valid): ``fraction`` of ``dataset``'s examples held out by a permutation seeded by
    ``seed``, the same split every time."""
    if not 0 < fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1); got {fraction!r}")
    num_valid = int(round(fraction * len(dataset)))
    if num_valid < 1 or num_valid >= len(dataset):
        raise ValueError(f"valid_fraction={fraction} of {len(dataset)} examples leaves no "
                         f"{'validation' if num_valid < 1 else 'training'} examples")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    parts = []
    for index, split in ((order[num_valid:], dataset.split), (order[:num_valid], "valid")):
        targets = None if dataset.targets is None else dataset.targets[index]
        parts.append(ArrayDataset(dataset.data[index], targets, name=dataset.name, split=split))
    return tuple(parts)
