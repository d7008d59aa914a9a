"""The runtime's data sets and sample order (compute/dataset.cpp), in numpy.

Fashion-MNIST from Debian's gzip IDX files; synthetic 3x32x32 images and
synthetic token sequences generated on demand from (seed, index) with the same
splitmix64 streams as the C++ code; round_indices with the same Fisher-Yates
over mt19937_64, so round r of any run takes the same samples as Asteroid's.
"""
import gzip
import math
import os
import struct

import numpy as np
import torch

from zoo import MASK64, SPECS, VOCAB, mix_seed

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
U = np.uint64


def _splitmix64_np(x):
    with np.errstate(over="ignore"):
        x = x + U(0x9E3779B97F4A7C15)
        x = (x ^ (x >> U(30))) * U(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U(27))) * U(0x94D049BB133111EB)
        return x ^ (x >> U(31))


def _unit_double_np(bits):
    return (bits >> U(11)).astype(np.float64) * (2.0 ** -53)


def _below_np(bits, n):
    with np.errstate(over="ignore"):
        return ((bits >> U(32)) * U(n)) >> U(32)


class Mt19937_64:
    """std::mt19937_64 (its output sequence is fixed by the C++ standard)."""

    def __init__(self, seed):
        mt = [0] * 312
        mt[0] = seed & MASK64
        for i in range(1, 312):
            mt[i] = (6364136223846793005 * (mt[i - 1] ^ (mt[i - 1] >> 62)) + i) & MASK64
        self.mt, self.i = mt, 312

    def _twist(self):
        mt = self.mt
        for i in range(312):
            x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % 312] & 0x7FFFFFFF)
            y = x >> 1
            if x & 1:
                y ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + 156) % 312] ^ y
        self.i = 0

    def __call__(self):
        if self.i >= 312:
            self._twist()
        x = self.mt[self.i]
        self.i += 1
        x ^= (x >> 29) & 0x5555555555555555
        x ^= (x << 17) & 0x71D67FFFEDA60000
        x ^= (x << 37) & 0xFFF7EEE000000000
        x ^= x >> 43
        return x & MASK64


_orders = {}


def epoch_order(n, seed, epoch):
    key = (n, seed, epoch)
    if key not in _orders:
        order = list(range(n))
        rng = Mt19937_64(mix_seed(seed, 0x45504F4348, epoch))
        for i in range(n - 1, 0, -1):
            j = rng() % (i + 1)
            order[i], order[j] = order[j], order[i]
        _orders.clear()
        _orders[key] = np.array(order, dtype=np.int64)
    return _orders[key]


def round_indices(n, batch, seed, rnd):
    per_epoch = n // batch
    order = epoch_order(n, seed, rnd // per_epoch)
    start = (rnd % per_epoch) * batch
    return order[start:start + batch]


def _read_idx(path, dims):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (Debian package dataset-fashion-mnist)")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x800 + dims:
        raise ValueError(f"{path}: bad IDX magic {magic}")
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated")
    return data.reshape(shape)


class FashionMnist:
    def __init__(self, train, data_dir=FMNIST_DIR):
        prefix = os.path.join(data_dir, "train" if train else "t10k")
        self.images = _read_idx(prefix + "-images-idx3-ubyte.gz", 3)
        self.labels = _read_idx(prefix + "-labels-idx1-ubyte.gz", 1).astype(np.int64)
        self.size = len(self.labels)

    def get(self, idx):
        x = self.images[idx].astype(np.float32)
        x = (x / np.float32(255.0) - np.float32(0.2860)) / np.float32(0.3530)
        return torch.from_numpy(x.reshape(len(idx), 1, 28, 28)), torch.from_numpy(self.labels[idx])


class SyntheticImages:
    def __init__(self, set_seed, seed, size, shape=(3, 32, 32), classes=10):
        self.seed, self.size, self.shape, self.classes = seed, size, shape, classes
        c, h, w = shape
        self.per_sample = c * h * w
        t = np.empty((classes, c, h, w), dtype=np.float32)
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        from zoo import splitmix64
        for k in range(classes):
            for ch in range(c):
                s = mix_seed(set_seed, 0x54454D50, k * c + ch)
                fx = 0.1 + 0.5 * ((splitmix64((s + 1) & MASK64) >> 11) * 2.0 ** -53)
                fy = 0.1 + 0.5 * ((splitmix64((s + 2) & MASK64) >> 11) * 2.0 ** -53)
                phase = 6.283185307179586 * ((splitmix64((s + 3) & MASK64) >> 11) * 2.0 ** -53)
                offset = 2.0 * ((splitmix64((s + 4) & MASK64) >> 11) * 2.0 ** -53) - 1.0
                t[k, ch] = (offset + np.sin(fx * xs + fy * ys + phase)).astype(np.float32)
        self.templates = t.reshape(classes, -1)

    def get(self, idx):
        n = len(idx)
        s = np.array([mix_seed(self.seed, 0x53414D50, int(i)) for i in idx], dtype=np.uint64)
        labels = _below_np(_splitmix64_np(s), self.classes).astype(np.int64)
        j = np.arange(self.per_sample, dtype=np.uint64)
        with np.errstate(over="ignore"):
            a = _splitmix64_np(s[:, None] + U(2) * j[None, :] + U(1))
            b = _splitmix64_np(s[:, None] + U(2) * j[None, :] + U(2))
        u1 = 1.0 - _unit_double_np(a)
        u2 = _unit_double_np(b)
        g = (np.sqrt(-2.0 * np.log(u1)) * np.cos(6.283185307179586 * u2)).astype(np.float32)
        x = self.templates[labels] + np.float32(0.5) * g
        return torch.from_numpy(x.reshape(n, *self.shape)), torch.from_numpy(labels)


class SyntheticTokens:
    def __init__(self, seed, size, seq=128, vocab=VOCAB, classes=2):
        self.seed, self.size, self.seq, self.vocab, self.classes = seed, size, seq, vocab, classes

    def get(self, idx):
        n = len(idx)
        s = np.array([mix_seed(self.seed, 0x544F4B, int(i)) for i in idx], dtype=np.uint64)
        labels = _below_np(_splitmix64_np(s), self.classes).astype(np.int64)
        j = np.arange(1, self.seq, dtype=np.uint64)
        with np.errstate(over="ignore"):
            r = _splitmix64_np(s[:, None] + j[None, :])
        signal = (r & U(3)) == U(0)
        kw = U(1000) + labels.astype(np.uint64)[:, None] * U(50) + _below_np(r, 50)
        other = U(1000) + _below_np(r, self.vocab - 1000)
        x = np.empty((n, self.seq), dtype=np.int64)
        x[:, 0] = 101
        x[:, 1:] = np.where(signal, kw, other).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(labels)


def open_dataset(model, train, data_dir=FMNIST_DIR):
    ds = SPECS[model][3]
    if ds == "fashion-mnist":
        return FashionMnist(train, data_dir)
    if ds == "synthetic-images":
        return SyntheticImages(0x1111, 0x1112 if train else 0x2222, 50000 if train else 10000, SPECS[model][1])
    return SyntheticTokens(0x3333 if train else 0x4444, 50000 if train else 1000)
