"""Which latent dimension makes the Frey Face resynthesis grid (the notes' Figure 17.13) work? For
each candidate, a Frey VAE of Kingma & Welling's recipe (``configs/frey-aevb.toml`` but the latent
dimension) is trained, and two things are measured on the held-out faces:

- **recognizable reconstructions**: the mean squared error of the decoded means against the faces;
- **directions that do what they say**: pixel-space logistic classifiers of smiling and of mouth
  open, trained on the labelled frames (``pyrovae.datasets.frey_expressions``), score the neutral,
  mouth-closed test faces moved by each attribute vector (a = 0 is the reconstruction, a = +1 the
  vector's whole length): the attribute's probability should rise along its own vector and the
  other's stay put.

    python benchmarks/frey_attributes.py --dims 2,5,10,20 --epochs 300
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pyrovae  # noqa: E402
from common import machine  # noqa: E402
from pyrovae import datasets, latent  # noqa: E402

AMOUNTS = (0.0, 0.5, 1.0, 1.5, 2.0)


def pixel_classifier(x, labels, steps=500, weight_decay=1e-2):
    """Logistic regression on the pixels of the labelled frames (labels 0/1; -1 left out)."""
    keep = labels >= 0
    features, targets = x[keep].flatten(1), labels[keep].float()
    torch.manual_seed(0)
    model = torch.nn.Linear(features.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(features).squeeze(-1), targets)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float(((model(features).squeeze(-1) > 0).float() == targets).float().mean())
    return (lambda images: torch.sigmoid(model(images.flatten(1)).squeeze(-1)).detach()), accuracy


def measure(dim, epochs, faces, train, test, test_frames, smiling, mouth_open, smile_of, open_of):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 28, 20), latent_dim=dim, hidden=(200,), activation="tanh",
                      likelihood={"kind": "gaussian", "scale": "learned", "mean": "sigmoid"})
    started = time.perf_counter()
    history = pyrovae.fit(vae, train, test=test, epochs=epochs, batch_size=100, lr=3e-3, seed=0, progress=False)
    seconds = time.perf_counter() - started
    vae.eval()
    with torch.no_grad():
        reconstruction = vae.decode(latent.encode_mean(vae, test))
        mse = float(((reconstruction - test) ** 2).mean())
        vectors = {"smiling": latent.attribute_vector(vae, faces, labels=smiling, positive=1, negative=0),
                   "mouth_open": latent.attribute_vector(vae, faces, labels=mouth_open, positive=1, negative=0)}
        calm = torch.tensor([i for i, f in enumerate(test_frames.tolist()) if smiling[f] == 0 and mouth_open[f] == 0])
        z = latent.encode_mean(vae, test[calm])
        moved = {}
        for name, vector in vectors.items():
            for a in AMOUNTS:
                images = vae.decode(z + a * vector)
                moved[f"{name}+{a}"] = {"p_smiling": float(smile_of(images).mean()),
                                        "p_mouth_open": float(open_of(images).mean())}
    return {"latent_dim": dim, "epochs": epochs, "train_seconds": seconds, "test_elbo": history[-1]["test_elbo"],
            "test_mse": mse, "calm_test_faces": len(calm),
            "vector_norms": {k: float(v.norm()) for k, v in vectors.items()}, "moved": moved}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", default="2,5,10,20")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--out", default=str(HERE / "results-frey-attributes-cpu.json"))
    args = parser.parse_args()
    faces = datasets.load("frey", split="all").data
    train, test = datasets.load("frey", split="train"), datasets.load("frey", split="test")
    test_frames = datasets.frey_split_order()[:len(test.data)]
    smiling, mouth_open = datasets.frey_expressions()
    smile_of, smile_accuracy = pixel_classifier(faces, smiling)
    open_of, open_accuracy = pixel_classifier(faces, mouth_open)
    print(f"pixel classifiers' training accuracy: smiling {smile_accuracy:.3f}, mouth open {open_accuracy:.3f}")
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        row = measure(dim, args.epochs, faces, train, test.data, test_frames, smiling, mouth_open, smile_of, open_of)
        rows.append(row)
        m = row["moved"]
        smile = " -> ".join(f"{m[f'smiling+{a}']['p_smiling']:.2f}" for a in AMOUNTS)
        opened = " -> ".join(f"{m[f'mouth_open+{a}']['p_mouth_open']:.2f}" for a in AMOUNTS)
        print(f"d={dim:>2}: test ELBO {row['test_elbo']:8.1f}, MSE {row['test_mse']:.4f}; a = {list(AMOUNTS)}: "
              f"P(smiling) {smile} (its P(open) at a = 1: {m['smiling+1.0']['p_mouth_open']:.2f}); P(open) {opened} "
              f"(its P(smiling) at a = 1: {m['mouth_open+1.0']['p_smiling']:.2f}); {row['train_seconds']:.0f} s",
              flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "classifier_accuracy": {
        "smiling": smile_accuracy, "mouth_open": open_accuracy}, "amounts": AMOUNTS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
