"""The pictures of the VAE literature, as matplotlib figures, and the HTML run report.

Figures are made with matplotlib's object-oriented ``Figure`` API, which needs no backend: the
library never sets one (``pyplot`` and its global state are left to the user). Show a figure in a
notebook by returning it, or save it with :func:`save`.

The pictures of a VAE (``manifold``, ``samples``, ``reconstructions``, ``interpolation``,
``scatter``, ``attributes``) take the model in any of the protocol's forms
(:mod:`pyrovae.protocol`): a pyrovae model, or a user's object with ``model`` and ``guide``. For a
user's program, decoding z conditions the model's latent site on z (``poutine.condition``) and
draws the observed site's mean; encoding x reads the guide's latent site (its mean). The keyword
``program_options`` of each (``latent_site``, ``obs_site``, ``image_shape``, ``input_shape``)
names what the traces leave open: ``manifold(my_vae, image_shape=(28, 28))``."""

import io
import math
import warnings
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from . import latent
from .program import Program, as_program
from .protocol import family
from .atomic_files import atomic_write

__all__ = [
    "tile",
    "manifold",
    "scatter",
    "reconstructions",
    "samples",
    "interpolation",
    "attributes",
    "curves",
    "jensen_gap",
    "save",
    "completions",
    "classes",
    "analogies",
    "posterior",
]


def _picture_model(vae, options):
    """The model to draw: a pyrovae model as it is, a user's program as a
    :class:`~pyrovae.protocol.Program` with the naming ``options``."""
    unknown = set(options) - {"latent_site", "obs_site", "image_shape", "input_shape"}
    if unknown:
        raise TypeError(f"unknown argument(s) {sorted(unknown)}; a user's program takes latent_site=, obs_site=, "
                        "image_shape=, input_shape=")
    program = as_program(vae, **options)
    if options and program is vae and any(v is not None for v in options.values()):
        raise TypeError(f"{sorted(options)} name the sites and shapes of a user's program; a pyrovae "
                        f"{type(vae).__name__} knows its own")
    return program


def _as_images(vae, x):
    """``(N, *data_shape)`` -> ``(N, C, H, W)`` for display, or None where the data are not images."""
    shape = tuple(vae.data_shape)
    if tuple(x.shape[1:]) != shape and x[0].numel() == math.prod(shape):  # a flat observation
        x = x.reshape(len(x), *shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return x
    if len(shape) == 2:
        return x.unsqueeze(1)
    return None


def _display_range(x):
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return x
    return (x - lo) / max(hi - lo, 1e-12)


def tile(images, nrow, padding=1):
    """(N, C, H, W) in [0, 1] -> one (H', W', C) numpy array, ``nrow`` images per row."""
    grid = make_grid(images.detach().cpu().float().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _show(ax, images, nrow, title=None):
    picture = tile(images, nrow)
    ax.imshow(picture if picture.shape[2] == 3 else picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def _figure_for(images_per_row, rows, cell_inches=0.45, extra_height=0.4):
    return Figure(figsize=(max(3.0, images_per_row * cell_inches), rows * cell_inches + extra_height))


def _lines(x, rows, cols, title):
    fig = Figure(figsize=(cols * 1.2, rows * 0.9))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, row in zip(axes.flat, x.detach().cpu().flatten(1)):
        ax.plot(row.numpy(), lw=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


@torch.no_grad()
def _decode(vae, z):
    return vae.decode(z.to(vae.device)).cpu()


@torch.no_grad()
def manifold(vae, n=20, dims=None, base=None, data=None, title=None, **program_options):
    """AEVB Figure 4: decoded means over Phi^-1 of an n x n grid on the unit square. For a latent
    of more than 2 dimensions give ``dims`` (others held at ``base``) or ``data`` (the plane of
    its encodings' top two principal axes)."""
    vae = _picture_model(vae, program_options)
    if data is not None and isinstance(vae, Program):
        vae.prepare_data(data)  # a user's program learns the shape of its input
    axes = None
    if vae.latent_dim > 2 and dims is None and data is not None:
        axes = latent.principal_axes(latent.encode_mean(vae, data).cpu())
    z = latent.manifold_latents(vae.latent_dim, n, dims=dims, base=base, axes=axes)
    decoded = _decode(vae, z.reshape(n * n, -1))
    images = _as_images(vae, decoded)
    how = "principal axes 1, 2" if axes is not None else f"dims {tuple(dims) if dims is not None else (0, 1)}"
    title = title or f"learned manifold ({n}x{n}, z = Phi^-1(grid), {how})"
    if images is None:
        if n > 10:
            warnings.warn(f"non-image data: drawing a {min(n, 10)}x{min(n, 10)} grid of line plots instead of {n}x{n}")
            return manifold(vae, min(n, 10), dims, base, data, title, **program_options)
        return _lines(decoded, n, n, title)
    h, w = images.shape[-2:]
    fig = Figure(figsize=(min(12, max(4, n * w / 28 * 0.45)), min(12, max(4, n * h / 28 * 0.45)) + 0.3))
    _show(fig.add_subplot(), _display_range(images), n, title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def scatter(vae, x, labels=None, title=None, max_points=10000, **program_options):
    """Posterior means of ``x`` coloured by label (PCA to 2-D for larger latents)."""
    vae = _picture_model(vae, program_options)
    x = x[:max_points]
    z = latent.encode_mean(vae, x).cpu()
    xlabel, ylabel = "z1", "z2"
    if z.shape[1] > 2:
        mean, directions, _ = latent.principal_axes(z)
        z = (z - mean) @ directions.T
        xlabel, ylabel = "principal axis 1", "principal axis 2"
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], 1)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    if labels is not None:
        labels = labels[:max_points].cpu()
        for value in labels.unique():
            keep = labels == value
            ax.scatter(z[keep, 0], z[keep, 1], s=3, alpha=0.6, label=str(int(value)), color=colormaps["tab10"](int(value) % 10))
        ax.legend(markerscale=4, fontsize=8, loc="upper right", title="label")
    else:
        ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "posterior means of the test set")
    fig.tight_layout()
    return fig


@torch.no_grad()
def reconstructions(vae, x, n=10, title=None, **program_options):
    """Originals (top row) over their reconstructions E[x | z = mu(x)] (bottom row)."""
    vae = _picture_model(vae, program_options)
    x = x[:n]
    recon = vae.reconstruct(x.to(vae.device)).cpu()
    both = torch.cat([x.cpu().reshape(recon.shape), recon])
    images = _as_images(vae, both)
    if images is None:
        return _lines(both, 2, len(x), title or "originals (top) and reconstructions (bottom)")
    fig = _figure_for(len(x), 2, cell_inches=0.8)
    _show(fig.add_subplot(), _display_range(images), len(x), title or "originals (top) and reconstructions (bottom)")
    fig.tight_layout()
    return fig


@torch.no_grad()
def samples(vae, n=100, nrow=10, seed=0, title=None, **program_options):
    """E[x | z] for z drawn from the prior (learned priors included)."""
    vae = _picture_model(vae, program_options)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        z = vae.prior_latents(n)
    decoded = _decode(vae, z)
    images = _as_images(vae, decoded)
    name = vae.prior_name
    if images is None:
        return _lines(decoded[: nrow * 2], 2, nrow, title or f"samples from the {name} prior")
    fig = _figure_for(nrow, -(-n // nrow), cell_inches=0.55)
    _show(fig.add_subplot(), _display_range(images), nrow, title or f"samples: E[x|z], z ~ {name} prior")
    fig.tight_layout()
    return fig


@torch.no_grad()
def interpolation(vae, x, pairs=4, steps=10, title=None, **program_options):
    """Decodings along the path between the encodings of example pairs, linear and spherical:
    for each pair one row of each."""
    vae = _picture_model(vae, program_options)
    x = x.to(vae.device)
    if len(x) < 2 * pairs:
        raise ValueError(f"interpolation of {pairs} pairs needs {2 * pairs} examples; got {len(x)}")
    z = latent.encode_mean(vae, x[: 2 * pairs])
    rows = []
    for i in range(pairs):
        for method in ("linear", "slerp"):
            rows.append(latent.interpolate(z[2 * i], z[2 * i + 1], steps, method))
    decoded = _decode(vae, torch.cat(rows))
    images = _as_images(vae, decoded)
    title = title or "interpolation between encodings: linear and spherical rows, pair by pair"
    if images is None:
        return _lines(decoded, 2 * pairs, steps, title)
    fig = _figure_for(steps, 2 * pairs, cell_inches=0.6)
    _show(fig.add_subplot(), _display_range(images), steps, title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def attributes(vae, x, vectors, names, amounts=(-2, -1, 0, 1, 2), examples=3, title=None, originals=False,
               **program_options):
    """Resynthesis (the notes' Figure 17.13): for each of ``examples`` encodings z, the grid
    z + a v1 (+ b v2) over ``amounts`` (rows: v1, columns: v2), its centre (a = b = 0) the
    reconstruction; one panel per example, with the original image to the grid's left where
    ``originals`` (the notes' layout)."""
    vae = _picture_model(vae, program_options)
    x = x.to(vae.device)
    z = latent.encode_mean(vae, x[:examples])
    k = len(amounts)
    rows = k if len(vectors) == 2 else 1
    width = k + (1 if originals else 0)
    fig = Figure(figsize=(examples * max(2.5, width * 0.55), max(2.5, rows * 0.55) + 0.8))
    axes = fig.subplots(1, examples, squeeze=False)
    for ax, zi, xi in zip(axes[0], z, x[:examples]):
        grid = latent.resynthesis_latents(zi, [v.to(zi.device) for v in vectors], amounts)
        decoded = _decode(vae, grid.reshape(-1, zi.shape[-1]))
        images = _as_images(vae, decoded)
        if images is None:
            raise ValueError("attribute resynthesis is drawn for image data only")
        images = _display_range(images)
        if originals:  # the original in the middle row's first column, blanks above and below it
            original = _as_images(vae, xi[None].to(images.dtype))
            column = torch.ones((rows, *images.shape[1:]), dtype=images.dtype, device=images.device)
            column[rows // 2] = _display_range(original)[0]
            images = torch.cat([column.unsqueeze(1), images.reshape(rows, k, *images.shape[1:])], 1)
            images = images.reshape(-1, *images.shape[2:])
        _show(ax, images, width)
    label = f"rows: {names[0]}" + (f", columns: {names[1]}" if len(names) > 1 else "")
    if originals:
        label = "the original left, its reconstruction at the centre; " + label
    if len(vectors) == 1:
        label = f"columns: {names[0]}"
    fig.suptitle(title or f"attribute vectors, amounts {list(amounts)}\n{label}", fontsize=10)
    fig.tight_layout()
    return fig


def curves(history, title=None):
    """ELBO, reconstruction and KL per epoch, train and test, from ``metrics.jsonl`` rows."""
    if not history:
        raise ValueError("no epochs in the history: train first")
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    panels = (("ELBO (nats/example)", "elbo", "elbo"), ("reconstruction E_q log p(x|z)", "reconstruction", "reconstruction"), ("KL(q || p)", "kl", "kl"))
    for ax, (name, train_key, test_key) in zip(axes, panels):
        if f"train_{train_key}" in history[0]:
            ax.plot(epochs, [r[f"train_{train_key}"] for r in history], "o-", ms=3, label="train")
        if f"test_{test_key}" in history[0]:
            ax.plot(epochs, [r[f"test_{test_key}"] for r in history], "s-", ms=3, label="test")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "training curves", fontsize=10)
    fig.tight_layout()
    return fig


def jensen_gap(check, title=None):
    """ELBO and IWAE_k against k (log scale) with Monte Carlo error bars: the bound rising
    towards log p(x), as in the notes' Figure 17.6."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.errorbar(check.ks, check.values, yerr=[2 * s for s in check.stderrs], fmt="o-", capsize=3, label="IWAE_k (k = 1: ELBO)")
    if check.exact is not None:
        ax.axhline(check.exact, color="k", ls="--", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("k (importance samples)")
    ax.set_ylabel("nats per example")
    ax.set_title(title or f"Jensen gap log p(x) - ELBO = {check.jensen_gap:.3f} nats", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _labelled_grid(vae, images, row_names, column_names, title):
    """``(rows, cols, *data_shape)`` images in one grid, with names down the left and along the top."""
    rows, cols = images.shape[:2]
    pictures = _as_images(vae, images.reshape(rows * cols, *vae.data_shape).cpu())
    if pictures is None:
        raise ValueError("these pictures are drawn for image data")
    fig = _figure_for(cols, rows, cell_inches=0.6, extra_height=0.6)
    ax = fig.add_subplot()
    _show(ax, _display_range(pictures), cols, title)
    height, width = pictures.shape[-2:]
    ax.set_axis_on()
    ax.set_yticks([(height + 1) * (i + 0.5) for i in range(rows)], row_names, fontsize=7)
    ax.set_xticks([(width + 1) * (j + 0.5) for j in range(cols)] if column_names else [], column_names or [],
                  fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


@torch.no_grad()
def completions(cvae, x, samples=5, examples=6, seed=0, title=None):
    """The quadrant task (Pyro's CVAE tutorial): per example (rows), the given quadrants, the
    truth, the baseline's guess and ``samples`` CVAE completions, each drawn z ~ p(z | c)."""
    x = x[:examples].to(cvae.device)
    given = cvae.split(x)[0].reshape(x.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        drawn = cvae.sample(samples, condition=x)  # (samples, N, *shape)
    # the unknown pixels of the input shown grey, as the tutorial shows them
    shown = torch.where(cvae.given_mask.reshape(cvae.data_shape), given, torch.full_like(given, 0.5))
    grid = torch.stack([shown, x, cvae.baseline_completion(x), *drawn], 1)
    names = ["input", "truth", "baseline"] + [f"CVAE {i + 1}" for i in range(samples)]
    fig = _labelled_grid(cvae, grid, [str(i + 1) for i in range(len(x))], names,
                         title or f"{cvae.config['given_quadrants']} quadrant(s) given: completions")
    return fig


@torch.no_grad()
def classes(vae, samples=10, seed=0, title=None):
    """E[x | y, z] for every class y (rows) and ``samples`` draws of z (columns): the label
    CVAE's p(z | y), or M2's style z ~ p(z) shared down each column."""
    num_classes = vae.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        labels = torch.arange(num_classes, device=vae.device).repeat_interleave(samples)
        if family(vae).semi_supervised:
            z = vae.prior().sample((samples,)).repeat(num_classes, 1)
            images = vae.decode(z, labels)
        else:
            images = vae.sample(1, condition=labels)[0]
    grid = images.reshape(num_classes, samples, *vae.data_shape)
    return _labelled_grid(vae, grid, [f"y={c}" for c in range(num_classes)], None,
                          title or "samples by class (rows) and z (columns)")


@torch.no_grad()
def analogies(m2, x, examples=8, title=None):
    """Kingma et al. 2014, Figure 1: the style z of test examples (first column) decoded with
    every class (the other columns)."""
    x = x[:examples].to(m2.device)
    grid = torch.cat([x[:, None], m2.analogies(x)], 1)
    return _labelled_grid(m2, grid, [str(i + 1) for i in range(len(x))],
                          ["input"] + [str(c) for c in range(m2.num_classes)],
                          title or "analogies: each row's style with every class")


def _site_log_prob_sum(trace, dim=-2):
    """Per point of the leading plate (``dim``): the sum over the trace's sample sites of their
    log densities, every other plate summed."""
    trace.compute_log_prob()
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and "log_prob" in site:
            value = site["log_prob"]
            total = total + (value.reshape(value.shape[:value.dim() + dim + 1] + (-1,)).sum(-1)
                             if value.dim() >= -dim else value)
    return total


@torch.no_grad()
def _posterior_panel(vae, x, site, draws, seed):
    """(draws from q(z|x), shape (D, 2)) for one example ``x`` (shape (1, ...))."""
    from pyro import poutine
    import pyro

    with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        trace = poutine.trace(pyro.plate("draws", draws, dim=-2)(vae.guide)).get_trace(x)
    return trace.nodes[site]["value"].reshape(draws, -1)


@torch.no_grad()
def _log_joint_on_grid(vae, x, site, points):
    """log p(x, z) at each of ``points`` (G, 2), from the model's trace with its latent site set."""
    from pyro import poutine
    import pyro

    conditioned = poutine.condition(pyro.plate("grid", len(points), dim=-2)(vae.model),
                                    data={site: points.reshape(len(points), 1, -1)})
    with pyro.validation_enabled(False):
        trace = poutine.trace(conditioned).get_trace(x)
    return _site_log_prob_sum(trace).reshape(len(points))


@torch.no_grad()
def posterior(vaes, x, examples=4, draws=300, grid=70, seed=0, site="z", title=None):
    """For a 2-D latent: per example (rows) and model (columns, ``vaes`` a model or a dict of name
    -> model, e.g. one per guide family), draws from q(z|x) over the contours of the true posterior
    p(z|x), which a 2-D latent allows exactly: log p(x, z) on a grid, from the model's trace with
    its latent site set. The contours are at 1, 2 and 3 standard deviations' worth of density
    below the mode (log p(x, z) = max - 0.5, 2, 4.5)."""
    vaes = vaes if isinstance(vaes, dict) else {type(vaes).__name__: vaes}
    columns = list(vaes.items())
    fig = Figure(figsize=(2.6 * len(columns), 2.5 * examples + 0.5))
    axes = fig.subplots(examples, len(columns), squeeze=False)
    for row in range(examples):
        example = x[row:row + 1]
        samples = {name: _posterior_panel(vae, example.to(vae.device), site, draws, seed + row).cpu()
                   for name, vae in columns}
        for name, z in samples.items():
            if z.shape[-1] != 2:
                raise ValueError(f"the posterior picture is drawn for a 2-D latent; {name}'s has {z.shape[-1]}")
        for col, (name, vae) in enumerate(columns):  # each model its own latent space: its own grid
            ax, z = axes[row][col], samples[name]
            # the grid spans q's draws and the true posterior's mass, found on a coarse grid over the
            # prior's bulk (a q that misses the posterior must not hide it)
            coarse = torch.linspace(-4.5, 4.5, 60)
            wide = torch.stack(torch.meshgrid(coarse, coarse, indexing="xy"), -1).reshape(-1, 2)
            wide = torch.cat([wide, z])
            wide_log = _log_joint_on_grid(vae, example.to(vae.device), site, wide.to(vae.device, vae.dtype)).cpu()
            mass = wide[wide_log > wide_log.max() - 6.0]
            region = torch.cat([mass, z.quantile(0.005, 0)[None], z.quantile(0.995, 0)[None]])
            low, high = region.min(0).values, region.max(0).values
            pad = 0.3 * (high - low).clamp_min(0.05)
            u = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), grid)
            v = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), grid)
            points = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)
            log_joint = _log_joint_on_grid(vae, example.to(vae.device), site,
                                           points.to(vae.device, vae.dtype)).cpu().reshape(grid, grid)
            top = float(log_joint.max())
            ax.contour(u.numpy(), v.numpy(), log_joint.numpy(), levels=[top - 4.5, top - 2.0, top - 0.5], colors="k",
                       linewidths=0.8)
            ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.35, color=colormaps["tab10"](col % 10))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
    fig.suptitle(title or "q(z|x) draws (dots) over the true posterior p(z|x) (contours), one test image a row",
                 fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, path, dpi=110):
    """Writes the figure as PNG atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)
