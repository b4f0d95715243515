#!/usr/bin/env python
"""Peer: PyTorch-VAE's VanillaVAE (AntixK/PyTorch-VAE, models/vanilla_vae.py) at 64x64 colour,
trained from a folder of PNGs the way a PyTorch user does.

Network: encoder = five Conv2d(3x3, stride 2, padding 1) of 32, 64, 128, 256, 512 channels,
each + BatchNorm2d + LeakyReLU, flatten (512 x 2 x 2) -> Linear mu and log-variance (128);
decoder = Linear(128 -> 512 x 4) -> (512, 2, 2) -> four ConvTranspose2d(3x3, stride 2,
padding 1, output_padding 1) 512 -> 256 -> 128 -> 64 -> 32, each + BatchNorm2d + LeakyReLU,
then ConvTranspose2d(32 -> 32, the same) + BatchNorm2d + LeakyReLU + Conv2d(32 -> 3, 3x3) +
Tanh. Loss = MSE(recons, x) (mean over pixels) + kld_weight * batch-mean KL, kld_weight =
batch / n_train (PyTorch-VAE's M_N). Adam, batch 64, shuffled every epoch.

Data: torchvision's ``ImageFolder`` (PIL loader, ``ToTensor``) and a ``DataLoader`` with
``--workers`` processes (default: os.cpu_count()). torchvision 0.28.0 with the CPU build of
torch 2.13.0 fails to import on some machines (its compiled ops do not load: "operator
torchvision::nms does not exist"); then the same work per image is done by ``FolderDataset``
below (sorted class folders, ``PIL.Image.open(path).convert("RGB")``, uint8 HWC -> float
CHW / 255), and the record says which ran (``loader``).

The last line printed is one JSON object (the fields of scripts/peers/_protocol.py, with
``test_mse`` for the test negative ELBO: the MSE of the reconstruction at z = mu, eval mode).
This script needs torch; it is a benchmark, not a kvae dependency.

    python scripts/peers/pytorch_vae_folder.py /tmp/photos64 --epochs 3
    python scripts/peers/pytorch_vae_folder.py /tmp/photos64 --pipeline-only   # loader alone
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def image_folder_class(torch):
    """(the Dataset class, the loader's name): torchvision's ImageFolder with ToTensor when
    torchvision imports, else FolderDataset doing the same per image."""
    try:
        from torchvision import datasets, transforms

        def make(root):
            return datasets.ImageFolder(root, transform=transforms.ToTensor())

        return make, "torchvision.datasets.ImageFolder + ToTensor"
    except Exception as err:  # noqa: BLE001 - any failure of torchvision's import
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    import numpy as np
    from PIL import Image

    class FolderDataset(torch.utils.data.Dataset):
        """ImageFolder's work per image: sorted class folders, PIL RGB, ToTensor."""

        def __init__(self, root):
            root = pathlib.Path(root)
            self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
            self.samples = [
                (str(path), label)
                for label, name in enumerate(self.classes)
                for path in sorted((root / name).rglob("*"))
                if path.suffix.lower() in EXTENSIONS
            ]

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, index):
            path, label = self.samples[index]
            with open(path, "rb") as f:
                image = Image.open(f).convert("RGB")
            array = torch.from_numpy(np.array(image, np.uint8, copy=True))
            return array.permute(2, 0, 1).contiguous().float().div(255), label

    return FolderDataset, f"PIL FolderDataset (torchvision failed to import: {reason})"


def build(torch, latent_dim=128, hidden=(32, 64, 128, 256, 512)):
    nn = torch.nn

    def block(layer):
        return [layer, nn.BatchNorm2d(layer.out_channels), nn.LeakyReLU()]

    class VanillaVAE(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for h in hidden:
                layers += block(nn.Conv2d(c, h, 3, stride=2, padding=1))
                c = h
            self.encoder = nn.Sequential(*layers)
            self.fc_mu = nn.Linear(hidden[-1] * 4, latent_dim)
            self.fc_var = nn.Linear(hidden[-1] * 4, latent_dim)
            self.decoder_input = nn.Linear(latent_dim, hidden[-1] * 4)
            rev = list(reversed(hidden))
            layers = []
            for a, b in zip(rev[:-1], rev[1:], strict=True):
                layers += block(nn.ConvTranspose2d(a, b, 3, 2, padding=1, output_padding=1))
            self.decoder = nn.Sequential(*layers)
            self.final_layer = nn.Sequential(
                *block(nn.ConvTranspose2d(rev[-1], rev[-1], 3, 2, padding=1, output_padding=1)),
                nn.Conv2d(rev[-1], 3, 3, padding=1),
                nn.Tanh(),
            )

        def encode(self, x):
            h = torch.flatten(self.encoder(x), start_dim=1)
            return self.fc_mu(h), self.fc_var(h)

        def decode(self, z):
            h = self.decoder_input(z).view(-1, hidden[-1], 2, 2)
            return self.final_layer(self.decoder(h))

        def forward(self, x):
            mu, log_var = self.encode(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
            return self.decode(z), mu, log_var

    return VanillaVAE()


def loss_function(torch, recons, x, mu, log_var, kld_weight):
    mse = torch.nn.functional.mse_loss(recons, x)
    kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    return mse + kld_weight * kld


def peak_rss_mb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024.0


def step_flops(torch, model, batch_size, kld_weight):
    """FLOPs of one training step (forward + backward) by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch_size, 3, 64, 64)
    counter = FlopCounterMode(display=False)
    with counter:
        recons, mu, log_var = model(x)
        loss_function(torch, recons, x, mu, log_var, kld_weight).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def loader_for(torch, dataset, args, shuffle, seed):
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=shuffle,
        num_workers=args.workers,
        persistent_workers=args.workers > 0 and shuffle,
        generator=generator,
    )


def pipeline_only(torch, train_set, args, fields):
    """Decoded images/s of the DataLoader alone (the first batch, with the workers' start,
    not counted)."""
    loader = loader_for(torch, train_set, args, True, args.seed)
    count, t0 = 0, None
    for i, (x, _) in enumerate(loader):
        if i == 0:
            t0 = time.perf_counter()
            continue
        count += x.shape[0]
        if args.max_steps and i >= args.max_steps:
            break
    seconds = time.perf_counter() - t0
    return {**fields, "images": count, "seconds": seconds, "images_per_sec": count / seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a folder with train/ and test/, each of class sub-folders")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps")
    p.add_argument("--pipeline-only", action="store_true", help="time the DataLoader alone")
    p.add_argument("--no-flops", action="store_true", help="skip counting a step's FLOPs")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("Expected --epochs >= 1, --batch-size >= 1 and --workers >= 0.")

    import torch

    torch.manual_seed(args.seed)
    make_dataset, loader_name = image_folder_class(torch)
    root = pathlib.Path(args.folder)
    train_set, test_set = make_dataset(root / "train"), make_dataset(root / "test")
    fields = {
        "script": "pytorch_vae_folder",
        "framework": f"torch {torch.__version__}",
        "loader": loader_name,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "n_train": len(train_set),
        "n_test": len(test_set),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.pipeline_only:
        print(json.dumps(pipeline_only(torch, train_set, args, fields)), flush=True)
        return 0

    model = build(torch, args.latent_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    kld_weight = args.batch_size / len(train_set)  # PyTorch-VAE's M_N
    loader = loader_for(torch, train_set, args, True, args.seed)
    t0, ends, steps = time.perf_counter(), [], 0
    for _ in range(args.epochs):
        model.train()
        for i, (x, _) in enumerate(loader):
            recons, mu, log_var = model(x)
            loss = loss_function(torch, recons, x, mu, log_var, kld_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if args.max_steps and i + 1 >= args.max_steps:
                break
        ends.append(time.perf_counter())
    n_epoch = min(len(train_set), args.max_steps * args.batch_size or len(train_set))
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, _ in loader_for(torch, test_set, args, False, args.seed):
            mu, _ = model.encode(x)
            total += float(torch.sum((model.decode(mu) - x) ** 2))
            count += x.numel()
    peak = peak_rss_mb()
    seconds = [b - a for a, b in zip([t0, *ends], ends, strict=False)]
    later = seconds[1:]
    record = {
        **fields,
        "jit_compile": False,
        "epochs": args.epochs,
        "lr": args.lr,
        "kld_weight": kld_weight,
        "n_params": sum(q.numel() for q in model.parameters()),
        "epoch_seconds": seconds,
        "samples_per_sec": len(later) * n_epoch / sum(later) if later else None,
        "median_epoch_samples_per_sec": n_epoch / statistics.median(later) if later else None,
        "test_mse": total / count,
        "final_train_loss": loss.item(),
        "peak_rss_mb": peak,  # this process only; the driver measures the process tree
        "peak_rss_mb_largest_child": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "step_flops": None if args.no_flops else step_flops(torch, model, 64, kld_weight),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
