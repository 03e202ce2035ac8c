"""Latent-space arithmetic: the manifold grid, interpolation, attribute vectors. No plotting."""

import torch
from torch.distributions import Normal

__all__ = [
    "grid_coordinates",
    "manifold_latents",
    "principal_axes",
    "interpolate",
    "slerp",
    "attribute_vector",
    "group_mask",
    "stroke_mass",
    "resynthesis_latents",
    "encode_mean",
]


def grid_coordinates(n=20, low=None, high=None):
    """n values linearly spaced on the open interval (0, 1), pushed through the standard Gaussian
    inverse CDF: Phi^-1(linspace(low, high, n)), defaults low = 1/(2n), high = 1 - 1/(2n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the grid needs n >= 1 points per side; got n={n!r}")
    low = 0.5 / n if low is None else float(low)
    high = 1 - 0.5 / n if high is None else float(high)
    if not 0 < low <= high < 1:
        raise ValueError(f"grid ends must satisfy 0 < low <= high < 1 (Phi^-1 is infinite at 0 and 1); got {low}, {high}")
    return Normal(0.0, 1.0).icdf(torch.linspace(low, high, n))


def principal_axes(z, k=2):
    """The mean and top-k principal directions (rows, unit length) and their standard deviations."""
    mean = z.mean(0)
    _, s, vh = torch.linalg.svd(z - mean, full_matrices=False)
    return mean, vh[:k], s[:k] / max(len(z) - 1, 1) ** 0.5


def manifold_latents(latent_dim, n=20, dims=None, base=None, axes=None):
    """The (n, n, latent_dim) grid of latent points of AEVB's Figure 4. Row i, column j holds
    z[dims[0]] = c[j], z[dims[1]] = c[n-1-i] (so up is positive), c = ``grid_coordinates(n)``.

    For latent_dim > 2, either name two ``dims`` (the others held at ``base``, default 0), or give
    ``axes = (mean, directions (2, d), stds (2,))`` from :func:`principal_axes` to walk the plane
    of the top two principal axes, each scaled by its standard deviation.
    """
    c = grid_coordinates(n)
    u, v = c.view(1, n).expand(n, n), c.flip(0).view(n, 1).expand(n, n)
    if axes is not None:
        mean, directions, stds = axes
        return mean + u[..., None] * stds[0] * directions[0] + v[..., None] * stds[1] * directions[1]
    if dims is None:
        if latent_dim != 2:
            raise ValueError(
                f"the latent has {latent_dim} dimensions: choose two with dims=(i, j) "
                "(CLI: --dims i,j) or walk the principal axes (CLI: --pca)"
            )
        dims = (0, 1)
    dims = tuple(int(d) for d in dims)
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < latent_dim for d in dims):
        raise ValueError(f"dims must be two different indices in [0, {latent_dim}); got {dims}")
    z = torch.zeros(n, n, latent_dim) if base is None else torch.as_tensor(base, dtype=torch.float32).expand(n, n, latent_dim).clone()
    z[..., dims[0]] = u
    z[..., dims[1]] = v
    return z


def slerp(z0, z1, t):
    r"""Spherical interpolation: moves along the great circle from z0 to z1, with the norm
    interpolated linearly, so :math:`\|z_t\|` stays between :math:`\|z_0\|` and :math:`\|z_1\|`."""
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    u0, u1 = z0 / n0.clamp_min(1e-12), z1 / n1.clamp_min(1e-12)
    omega = torch.arccos((u0 * u1).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    sin = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / sin
    return direction * ((1 - t) * n0 + t * n1)


def interpolate(z0, z1, steps=10, method="linear"):
    """``steps`` points from z0 to z1 (both included): shape ``(steps, *z0.shape)``."""
    if steps < 2:
        raise ValueError(f"interpolation needs steps >= 2; got {steps}")
    t = torch.linspace(0, 1, steps, device=z0.device).view(-1, *[1] * z0.dim())
    if method == "linear":
        return (1 - t) * z0 + t * z1
    if method in ("slerp", "spherical"):
        return slerp(z0.unsqueeze(0), z1.unsqueeze(0), t)
    raise ValueError(f"unknown interpolation {method!r}; choose 'linear' or 'slerp'")


@torch.no_grad()
def encode_mean(vae, x, batch_size=1000):
    """Posterior means mu(x), batched."""
    return torch.cat([vae.encode(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])


def stroke_mass(x):
    """Mean intensity per example: a property that separates thin from thick strokes."""
    return x.flatten(1).mean(1)


def group_mask(x, has=None, labels=None, positive=None, negative=None):
    """Boolean masks (with, without) from a mask, a predicate on x, or labels."""
    if labels is not None:
        if positive is None:
            raise ValueError("labels given without the positive label(s)")
        positive = torch.as_tensor(positive).view(-1)
        with_ = torch.isin(labels, positive)
        without = torch.isin(labels, torch.as_tensor(negative).view(-1)) if negative is not None else ~with_
        return with_, without
    if has is None:
        raise ValueError("give the group as a boolean mask, a predicate, or labels with positive=")
    mask = has(x) if callable(has) else torch.as_tensor(has)
    if mask.dtype != torch.bool or mask.shape != (len(x),):
        raise ValueError(f"the group must be a boolean mask of shape ({len(x)},); got {mask.dtype} {tuple(mask.shape)}")
    return mask, ~mask


def attribute_vector(vae, x, has=None, labels=None, positive=None, negative=None):
    """mean_{x with the property} mu(x) - mean_{x without it} mu(x): the latent direction that
    adds the property (the notes' 'smiling' vector)."""
    with_, without = group_mask(x, has, labels, positive, negative)
    if not bool(with_.any()) or not bool(without.any()):
        raise ValueError(f"both groups need examples; got {int(with_.sum())} with the property and {int(without.sum())} without")
    z = encode_mean(vae, x)
    return z[with_].mean(0) - z[without].mean(0)


def resynthesis_latents(z, vectors, amounts):
    """z + a * v for every a in ``amounts`` (one vector: (len(a), d)), or z + a v1 + b v2 on the
    grid of amounts (two vectors: (len(a), len(a), d))."""
    amounts = torch.as_tensor(amounts, dtype=z.dtype)
    if len(vectors) == 1:
        return z + amounts[:, None] * vectors[0]
    if len(vectors) == 2:
        return z + amounts[:, None, None] * vectors[0] + amounts[None, :, None] * vectors[1]
    raise ValueError(f"resynthesis takes one or two attribute vectors; got {len(vectors)}")
