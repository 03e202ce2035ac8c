"""Semi-supervised M2 (Kingma et al. 2014) the way Pyro's own ss_vae_M2.py trains it: classic SVI,
``TraceEnum_ELBO`` summing the class out of the unlabelled images, and a second SVI over the
classifier program for the auxiliary term on the labelled ones. Prints the test accuracy of
q(y | x) and draws Kingma et al.'s analogies (each row's style with every class).

    PYROVAE_DATA=../shared/data python examples/semi_supervised_m2.py --labels 100 --epochs 10

(``pyrovae train --model m2 --labels 100 --loss trace`` trains the same model with one command.)
"""

import argparse

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from smoke import budget, shrink

import pyrovae
from pyrovae import plots
from pyrovae.models import M2, balanced_labelled_subset


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--aux-weight", type=float, default=46.0)  # Pyro's aux_loss_multiplier
    args = parser.parse_args()
    pyro.set_rng_seed(0)
    train = shrink(pyrovae.datasets.load("mnist", split="train"), 1000)
    test = shrink(pyrovae.datasets.load("mnist", split="test"), 500)
    labelled = balanced_labelled_subset(train.targets.numpy(), args.labels, 10, seed=0)
    x_l, y_l = train.data[labelled], train.targets[labelled]
    m2 = M2((1, 28, 28), latent_dim=50, hidden=budget((500,), (64,)), num_classes=10)
    optimizer = pyro.optim.Adam({"lr": 5e-4})
    unsupervised = SVI(m2.model, m2.guide, optimizer, TraceEnum_ELBO(max_plate_nesting=1))
    supervised = SVI(m2.model, m2.guide, optimizer, Trace_ELBO())
    classifier = SVI(pyro.poutine.scale(m2.classifier_model, scale=args.aux_weight), m2.classifier_guide, optimizer,
                     Trace_ELBO())
    for epoch in range(budget(args.epochs, 1)):
        order = torch.randperm(len(train.data))
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            x = torch.bernoulli(train.data[order[start:start + args.batch_size]])
            pick = torch.randint(len(x_l), (min(args.batch_size, len(x_l)),))
            xl, yl = torch.bernoulli(x_l[pick]), y_l[pick]
            total += unsupervised.step(x) + supervised.step(xl, yl) + classifier.step(xl, yl)
        accuracy = (m2.classify((test.data > 0.5).float()) == test.targets).float().mean().item()
        print(f"epoch {epoch + 1}: loss {total / len(order):.2f}, test accuracy {100 * accuracy:.2f}%", flush=True)
    plots.save(plots.analogies(m2, (test.data[:8] > 0.5).float()), "m2_analogies.png")
    print(f"{args.labels} labels: test accuracy of q(y|x) {100 * accuracy:.2f}%; analogies in m2_analogies.png")


if __name__ == "__main__":
    main()
