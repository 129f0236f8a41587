"""Training chunks per second, data loading included: our UMX versus openunmix's.

Both sides train Open-Unmix's model size on the same synthetic MUSDB-layout data with
the same batch (16 x 6 s by default), MSE on magnitudes and Adam (lr 1e-3, wd 1e-5):

- ours: ``MUSDBDataModule`` (decoded-audio cache) + ``SeparationModule.training_step``;
- peer: ``openunmix.data.MUSDBDataset`` (musdb reads per chunk, gain + channel swap,
  random track mix) + ``openunmix.model.OpenUnmix`` with its STFT front end.

Prints one JSON line per measurement and a final line with the ratio (target >= 1.0).
``--transformers`` adds our transformer models at 30 s and 60 s chunks.

    python benchmarks/train_throughput.py --steps 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from longsep.data.datamodules import MUSDBDataModule
from longsep.data.synth import ensure_dataset
from longsep.models import build_network
from longsep.training.module import SeparationModule


def timed_steps(batches, step, steps: int) -> float:
    """Seconds per step over ``steps`` steps after one warm-up step."""
    iterator = iter(batches)
    step(next(iterator))
    start = time.perf_counter()
    for _ in range(steps):
        step(next(iterator))
    return (time.perf_counter() - start) / steps


def ours(
    root: Path, cache: Path, separator: str, attention, seq_len: float, batch: int, steps: int
):
    dm = MUSDBDataModule(
        str(root), seq_len=seq_len, setup_file="setup.yaml", batch_size=batch,
        samples_per_track=64, cache_dir=str(cache), cache_dtype="float32",
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    model = build_network(separator, attention, seq_len=seq_len)
    module = SeparationModule(model, target="vocals")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-5)

    def step(batch_):
        optimizer.zero_grad()
        module.training_step(batch_, 0).backward()
        optimizer.step()

    module.log = lambda *args, **kwargs: None  # no trainer attached
    return timed_steps(dm.train_dataloader(), step, steps)


def peer(root: Path, seq_len: float, batch: int, steps: int) -> float:
    from openunmix import data, model, transforms

    augment = data.aug_from_str(["gain", "channelswap"])
    dataset = data.MUSDBDataset(
        root=str(root), is_wav=True, subsets="train", split="train", seq_duration=seq_len,
        samples_per_track=64, source_augmentations=augment, random_track_mix=True,
        setup_file="setup.yaml",
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
    stft, _ = transforms.make_filterbanks(n_fft=4096, n_hop=1024, sample_rate=44100.0)
    encoder = torch.nn.Sequential(stft, model.ComplexNorm(mono=False))
    unmix = model.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487)
    optimizer = torch.optim.Adam(unmix.parameters(), lr=1e-3, weight_decay=1e-5)

    def step(batch_):
        x, y = batch_
        optimizer.zero_grad()
        X, Y = encoder(x), encoder(y)
        F.mse_loss(unmix(X), Y).backward()
        optimizer.step()

    return timed_steps(loader, step, steps)


def report(name: str, seq_len: float, batch: int, seconds: float) -> dict:
    row = {
        "benchmark": "train_throughput",
        "model": name,
        "seq_len": seq_len,
        "batch": batch,
        "seconds_per_step": round(seconds, 3),
        "chunks_per_s": round(batch / seconds, 3),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--transformers", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_dataset(Path(tmp) / "synth", n_train=4, n_valid=1, n_test=0, seed=0)
        cache = Path(tmp) / "cache"
        seq, bs, steps = args.seq_len, args.batch, args.steps
        a = report("longsep:umx", seq, bs, ours(root, cache, "umx", None, seq, bs, steps))
        b = report("openunmix:OpenUnmix", seq, bs, peer(root, seq, bs, steps))
        ratio = round(a["chunks_per_s"] / b["chunks_per_s"], 3)
        summary = {"benchmark": "train_throughput", "ratio_ours_over_openunmix": ratio}
        print(json.dumps({**summary, "target": 1.0}), flush=True)
        if args.transformers:
            for separator, attention in [
                ("umx_transformer", "qkvg1D"),
                ("auto_transformer", "mha"),
            ]:
                for seq_len in (30.0, 60.0):
                    seconds = ours(root, cache, separator, attention, seq_len, 1, args.steps)
                    report(f"longsep:{separator}:{attention}", seq_len, 1, seconds)


if __name__ == "__main__":
    main()
