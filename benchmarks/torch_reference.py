"""PyTorch twin of the SEGAN networks and train step, for benchmarking only.

The same generator (strided-conv encoder, transposed-conv decoder, skips, z,
PReLU, tanh), discriminator (bias-free convs + virtual batch norm with a
reference batch + LeakyReLU 0.3 + 1x1 conv + linear), losses (LSGAN + 100 L1)
and optimiser (RMSprop, decay 0.9) as the JAX code, in PyTorch's NCW layout.
``load_flax_params`` copies Flax parameters in, so both compute the same
numbers (see tests/test_bench.py). torch is imported here at module import:
import this module lazily (``benchmarks.throughput`` does).
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segan_jax.models.generator import decoder_features


def _same_padding(kernel_size: int, stride: int) -> tuple[int, int]:
  """TensorFlow's 'SAME' padding, as layers.same_padding."""
  total = max(kernel_size - stride, 0)
  return (total // 2, total - total // 2)


def _conv_transpose_pad(kernel_size: int, stride: int) -> int:
  """Left padding of lax.conv_transpose(..., 'SAME') (as
  segan_jax.ops.conv.shapes.conv_transpose_same_padding)."""
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil((kernel_size + stride - 2) / 2))


class Conv1D(nn.Module):
  """Strided conv with the JAX layer's 'same' padding (L -> L / stride)."""

  def __init__(self, cin: int, cout: int, kernel_size: int, stride: int,
               bias: bool = True):
    super().__init__()
    self.pad = _same_padding(kernel_size, stride)
    symmetric = self.pad[0] == self.pad[1]
    self.conv = nn.Conv1d(cin, cout, kernel_size, stride,
                          padding=self.pad[0] if symmetric else 0, bias=bias)
    self.symmetric = symmetric
    nn.init.xavier_uniform_(self.conv.weight)
    if bias:
      nn.init.zeros_(self.conv.bias)

  def forward(self, x):
    if not self.symmetric:
      x = F.pad(x, self.pad)
    return self.conv(x)


class ConvTranspose1D(nn.Module):
  """Equals ``lax.conv_transpose(x, w, (stride,), 'SAME')`` (L -> L * stride).

  lax does not flip the kernel; torch's transposed conv is the gradient of a
  conv, so the weights are stored flipped and the padding set to match.
  """

  def __init__(self, cin: int, cout: int, kernel_size: int, stride: int):
    super().__init__()
    self.stride = stride
    # Never negative: lax's left padding is at most kernel_size - 1.
    pad = kernel_size - 1 - _conv_transpose_pad(kernel_size, stride)
    self.conv = nn.ConvTranspose1d(cin, cout, kernel_size, stride,
                                   padding=pad)
    nn.init.xavier_uniform_(self.conv.weight)
    nn.init.zeros_(self.conv.bias)

  def forward(self, x):
    # torch's output is (L-1) s - 2 pad + K long; lax keeps the first L s.
    length = x.shape[-1] * self.stride
    y = self.conv(x)
    return y if y.shape[-1] == length else y[..., :length]


class Generator(nn.Module):
  """Noisy ``[B, T]`` and z ``[B, C_L, T / 2^L]`` -> enhanced ``[B, T]``."""

  def __init__(self, encoder_features: Sequence[int], kernel_size: int = 31,
               stride: int = 2):
    super().__init__()
    self.encoder = nn.ModuleList()
    self.enc_prelu = nn.ModuleList()
    cin = 1
    for f in encoder_features:
      self.encoder.append(Conv1D(cin, f, kernel_size, stride))
      self.enc_prelu.append(nn.PReLU(f, init=0.0))
      cin = f
    skip_widths = list(reversed(encoder_features[:-1])) + [0]
    cin = 2 * encoder_features[-1]
    self.decoder = nn.ModuleList()
    self.dec_prelu = nn.ModuleList()
    out = decoder_features(encoder_features)
    for i, f in enumerate(out):
      self.decoder.append(ConvTranspose1D(cin, f, kernel_size, stride))
      if i < len(out) - 1:
        self.dec_prelu.append(nn.PReLU(f, init=0.0))
      cin = f + skip_widths[i]

  def forward(self, noisy, z):
    h = noisy[:, None, :]
    skips = []
    for conv, act in zip(self.encoder, self.enc_prelu):
      h = conv(h)
      skips.append(h)  # before the PReLU, as the JAX model by default
      h = act(h)
    h = torch.cat([h, z], dim=1)
    skips.pop()
    for i, conv in enumerate(self.decoder):
      h = conv(h)
      if i < len(self.decoder) - 1:
        h = torch.cat([self.dec_prelu[i](h), skips.pop()], dim=1)
    return torch.tanh(h[:, 0])


class VirtualBatchNorm(nn.Module):
  """Same statistics as segan_jax.models.layers.VirtualBatchNorm (NCW)."""

  def __init__(self, features: int, epsilon: float = 1e-5):
    super().__init__()
    self.scale = nn.Parameter(torch.ones(features))
    self.bias = nn.Parameter(torch.zeros(features))
    self.epsilon = epsilon

  def forward(self, reference, x):
    ref_mean = reference.mean(dim=(0, 2), keepdim=True)
    ref_mean_sq = reference.square().mean(dim=(0, 2), keepdim=True)
    coeff = 1.0 / (reference.shape[0] + 1.0)
    mean = coeff * x.mean(dim=2, keepdim=True) + (1 - coeff) * ref_mean
    mean_sq = coeff * x.square().mean(dim=2, keepdim=True) + (
        1 - coeff) * ref_mean_sq
    scale, bias = self.scale[None, :, None], self.bias[None, :, None]

    def normalize(h, mu, mu_sq):
      var = torch.clamp(mu_sq - mu.square(), min=0.0)
      return (h - mu) * torch.rsqrt(var + self.epsilon) * scale + bias

    return normalize(reference, ref_mean, ref_mean_sq), normalize(
        x, mean, mean_sq)


class Discriminator(nn.Module):
  """Pairs ``[B, 2, T]`` and reference ``[N, 2, T]`` -> logits ``[B]``."""

  def __init__(self, features: Sequence[int], window: int,
               kernel_size: int = 31, stride: int = 2,
               negative_slope: float = 0.3):
    super().__init__()
    self.convs = nn.ModuleList()
    self.vbns = nn.ModuleList()
    cin = 2
    for f in features:
      self.convs.append(Conv1D(cin, f, kernel_size, stride, bias=False))
      self.vbns.append(VirtualBatchNorm(f))
      cin = f
    self.negative_slope = negative_slope
    self.conv_out = nn.Conv1d(cin, 1, 1)
    nn.init.xavier_uniform_(self.conv_out.weight)
    nn.init.zeros_(self.conv_out.bias)
    self.logit = nn.Linear(window // stride**len(features), 1)

  def forward(self, pairs, reference, split_reference: bool = False):
    """As segan_jax's Discriminator, split_reference included."""
    n = reference.shape[0]
    ref_h, x_h = reference, pairs
    for conv, vbn in zip(self.convs, self.vbns):
      if split_reference:
        ref_h, x_h = conv(ref_h), conv(x_h)
      else:
        h = conv(torch.cat([ref_h, x_h], dim=0))
        ref_h, x_h = h[:n], h[n:]
      ref_h, x_h = vbn(ref_h, x_h)
      ref_h = F.leaky_relu(ref_h, self.negative_slope)
      x_h = F.leaky_relu(x_h, self.negative_slope)
    h = self.conv_out(x_h)
    return self.logit(h.flatten(1))[:, 0]


def make_models(config) -> tuple[Generator, Discriminator]:
  """G and D of a segan_jax.config.Config (model sizes as in the JAX code)."""
  g = Generator(config.features, config.kernel)
  d = Discriminator(config.features, config.window, config.kernel)
  return g, d


def latent_shape(config) -> tuple[int, int]:
  """z per example, channels first: [C_L, T / 2^L]."""
  return (config.features[-1], config.window // 2**len(config.features))


def _t(a: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


@torch.no_grad()
def load_flax_params(g: Generator, d: Discriminator | None, g_params: Any,
                     d_params: Any = None) -> None:
  """Copies Flax parameters (``params['params']`` trees) into the torch twins."""
  for i, conv in enumerate(g.encoder):
    p = g_params[f'enc_{i}']
    conv.conv.weight.copy_(_t(p['kernel']).permute(2, 1, 0))
    conv.conv.bias.copy_(_t(p['bias']))
    g.enc_prelu[i].weight.copy_(_t(g_params[f'enc_prelu_{i}']['alpha']))
  for i, conv in enumerate(g.decoder):
    p = g_params[f'dec_{i}']
    # lax (K, Cin, Cout), unflipped -> torch (Cin, Cout, K), flipped.
    conv.conv.weight.copy_(_t(p['kernel']).flip(0).permute(1, 2, 0))
    conv.conv.bias.copy_(_t(p['bias']))
    if i < len(g.decoder) - 1:
      g.dec_prelu[i].weight.copy_(_t(g_params[f'dec_prelu_{i}']['alpha']))
  if d is None:
    return
  for i, conv in enumerate(d.convs):
    conv.conv.weight.copy_(_t(d_params[f'conv_{i}']['kernel']).permute(2, 1, 0))
    d.vbns[i].scale.copy_(_t(d_params[f'vbn_{i}']['scale']))
    d.vbns[i].bias.copy_(_t(d_params[f'vbn_{i}']['bias']))
  d.conv_out.weight.copy_(_t(d_params['conv_out']['kernel']).permute(2, 1, 0))
  d.conv_out.bias.copy_(_t(d_params['conv_out']['bias']))
  d.logit.weight.copy_(_t(d_params['logit']['kernel']).T)
  d.logit.bias.copy_(_t(d_params['logit']['bias']))


def autocast(device_type: str, dtype: torch.dtype | None):
  """``torch.autocast`` to ``dtype`` on ``device_type`` ('cpu', 'cuda'), or
  nothing when ``dtype`` is None (the float32 networks as they are)."""
  if dtype is None:
    return contextlib.nullcontext()
  return torch.autocast(device_type, dtype=dtype)


class TrainStep:
  """One SEGAN update as segan_jax.train.train_step: D, then G (RMSprop).

  ``autocast_dtype`` (e.g. torch.bfloat16): the forward passes run under
  `autocast`, as the JAX networks under Config.dtype; the backward passes
  run outside it (PyTorch's recommended use) and the losses in float32, as
  in the JAX step.
  """

  def __init__(self, g: Generator, d: Discriminator, reference: torch.Tensor,
               learning_rate: float = 2e-4, l1_weight: float = 100.0,
               autocast_dtype: torch.dtype | None = None):
    self.g, self.d = g, d
    self.reference = reference  # [N, 2, T]
    self.l1_weight = l1_weight
    self.autocast_dtype = autocast_dtype
    self.g_opt = torch.optim.RMSprop(g.parameters(), lr=learning_rate,
                                     alpha=0.9, eps=1e-8)
    self.d_opt = torch.optim.RMSprop(d.parameters(), lr=learning_rate,
                                     alpha=0.9, eps=1e-8)

  def __call__(self, noisy: torch.Tensor, clean: torch.Tensor,
               z: torch.Tensor) -> dict[str, float]:
    g, d = self.g, self.d
    device_type = self.reference.device.type
    for p in d.parameters():
      p.requires_grad_(True)
    with autocast(device_type, self.autocast_dtype):
      enhanced = g(noisy, z)  # G forward once; its graph serves G's update.
      # D: real and fake pairs in one call (VBN keeps the logits independent).
      signals = torch.cat([clean, enhanced.detach()], dim=0)
      pairs = torch.stack([signals, torch.cat([noisy, noisy], dim=0)], dim=1)
      logits = d(pairs, self.reference).float()
    b = noisy.shape[0]
    d_loss = (logits[:b] - 1).square().mean() + logits[b:].square().mean()
    self.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    self.d_opt.step()
    # G: adversarial through the updated D (no D gradients) + L1.
    for p in d.parameters():
      p.requires_grad_(False)
    with autocast(device_type, self.autocast_dtype):
      fake = d(torch.stack([enhanced, noisy], dim=1), self.reference,
               split_reference=True).float()
    g_adv = (fake - 1).square().mean()
    g_l1 = (enhanced.float() - clean).abs().mean()
    g_loss = g_adv + self.l1_weight * g_l1
    self.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    self.g_opt.step()
    return {'d_loss': d_loss.detach(), 'g_loss': g_loss.detach()}
