"""The Frey Face expression labels shipped in the package, and the notes' Figure 17.13 drawn from
them: every frame labelled once, each label's group what the note says it is (checked against
the faces themselves: a smile widens the mouth, an open mouth darkens it), and a Frey run's
attributes figure with the original left of each grid."""

import csv
import importlib.resources

import pytest
import torch

import pyrovae
from pyrovae import plots
from pyrovae.cli import main
from pyrovae.datasets import FREY_EXPRESSIONS, FREY_FRAMES, frey_expressions


def test_every_frame_is_in_one_run_and_the_labels_are_what_the_table_says():
    rows = [line for line in importlib.resources.files("pyrovae").joinpath(FREY_EXPRESSIONS).read_text().splitlines()
            if line and not line.startswith("#")]
    runs = list(csv.DictReader(rows))
    assert int(runs[0]["first"]) == 0 and int(runs[-1]["last"]) == FREY_FRAMES - 1
    for before, after in zip(runs, runs[1:]):
        assert int(after["first"]) == int(before["last"]) + 1  # contiguous, no frame twice
    smiling, mouth_open = frey_expressions()
    assert smiling.shape == mouth_open.shape == (FREY_FRAMES,)
    assert set(smiling.tolist()) == set(mouth_open.tolist()) == {-1, 0, 1}
    assert int((smiling == 1).sum()) == 426 and int((mouth_open == 1).sum()) == 128
    assert int(((smiling == 1) & (mouth_open == 1)).sum()) == 0  # no smile labelled open: the grins are unsure


@pytest.fixture
def frey(shared_data, monkeypatch):
    monkeypatch.setenv("PYROVAE_DATA", shared_data)
    return pyrovae.datasets.load("frey", split="all").data


def test_the_labelled_groups_differ_where_the_faces_do(frey):
    """What the labels claim, seen in the pixels. Smiling: nearest class means of the lower face,
    taken from the frames before 1000, sort the later frames (other runs of the video) as the
    labels do. Mouth open: more pixels of the mouth band darker than the face (the mouth's inside,
    teeth, the tongue's shadow) than with the lips together."""
    smiling, mouth_open = frey_expressions()
    faces = frey[:, 0]
    lower = faces[:, 16:26, 3:17].flatten(1)
    earlier = torch.arange(len(faces)) < 1000
    centre = {v: lower[earlier & (smiling == v)].mean(0) for v in (0, 1)}
    predicted = ((lower - centre[1]).norm(dim=1) < (lower - centre[0]).norm(dim=1)).long()
    later = ~earlier & (smiling >= 0)
    assert float((predicted[later] == smiling[later]).float().mean()) > 0.95
    band = faces[:, 17:24, 4:16] - faces[:, 4:14, 4:16].mean(dim=(1, 2), keepdim=True)
    dark = (band < -0.25).float().sum(dim=(1, 2))
    assert float(dark[mouth_open == 1].mean()) > float(dark[mouth_open == 0].mean()) + 0.5


def test_a_frey_runs_attribute_grid_uses_the_labels(frey, shared_data, tmp_path):
    out = tmp_path / "frey"
    assert main(["train", "--dataset", "frey", "--data-dir", str(shared_data) + "/frey", "--latent-dim", "5",
                 "--hidden", "32", "--epochs", "1", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    assert main(["plot", str(out), "--kind", "attributes"]) == 0
    assert (out / "attributes.png").stat().st_size > 5000
    vae = pyrovae.load(out)
    figure = plots.attributes(vae, frey[:2], [torch.zeros(5), torch.zeros(5)], ["a", "b"], amounts=(-1, 0, 1),
                              examples=2, originals=True)
    panel = figure.axes[0].images[0].get_array()
    # the original's column and three grid columns (20 px each, 1 px of padding around each), three rows
    assert panel.shape[:2] == (3 * 28 + 4, 4 * 20 + 5)
    # the original in the middle row's first cell, blank (white) cells above and below it
    assert float(panel[1:29, 1:21].min()) == 1.0 and float(panel[31:59, 1:21].std()) > 0.01
