"""The Asteroid model zoo in PyTorch, layer for layer as compute/layers.cpp.

Every model is an nn.Sequential of the zoo's named layers (a residual block is
one layer). Initialisation follows compute/layers.cpp exactly: layer i draws
from its own torch.Generator seeded with mix_seed(seed, 0x4c41594552, i), in
module order, so the initial weights equal the C++ runtime's (same Torch
kernels, same generator). Two performance workarounds of the C++ code are
kept, because Debian's libtorch is the same library here:

- linear layers run through oneDNN's inner product (mkldnn_linear) instead of
  the reference BLAS (docs/compute.md, "Performance notes");
- a one-sample batch of a small convolution runs as two copies (libtorch's
  slow_conv2d path otherwise).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def mix_seed(seed, a, b=0):
    return splitmix64(splitmix64(splitmix64(seed) ^ ((a + 0x632BE59BD9B4E019) & MASK64))
                      ^ ((b + 0xD1B54A32D192ED03) & MASK64))


USE_MKLDNN_LINEAR = torch.backends.mkldnn.is_available()


def linear(l, x):
    if not USE_MKLDNN_LINEAR:
        return F.linear(x, l.weight, l.bias)
    shape = list(x.shape)
    n_in = shape[-1]
    shape[-1] = l.weight.shape[0]
    y = torch._C._nn.mkldnn_linear(x.reshape(-1, n_in).contiguous().to_mkldnn(), l.weight, l.bias)
    return y.to_dense().view(shape)


def conv2d(c, x):
    k, s = c.kernel_size, c.stride
    pointwise = k == (1, 1) and s == (1, 1)
    if x.dim() == 4 and x.shape[0] == 1 and c.groups == 1 and x.numel() <= 20480 and not pointwise:
        return c(x.expand(2, *x.shape[1:])).narrow(0, 0, 1)
    return c(x)


def act(x, a):
    if a == "relu":
        return F.relu(x)
    if a == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if a == "silu":
        return F.silu(x)
    return x


GROUPS = 8


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel=3, stride=1, norm=False, a="relu", pool=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not norm)
        if norm:
            self.norm = nn.GroupNorm(GROUPS, cout)
        self.has_norm, self.a, self.pool = norm, a, pool

    def forward(self, x):
        y = conv2d(self.conv, x)
        if self.has_norm:
            y = self.norm(y)
        y = act(y, self.a)
        return F.max_pool2d(y, 2) if self.pool else y


class MaxPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2)


class Dense(nn.Module):
    def __init__(self, cin, cout, a):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.a = a

    def forward(self, x):
        return act(linear(self.fc, x.flatten(1)), self.a)


class PoolClassifier(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return linear(self.fc, x.mean((2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.norm = norm
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=not norm)
        if norm:
            self.gn1 = nn.GroupNorm(GROUPS, cout)
            self.gn2 = nn.GroupNorm(GROUPS, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=not norm)
            if norm:
                self.gns = nn.GroupNorm(GROUPS, cout)

    def zero_branch(self):
        with torch.no_grad():
            if self.norm:
                self.gn2.weight.zero_()
            else:
                self.conv2.weight.zero_()
                self.conv2.bias.zero_()

    def forward(self, x):
        y = conv2d(self.conv1, x)
        if self.norm:
            y = self.gn1(y)
        y = conv2d(self.conv2, F.relu(y))
        if self.norm:
            y = self.gn2(y)
        s = x
        if self.shortcut is not None:
            s = conv2d(self.shortcut, x)
            if self.norm:
                s = self.gns(s)
        return F.relu(y + s)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, kernel, a, squeeze_excite):
        super().__init__()
        self.a = a
        self.residual = stride == 1 and cin == cout
        hidden = cin * expand
        self.expand = None
        if expand != 1:
            self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
            self.gn_e = nn.GroupNorm(GROUPS, hidden)
        self.dw = nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False)
        self.gn_d = nn.GroupNorm(GROUPS, hidden)
        self.se_reduce = None
        if squeeze_excite:
            squeezed = max(1, cin // 4)
            self.se_reduce = nn.Conv2d(hidden, squeezed, 1)
            self.se_expand = nn.Conv2d(squeezed, hidden, 1)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.gn_p = nn.GroupNorm(GROUPS, cout)

    def zero_branch(self):
        with torch.no_grad():
            if self.residual:
                self.gn_p.weight.zero_()

    def forward(self, x):
        y = x
        if self.expand is not None:
            y = act(self.gn_e(conv2d(self.expand, y)), self.a)
        y = act(self.gn_d(conv2d(self.dw, y)), self.a)
        if self.se_reduce is not None:
            s = y.mean((2, 3), keepdim=True)
            s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(s))))
            y = y * s
        y = self.gn_p(conv2d(self.project, y))
        return y + x if self.residual else y


class Embeddings(nn.Module):
    def __init__(self, vocab, seq, hidden):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(seq, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        pos = torch.arange(x.shape[1], dtype=torch.long)
        return self.norm(self.tokens(x) + self.positions(pos).unsqueeze(0))


class EncoderLayer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff1 = nn.Linear(hidden, ffn)
        self.ff2 = nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        n, s, h = x.shape
        d = h // self.heads
        qkv = linear(self.qkv, x).view(n, s, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d), -1)
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(n, s, h)
        y = self.norm1(x + linear(self.out, ctx))
        return self.norm2(y + linear(self.ff2, F.gelu(linear(self.ff1, y))))


class BertHead(nn.Module):
    def __init__(self, hidden, classes):
        super().__init__()
        self.pooler = nn.Linear(hidden, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return linear(self.fc, torch.tanh(linear(self.pooler, x.select(1, 0))))


# name -> (input kind, sample shape, classes, data set)
SPECS = {
    "fmnist-cnn": ("image", (1, 28, 28), 10, "fashion-mnist"),
    "fmnist-resnet": ("image", (1, 28, 28), 10, "fashion-mnist"),
    "mobilenetv2": ("image", (3, 32, 32), 10, "synthetic-images"),
    "resnet18": ("image", (3, 32, 32), 10, "synthetic-images"),
    "efficientnet-b0": ("image", (3, 32, 32), 10, "synthetic-images"),
    "bert-small": ("tokens", (128,), 2, "synthetic-tokens"),
}
VOCAB = 30522

# Parameter counts of docs/compute.md (checked by bench/report/test_report.py).
PARAMETERS = {
    "fmnist-cnn": 421642, "fmnist-resnet": 677482, "mobilenetv2": 2236682,
    "resnet18": 11173962, "efficientnet-b0": 4020358, "bert-small": 28567042,
}


def _layers(name):
    if name == "fmnist-cnn":
        return [("conv1", ConvBlock(1, 32)), ("pool1", MaxPool()), ("conv2", ConvBlock(32, 64)),
                ("pool2", MaxPool()), ("fc1", Dense(64 * 7 * 7, 128, "relu")), ("fc2", Dense(128, 10, None))]
    if name == "fmnist-resnet":
        return [("stem", ConvBlock(1, 32)), ("block1", BasicBlock(32, 32, 2, False)),
                ("block2", BasicBlock(32, 64, 2, False)), ("block3", BasicBlock(64, 64, 1, False)),
                ("block4", BasicBlock(64, 128, 2, False)), ("block5", BasicBlock(128, 128, 1, False)),
                ("head", PoolClassifier(128, 10))]
    if name == "mobilenetv2":
        out = [("stem", ConvBlock(3, 32, norm=True, a="relu6"))]
        cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
        cin, k = 32, 0
        for t, c, n, s in cfg:
            for i in range(n):
                k += 1
                out.append((f"block{k}", InvertedResidual(cin, c, s if i == 0 else 1, t, 3, "relu6", False)))
                cin = c
        out.append(("head", ConvBlock(320, 1280, kernel=1, norm=True, a="relu6")))
        out.append(("classifier", PoolClassifier(1280, 10)))
        return out
    if name == "resnet18":
        out = [("stem", ConvBlock(3, 64, norm=True))]
        cin, k = 64, 0
        for c in (64, 128, 256, 512):
            for i in range(2):
                k += 1
                out.append((f"block{k}", BasicBlock(cin, c, 2 if (i == 0 and c != 64) else 1, True)))
                cin = c
        out.append(("classifier", PoolClassifier(512, 10)))
        return out
    if name == "efficientnet-b0":
        out = [("stem", ConvBlock(3, 32, norm=True, a="silu"))]
        cfg = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
               (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
        cin, k = 32, 0
        for e, ks, s, c, n in cfg:
            for i in range(n):
                k += 1
                out.append((f"block{k}", InvertedResidual(cin, c, s if i == 0 else 1, e, ks, "silu", True)))
                cin = c
        out.append(("head", ConvBlock(320, 1280, kernel=1, norm=True, a="silu")))
        out.append(("classifier", PoolClassifier(1280, 10)))
        return out
    if name == "bert-small":
        out = [("embeddings", Embeddings(VOCAB, 128, 512))]
        for i in range(4):
            out.append((f"encoder{i + 1}", EncoderLayer(512, 8, 2048)))
        out.append(("classifier", BertHead(512, 2)))
        return out
    raise ValueError(f"unknown model '{name}'; known: {', '.join(SPECS)}")


def _normal_weight_zero_bias(m, std, gen):
    m.weight.normal_(0.0, std, generator=gen)
    if m.bias is not None:
        m.bias.zero_()


def _uniform_fan_in(m, gen):
    """Weight and bias uniform in +-1/sqrt(fan-in) (PyTorch's default)."""
    bound = 1.0 / math.sqrt(m.weight[0].numel())
    m.weight.uniform_(-bound, bound, generator=gen)
    if m.bias is not None:
        m.bias.uniform_(-bound, bound, generator=gen)


def _initialise(layer, policy, gen):
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, nn.Conv2d):
                if policy == "residual":
                    _normal_weight_zero_bias(m, math.sqrt(2.0 / m.weight[0].numel()), gen)
                else:
                    _uniform_fan_in(m, gen)
            elif isinstance(m, nn.Linear):
                if policy == "bert":
                    _normal_weight_zero_bias(m, 0.02, gen)
                else:
                    _uniform_fan_in(m, gen)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 0.02 if policy == "bert" else 1.0, generator=gen)
            elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
    if policy == "residual" and isinstance(layer, (BasicBlock, InvertedResidual)):
        layer.zero_branch()


def build_model(name, seed=7):
    """The whole model as nn.Sequential of the zoo's named layers, initialised as the runtime does."""
    kind = SPECS[name][0] if name in SPECS else None
    layers = _layers(name)
    policy = "bert" if kind == "tokens" else ("default" if name == "fmnist-cnn" else "residual")
    for i, (_, layer) in enumerate(layers):
        gen = torch.Generator()
        gen.manual_seed(mix_seed(seed, 0x4C41594552, i))
        _initialise(layer, policy, gen)
    seq = nn.Sequential()
    for lname, layer in layers:
        seq.add_module(lname, layer)
    return seq


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def flat_weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
