"""Building blocks of the world model and the actor-critic: MLPs, the BEV conv encoder/decoder,
symlog, two-hot regression and categorical latents with unimix.

Every learnable layer a LoRA adapter may target is an nn.Linear with a stable name (`net.0`, `out`, ...).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def symlog(x):
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x):
    return torch.sign(x) * torch.expm1(torch.abs(x))


class MLP(nn.Module):
    """Linear -> LayerNorm -> SiLU blocks, then a linear output layer `out`."""

    def __init__(self, inp, units, layers, out):
        super().__init__()
        blocks = []
        for i in range(layers):
            blocks += [nn.Linear(inp if i == 0 else units, units), nn.LayerNorm(units), nn.SiLU()]
        self.net = nn.Sequential(*blocks)
        self.out = nn.Linear(units if layers else inp, out)

    def forward(self, x):
        return self.out(self.net(x))


class ConvEncoder(nn.Module):
    """BEV (..., H, W, C) uint8 -> flat embedding. Stride-2 convs halve the size down to 4x4."""

    def __init__(self, bev_shape, depth):
        super().__init__()
        height, width, channels = bev_shape
        assert height == width and height >= 8 and (height & (height - 1)) == 0, bev_shape
        layers, cin, cout = [], channels, depth
        for _ in range(int(math.log2(height)) - 2):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.SiLU()]
            cin, cout = cout, cout * 2
        self.convs = nn.Sequential(*layers)
        self.out_dim = cin * 4 * 4

    def forward(self, bev):
        lead = bev.shape[:-3]
        # Scaled in place on a contiguous copy, then viewed as NCHW: that view is channels-last, the
        # layout the CPU convolutions are fastest in (3x cheaper than scaling the permuted view).
        x = bev.reshape(-1, *bev.shape[-3:]).to(torch.float32, copy=True).div_(255.0).sub_(0.5)
        return self.convs(x.permute(0, 3, 1, 2)).reshape(*lead, self.out_dim)


class ConvDecoder(nn.Module):
    """Latent feature -> predicted BEV (..., H, W, C) in [0, 1] units (pixel / 255).

    Mirror of the encoder with half the channels, to keep the decoder cheap on CPU."""

    def __init__(self, feat_dim, bev_shape, depth):
        super().__init__()
        height, _, channels = bev_shape
        steps = int(math.log2(height)) - 2
        self.top = depth * 2 ** (steps - 1) // 2
        self.inp = nn.Linear(feat_dim, self.top * 16)
        layers, cin = [], self.top
        for i in range(steps):
            last = i == steps - 1
            cout = channels if last else cin // 2
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1))
            if not last:
                layers.append(nn.SiLU())
            cin = cout
        self.deconvs = nn.Sequential(*layers)

    def forward(self, feat):
        lead = feat.shape[:-1]
        # Channels-last: the CPU transposed convolutions run 2x faster in it, and the (..., H, W, C)
        # output is then a free view.
        x = self.inp(feat).reshape(-1, self.top, 4, 4).contiguous(memory_format=torch.channels_last)
        x = self.deconvs(x).permute(0, 2, 3, 1)
        return x.reshape(*lead, *x.shape[1:])


class TwoHot:
    """Regression by classification over bins equally spaced in symlog space (DreamerV3)."""

    def __init__(self, logits, bins):
        self.logits = logits
        self.bins = bins
        self.log_probs = None  # log-softmax of the logits, computed once for all log_prob calls

    def mean(self):
        return symexp((F.softmax(self.logits, -1) * self.bins).sum(-1))

    def log_prob(self, target):
        x = symlog(target).clamp(self.bins[0], self.bins[-1])
        above = torch.searchsorted(self.bins, x.contiguous(), right=True).clamp(1, len(self.bins) - 1)
        below = above - 1
        lo, hi = self.bins[below], self.bins[above]
        w_hi = ((x - lo) / (hi - lo)).clamp(0, 1)
        if self.log_probs is None:
            self.log_probs = F.log_softmax(self.logits, -1)
        log_p = self.log_probs
        return ((1 - w_hi) * log_p.gather(-1, below[..., None])[..., 0]
                + w_hi * log_p.gather(-1, above[..., None])[..., 0])


def symlog_bins(count):
    return torch.linspace(-20.0, 20.0, count)


def unimix_logits(logits, unimix):
    """Mix 1% uniform into a categorical so no class has zero probability (keeps KL finite)."""
    probs = F.softmax(logits, -1)
    probs = (1 - unimix) * probs + unimix / probs.shape[-1]
    return torch.log(probs)


def to_gumbel(uniform):
    """Uniforms in [0, 1) turned into Gumbel noise, in place: −log(−log u)."""
    return uniform.clamp_(1e-20, 1.0).log_().neg_().log_().neg_()


def gumbel(shape, generator=None):
    """Gumbel noise from uniforms drawn from `generator`."""
    return to_gumbel(torch.rand(shape, generator=generator))


def sample_index(logits, generator=None):
    """Categorical sample by the Gumbel-max trick (cheaper on CPU than torch.multinomial)."""
    return (logits + gumbel(logits.shape, generator)).argmax(-1)


def sample_onehot(logits, generator=None):
    """One-hot sample with straight-through gradients."""
    probs = F.softmax(logits, -1)
    onehot = F.one_hot(sample_index(logits, generator), probs.shape[-1]).to(probs.dtype)
    return onehot + probs - probs.detach()


def categorical_kl(logits_p, logits_q):
    """KL(p || q) for categoricals given by log-probabilities, summed over the latent axis (-2)."""
    p = logits_p.exp()
    return (p * (logits_p - logits_q)).sum(-1).sum(-1)


class OneHotLinear:
    """A linear layer on inputs made of a dense block [0, start) and, from `start` on, groups of one-hot
    columns (the categorical latents, the discrete action), computed without building the input.

    Called with columns (N, M) long, the 1s' positions counted from `start`, and the dense part. The bias
    is folded into the rows of the first one-hot group (every input has exactly one 1 there), so one
    embedding_bag gives the one-hot part plus the bias and one addmm the dense part. A peft LoRA layer's
    active adapters are computed the same way on their A matrix, then B and the scaling — or, with
    `adapters_on_input`, from the whole input where the caller has it (under gradients embedding_bag's
    backward costs more than the low-rank matmul). Built from the
    weights as they are, so built again after they change (a decision, a training step); gradients reach
    the weights through the tables."""

    def __init__(self, layer, start, first_group, adapters_on_input=False):
        self.start, self.adapters_on_input = start, adapters_on_input
        base = getattr(layer, 'base_layer', layer)
        if not isinstance(base, nn.Linear):
            raise TypeError(f'OneHotLinear needs an nn.Linear or a LoRA-wrapped one, not {type(layer).__name__}')
        self.base = self.tables(base.weight, base.bias, first_group)
        self.adapters = []
        if base is not layer and not (layer.disable_adapters or layer.merged):
            for name in layer.active_adapters:
                if name in layer.lora_A:
                    a = layer.lora_A[name].weight
                    self.adapters.append((a.t() if adapters_on_input else self.tables(a, None, first_group),
                                          layer.lora_B[name].weight.t() * layer.scaling[name]))

    def tables(self, weight, bias, first_group):
        weight_t = weight.t()
        table = weight_t[self.start:].clone(memory_format=torch.contiguous_format)  # gathered by row
        if bias is not None:
            table[:first_group] += bias
        return weight_t[:self.start], table

    @staticmethod
    def apply(tables, columns, dense, after):
        dense_weight, table = tables
        out = F.embedding_bag(columns, table, mode='sum')
        if dense is not None:
            out = out.addmm(dense, dense_weight)
        if after is not None:
            out = out.addmm(after, table[-after.shape[1]:])
        return out

    def __call__(self, columns, dense=None, after=None, inputs=None):
        """dense: (N, start) values of the dense block; after: (N, W) values of the input's last W
        positions, a dense block after the one-hot groups (a continuous action); inputs: the whole input
        (N, in), which the adapters multiply instead when built with adapters_on_input."""
        out = self.apply(self.base, columns, dense, after)
        for a, scaled_b in self.adapters:
            low_rank = inputs.mm(a) if self.adapters_on_input else self.apply(a, columns, dense, after)
            out = out.addmm(low_rank, scaled_b)
        return out


class OneHotMLP:
    """An MLP on concat(deter, one-hot stoch) whose first layer is a OneHotLinear."""

    def __init__(self, mlp, deter_dim, classes, adapters_on_input=False):
        layers = list(mlp.net) + [mlp.out]
        self.first, self.rest = OneHotLinear(layers[0], deter_dim, classes, adapters_on_input), layers[1:]

    def __call__(self, columns, deter, inputs=None):
        x = self.first(columns, deter, inputs=inputs)
        for layer in self.rest:
            x = layer(x)
        return x
