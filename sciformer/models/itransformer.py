"""iTransformer (Liu et al., ICLR 2024) as its reference code defines it, plus an optional quantile head.

Each variate's whole lookback becomes one token (a shared ``Linear(seq_len, d_model)``); calendar features
become extra "covariate" tokens the same way; a post-LN Transformer encoder without positional encoding mixes
the tokens; a shared ``Linear(d_model, pred_len)`` reads every token out and the covariate tokens are dropped.
Nothing depends on the number of variates, so one model serves data sets with different variate counts.

Input ``x`` [B, L, N] (globally standardised), optional ``x_mark`` [B, L, F] time features; output [B, H, N],
or [B, H, N, Q] with ``quantiles`` (one output per quantile level, trained with the pinball loss).

Option ``dataset_tokens`` (off by default; not in the reference): for mixture pretraining, a learned token per
data set of a vocabulary (plus one "unknown data set" token) joins the variate and covariate tokens, so that
attention can condition every variate on which data set it reads; like the covariates it is dropped before
the head. The forward's ``dataset`` [B] gives the ids; without it every sample gets the unknown token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sciformer.errors import ConfigError
from sciformer.kernels.dropout import dropout
from sciformer.kernels.linear import Linear
from sciformer.models.registry import register
from sciformer.models.spec import FamilySpec


@dataclass
class ITransformerConfig:
    seq_len: int = 96            # lookback L
    pred_len: int = 96           # horizon H
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_ff: int = 2048
    dropout: float = 0.1
    activation: str = "gelu"
    use_norm: bool = True        # per-sample, per-variate normalisation of the lookback (Non-stationary Transformer)
    n_time_features: int = 4     # covariate tokens expected in x_mark (4 = hourly features); 0 = none
    quantiles: list[float] = field(default_factory=list)  # empty: point forecast
    dataset_tokens: int = 0      # size of the data-set vocabulary (ids 0..K-1, K = unknown); 0 = no dataset token
    dataset_dropout: float = 0.0  # training only: chance a sample's id becomes the unknown one, which would
    #                               otherwise never be trained and could not serve unseen data sets zero-shot


class Attention(nn.Module):
    """Multi-head full attention over tokens (no mask: every variate sees every variate and covariate)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.query = Linear(d_model, d_model)
        self.key = Linear(d_model, d_model)
        self.value = Linear(d_model, d_model)
        self.out = Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.n_heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        # the reference FullAttention: softmax(scale · q kᵀ), dropout on the weights. Written out: SDPA has no
        # CPU kernel with dropout (its fallback is these ops plus a scaling of q and k and a fully-masked-row
        # check), and ATen's softmax over a last axis of ~10 tokens runs scalar code, 4x slower than the four
        # ops below (the max is a shift the softmax does not depend on, hence detached)
        s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        e = (s - s.amax(-1, keepdim=True).detach()).exp()
        y = dropout(e / e.sum(-1, keepdim=True), self.dropout, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class EncoderLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + FFN(x)). The reference FFN is two kernel-1 Conv1d, i.e.
    two position-wise linear layers (same parameters)."""

    def __init__(self, cfg: ITransformerConfig):
        super().__init__()
        self.attention = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ffn_in = Linear(cfg.d_model, cfg.d_ff)
        self.ffn_out = Linear(cfg.d_ff, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.p = cfg.dropout
        self.act = {"gelu": F.gelu, "relu": F.relu}[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, train = self.p, self.training
        x = self.norm1(x + dropout(self.attention(x), p, train))
        y = dropout(self.ffn_out(dropout(self.act(self.ffn_in(x)), p, train)), p, train)
        return self.norm2(x + y)


class ITransformer(nn.Module):
    config_class = ITransformerConfig
    # no parameter depends on the variates: nothing to match by name
    spec = FamilySpec(
        kind="series",
        adapters=r"^(embed|projection|dataset_embed)\.",
        lora_targets=r"(attention\.(query|key|value|out)|ffn_in|ffn_out)$",
        lr_groups={"embedding_recovery": r"^(embed|projection|dataset_embed)\."},
        no_weight_decay=r"^(embed|dataset_embed)\.weight$",
        blocks=r"layers\.\d+",
    )

    def __init__(self, config: ITransformerConfig):
        super().__init__()
        if config.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be gelu or relu, not {config.activation!r}")
        if any(not 0 < q < 1 for q in config.quantiles):
            raise ValueError(f"quantile levels must lie in (0, 1), got {config.quantiles}")
        if config.dataset_tokens < 0 or not 0 <= config.dataset_dropout <= 1:
            raise ConfigError(f"model_options: dataset_tokens must be ≥ 0 and dataset_dropout in [0, 1], got "
                              f"{config.dataset_tokens} and {config.dataset_dropout}")
        self.config = config
        self.embed = Linear(config.seq_len, config.d_model)  # inverted embedding: a lookback -> a token
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.e_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.n_outputs = max(1, len(config.quantiles))
        self.projection = Linear(config.d_model, config.pred_len * self.n_outputs)
        if config.dataset_tokens:  # created last: the other weights draw the same initial values as without it
            self.dataset_embed = nn.Embedding(config.dataset_tokens + 1, config.d_model)

    def dataset_token(self, dataset: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The [B, 1, D] data-set tokens of ids ``dataset`` [B] (None: the unknown id for every sample)."""
        unknown = self.config.dataset_tokens
        ids = torch.full((batch,), unknown, dtype=torch.long, device=device) if dataset is None else \
            dataset.to(device=device, dtype=torch.long).expand(batch)
        p = self.config.dataset_dropout
        if self.training and p > 0:
            ids = torch.where(torch.rand(batch, device=device) < p, unknown, ids)
        return self.dataset_embed(ids)[:, None]

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                dataset: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        B, L, N = x.shape
        if L != cfg.seq_len:
            raise ValueError(f"lookback {L} != the model's seq_len {cfg.seq_len}")
        if cfg.use_norm:  # per sample and variate; the mean is detached, the std is not (as the reference)
            means = x.mean(1, keepdim=True).detach()
            x = x - means
            stdev = torch.sqrt(torch.var(x, dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = x / stdev
        tokens = x.transpose(1, 2)  # [B, N, L]
        if x_mark is not None and x_mark.shape[-1] > 0:
            tokens = torch.cat([tokens, x_mark.to(x.dtype).transpose(1, 2)], 1)  # [B, N + F, L]
        h = dropout(self.embed(tokens), cfg.dropout, self.training)  # [B, N + F, D]
        if cfg.dataset_tokens:  # read by the variates only through attention; dropped with the covariates
            h = torch.cat([h, self.dataset_token(dataset, B, h.device).to(h.dtype)], 1)  # [B, N + F + 1, D]
        for layer in self.layers:
            h = layer(h)
        out = self.projection(self.norm(h))[:, :N]  # covariate and data-set tokens dropped: [B, N, H * Q]
        out = out.view(B, N, self.n_outputs, cfg.pred_len).permute(0, 3, 1, 2)  # [B, H, N, Q]
        if cfg.use_norm:
            out = out * stdev.unsqueeze(-1) + means.unsqueeze(-1)
        return out if cfg.quantiles else out.squeeze(-1)


# Named sizes: the reference scripts' hyper-parameters per data set and horizon (lookback 96; d_ff = d_model).
_D_MODEL = {
    "etth1": {96: 256, 192: 256, 336: 512, 720: 512},
    "etth2": dict.fromkeys((96, 192, 336, 720), 128),
    "ettm1": dict.fromkeys((96, 192, 336, 720), 128),
    "ettm2": dict.fromkeys((96, 192, 336, 720), 128),
    "weather": dict.fromkeys((96, 192, 336, 720), 512),
    "exchange": dict.fromkeys((96, 192, 336, 720), 128),
}
_E_LAYERS = {"weather": 3}

register("itransformer", ITransformer)  # run.py defaults: d_model 512, d_ff 2048, 2 layers
register("itransformer-tiny", ITransformer, d_model=32, n_heads=4, e_layers=1, d_ff=32, seq_len=24, pred_len=12)
for _ds, _sizes in _D_MODEL.items():
    for _h, _d in _sizes.items():
        register(f"itransformer-{_ds}-{_h}", ITransformer, seq_len=96, pred_len=_h, d_model=_d, d_ff=_d,
                 n_heads=8, e_layers=_E_LAYERS.get(_ds, 2), dropout=0.1)
