"""AIS's annealed target at one latent point: what the estimator (:mod:`pyrovae.estimate.ais`)
reads of the path of densities

    log f_b(z) = log pi_0(z) + b [log p(x, z) - log pi_0(z)],    0 <= b <= 1,

and what a model's optimized target (the protocol's ``fast_ais_target``) returns in its place.
Here, below both, so that a model offers its target without knowing the estimator.
"""

import torch

__all__ = ["Point", "per_site"]


def per_site(tensor, value):
    """A (C, N) tensor viewed to broadcast against a site's value, shape ``(C, N, *event)``."""
    return tensor.reshape(tensor.shape + (1,) * (value.dim() - 2))


class Point:
    """log pi_0(z) (``base``) and log p(x, z) (``joint``), each ``(C, N)``, and their gradients in
    z (dicts of site -> ``(C, N, *event)``) at one z: log f_b = base + b (joint - base) and its
    gradient for every b without another evaluation (f_b is linear in b)."""

    __slots__ = ("base", "joint", "grad_base", "grad_joint")

    def __init__(self, base, joint, grad_base, grad_joint):
        self.base, self.joint, self.grad_base, self.grad_joint = base, joint, grad_base, grad_joint

    @property
    def g(self):
        """log p(x, z) - log pi_0(z): the increment of the log weight per unit of b."""
        return self.joint - self.base

    def log_f(self, beta):
        return self.base + beta * (self.joint - self.base)

    def grad(self, beta):
        return {name: value + beta * (self.grad_joint[name] - value) for name, value in self.grad_base.items()}

    def where(self, accepted, other):
        """Per (chain, example): ``other``'s values where ``accepted``, this point's elsewhere."""
        def pick(mine, theirs):
            return {name: torch.where(per_site(accepted, value), theirs[name], value) for name, value in mine.items()}
        return Point(torch.where(accepted, other.base, self.base), torch.where(accepted, other.joint, self.joint),
                     pick(self.grad_base, other.grad_base), pick(self.grad_joint, other.grad_joint))
