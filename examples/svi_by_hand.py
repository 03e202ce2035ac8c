"""The VAE's model and guide are ordinary Pyro programs: train them with Pyro's ELBO called as a
module and a plain torch optimizer, the idiom Pyro recommends for nn.Module models, without
pyrovae.fit.

    PYROVAE_DATA=../shared/data python examples/svi_by_hand.py
"""

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

import pyrovae
from smoke import budget


def main():
    pyro.set_rng_seed(0)
    data = pyrovae.datasets.load("mnist", split="train").data
    vae = pyrovae.VAE((1, 28, 28), latent_dim=10, hidden=(400,))
    loss_fn = TraceMeanField_ELBO()(vae.model, vae.guide)  # an nn.Module: loss_fn(x) = -ELBO
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    steps = budget(1000, 20)
    for step in range(1, steps + 1):
        x = torch.bernoulli(data[torch.randint(0, len(data), (128,))])  # dynamic binarization
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 5) == 0:
            print(f"step {step}: ELBO {-loss.item() / len(x):.2f} nats per image")
    store = pyro.get_param_store()  # the model and guide registered the module's own tensors there
    assert store.get_param("vae$$$decoder.net.0.weight") is vae.decoder.net[0].weight


if __name__ == "__main__":
    main()
