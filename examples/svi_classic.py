"""The line every Pyro tutorial writes: ``SVI(model, guide, pyro.optim.Adam(...), ELBO)``.

The VAE's ``model`` and ``guide`` register its networks with Pyro (``pyro.module``, as Pyro's own
VAE example does), so the classic interface finds and trains them; any Pyro ELBO works, Pyro's own
or pyrovae's (here IWAE with the doubly reparameterized gradient).

    PYROVAE_DATA=../shared/data python examples/svi_classic.py
"""

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

import pyrovae
from smoke import budget


def main():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = pyrovae.datasets.load("mnist", split="train").data
    steps = budget(1000, 20)
    for elbo in (Trace_ELBO(), pyrovae.make_elbo("iwae", num_particles=5, estimator="dreg")):
        vae = pyrovae.VAE((1, 28, 28), latent_dim=10, hidden=(400,))
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        for step in range(1, steps + 1):
            x = data[torch.randint(0, len(data), (128,))].bernoulli()  # dynamic binarization
            loss = svi.step(x)
            if step % max(1, steps // 5) == 0:
                print(f"{type(elbo).__name__} step {step}: objective {-loss / len(x):.2f} nats per image")
        x = data[:500].bernoulli()
        print(f"  test ELBO after {steps} steps: {float(pyrovae.elbo(vae, x, num_particles=10, seed=0).mean()):.2f} nats")


if __name__ == "__main__":
    main()
