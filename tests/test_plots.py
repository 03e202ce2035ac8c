"""Figures and latent arithmetic: the grid, interpolation, attribute vectors, CLI kinds, report."""


import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Normal

import pyrovae
from pyrovae import latent, plots
from pyrovae.cli import main
from pyrovae.likelihoods import Gaussian


def test_grid_coordinates_are_the_gaussian_inverse_cdf_of_a_linspace():
    for n in (1, 5, 20):
        expected = Normal(0.0, 1.0).icdf(torch.linspace(0.5 / n, 1 - 0.5 / n, n))
        assert torch.equal(latent.grid_coordinates(n), expected)
    assert torch.equal(latent.grid_coordinates(7, 0.05, 0.95), Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 7)))
    z = latent.manifold_latents(2, n=4)
    c = latent.grid_coordinates(4)
    assert torch.equal(z[0, :, 0], c) and torch.equal(z[:, 0, 1], c.flip(0))  # up is positive z2
    with pytest.raises(ValueError, match="0 < low <= high < 1"):
        latent.grid_coordinates(5, 0.0, 1.0)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 28, 20)])
def test_manifold_image_has_the_expected_pixel_size(shape):
    vae = pyrovae.VAE(shape, latent_dim=2, hidden=(8,))
    z = latent.manifold_latents(2, n=5).reshape(25, 2)
    picture = plots.tile(vae.decode(z).detach(), nrow=5, padding=1)
    h, w = shape[1:]
    assert picture.shape == (5 * (h + 1) + 1, 5 * (w + 1) + 1, 3)
    fig = plots.manifold(vae, n=5)
    assert fig.axes[0].images[0].get_array().shape[:2] == (5 * (h + 1) + 1, 5 * (w + 1) + 1)


def test_manifold_of_a_larger_latent_needs_dims_or_data():
    vae = pyrovae.VAE((1, 6, 5), latent_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match="choose two with dims"):
        plots.manifold(vae, n=4)
    z = latent.manifold_latents(3, n=4, dims=(0, 2), base=torch.tensor([0.0, 1.5, 0.0]))
    assert torch.equal(z[..., 1], torch.full((4, 4), 1.5))
    assert plots.manifold(vae, n=4, data=torch.rand(50, 1, 6, 5)).axes


def test_non_image_data_draws_line_plots_with_a_warning():
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,), likelihood="gaussian")
    with pytest.warns(UserWarning, match="non-image data"):
        fig = plots.manifold(vae, n=12)
    assert len(fig.axes) == 100


def linear_vae():
    torch.manual_seed(0)
    vae = pyrovae.VAE((5,), latent_dim=3, hidden=(), likelihood=Gaussian(scale=0.5))
    return vae


def test_interpolation_endpoints_and_slerp_norms():
    vae = linear_vae()
    x = torch.randn(2, 5)
    z = vae.encode(x)[0].detach()
    for method in ("linear", "slerp"):
        path = latent.interpolate(z[0], z[1], steps=9, method=method)
        assert torch.allclose(path[0], z[0], atol=1e-5) and torch.allclose(path[-1], z[1], atol=1e-5)
        decoded = vae.decode(path).detach()
        assert torch.allclose(decoded[0], vae.reconstruct(x[:1])[0], atol=1e-5)
        assert torch.allclose(decoded[-1], vae.reconstruct(x[1:])[0], atol=1e-5)
    a, b = torch.randn(4), 3 * torch.randn(4)
    norms = latent.interpolate(a, b, steps=50, method="slerp").norm(dim=-1)
    low, high = sorted([a.norm().item(), b.norm().item()])
    assert (norms >= low - 1e-5).all() and (norms <= high + 1e-5).all()


def test_attribute_vector_on_a_linear_model():
    vae = linear_vae()
    x = torch.randn(40, 5)
    mask = x[:, 0] > 0
    v = latent.attribute_vector(vae, x, has=mask)
    z = vae.encode(x)[0].detach()
    assert torch.allclose(v, z[mask].mean(0) - z[~mask].mean(0), atol=1e-6)
    # the decoder is W z + b, so adding a v moves every decoding by exactly a W v
    weight = vae.decoder.net[0].weight.detach()
    moved = latent.resynthesis_latents(z[0], [v], [0.0, 1.0, 2.5])
    decoded = vae.decode(moved).detach()
    assert torch.allclose(decoded[2] - decoded[0], 2.5 * weight @ v, atol=1e-5)
    labels = torch.arange(40) % 3
    by_label = latent.attribute_vector(vae, x, labels=labels, positive=2, negative=0)
    assert torch.allclose(by_label, z[labels == 2].mean(0) - z[labels == 0].mean(0), atol=1e-6)
    by_predicate = latent.attribute_vector(vae, x, has=lambda data: data[:, 0] > 0)
    assert torch.allclose(by_predicate, v)
    grid = latent.resynthesis_latents(z[0], [v, by_label], [-1.0, 0.0, 1.0])
    assert grid.shape == (3, 3, 3) and torch.allclose(grid[1, 1], z[0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = (rng.random((120, 8, 8)) < np.linspace(0.1, 0.9, 120)[:, None, None]).astype(np.float32)
    folder = tmp_path_factory.mktemp("plots")
    np.savez(folder / "tiny.npz", train=images, test=images[:60], test_labels=np.arange(60) % 3)
    out = folder / "run"
    assert main(["train", "--dataset", str(folder / "tiny.npz"), "--epochs", "2", "--hidden", "16", "--out", str(out),
                 "--no-progress", "--no-plots", "--device", "cpu"]) == 0
    return out


@pytest.mark.parametrize("kind", ["manifold", "scatter", "reconstructions", "samples", "interpolation", "attributes",
                                  "posterior", "curves"])
def test_every_cli_kind_writes_a_png(tiny_run, kind):
    assert main(["plot", str(tiny_run), "--kind", kind]) == 0
    path = tiny_run / f"{kind}.png"
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_cli_plot_errors(tiny_run, tmp_path, capsys):
    assert main(["plot", str(tiny_run), "--kind", "heatmap"]) == 2
    assert "unknown plot kind 'heatmap'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "--kind", "samples"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_cli_manifold_of_a_3d_latent_without_dims_is_an_error(tiny_run, tmp_path, capsys):
    out = tmp_path / "run3"
    data = tiny_run.parent / "tiny.npz"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--latent-dim", "3", "--hidden", "8",
                 "--out", str(out), "--no-progress", "--no-plots"]) == 0
    assert main(["plot", str(out), "--kind", "manifold"]) == 2
    assert "--dims i,j" in capsys.readouterr().err
    assert main(["plot", str(out), "--kind", "manifold", "--dims", "0,2"]) == 0
    assert main(["plot", str(out), "--kind", "manifold", "--pca"]) == 0


def test_report_is_one_self_contained_page(tiny_run):
    assert main(["report", str(tiny_run)]) == 0
    page = (tiny_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 7
    assert "Training" in page and "[model.prior]" in page and "Learned manifold" in page
    assert "src='http" not in page and 'src="http' not in page


@pytest.mark.parametrize("prior", ["normal", "laplace", "student_t", "mixture", "vamp", "flow"])
def test_samples_figure_for_every_prior(prior):
    vae = pyrovae.VAE((1, 6, 5), latent_dim=2, hidden=(8,), prior=prior)
    fig = plots.samples(vae, n=20, nrow=5)
    picture = fig.axes[0].images[0].get_array()
    assert picture.shape[:2] == (4 * 7 + 1, 5 * 6 + 1)
    assert "samples" in fig.axes[0].get_title()
