"""Graph transformer for property prediction over 3D radius graphs (molecules and crystals).

GPS-style (Rampášek et al.; ``torch_geometric.nn.GPSConv``): each layer adds a local message-passing update
(GINEConv with edge features from Gaussian radial basis functions of the interatomic distance) and a global
multi-head self-attention update over all atoms of the system. The graph is built with ``torch.cdist``
(periodic images for crystals, ``sciformer.data.atoms.neighbor_list``). ``attention=False`` drops the global
attention and leaves a GINE network (the message-passing baseline). Output: ``num_targets`` values per system
from a mean-pooled readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sciformer.models.spec import ChannelTensors, FamilySpec


@dataclass
class GraphTransformerConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    cutoff: float = 5.0  # Å
    num_rbf: int = 32
    num_targets: int = 1
    num_atom_types: int = 100
    attention: bool = True
    dropout: float = 0.0


class GaussianRBF(nn.Module):
    def __init__(self, num: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num))
        self.gamma = 0.5 / (cutoff / num) ** 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (d[:, None] - self.centers[None]) ** 2)


def _mlp(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))


class GraphTransformer(nn.Module):
    """Batch (PyG) with ``atomic_numbers``, ``pos``, ``batch`` and optional ``cell``/``pbc`` → [B, num_targets]."""

    config_class = GraphTransformerConfig
    spec = FamilySpec(
        kind="property",
        sized_by_data=("num_targets",),
        channels=(ChannelTensors("properties", r"^head\.2\.(weight|bias)$"),),  # one output row per property
        adapters=r"^head\.",
        lora_targets=r"layers\.\d+\.(conv\.nn\.\d+|nn\.\d+|mlp\.\d+|attn\.out_proj)$",
        lr_groups={"embedding_recovery": r"^(atom_embed|head)\."},
        no_weight_decay=r"^(atom_embed|edge_embed\.\d+)\.weight$",
    )

    def __init__(self, config: GraphTransformerConfig):
        super().__init__()
        from torch_geometric.nn import GINEConv, GPSConv

        self.config = cfg = config
        self.atom_embed = nn.Embedding(cfg.num_atom_types, cfg.hidden)
        self.rbf = GaussianRBF(cfg.num_rbf, cfg.cutoff)
        self.edge_embed = nn.Sequential(nn.Linear(cfg.num_rbf, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))
        if cfg.attention:
            self.layers = nn.ModuleList([
                GPSConv(cfg.hidden, GINEConv(_mlp(cfg.hidden), edge_dim=cfg.hidden), heads=cfg.heads,
                        dropout=cfg.dropout, act="silu", norm="batch_norm")
                for _ in range(cfg.layers)])
        else:
            self.layers = nn.ModuleList([GINEConv(_mlp(cfg.hidden), edge_dim=cfg.hidden) for _ in range(cfg.layers)])
            self.norms = nn.ModuleList([nn.BatchNorm1d(cfg.hidden) for _ in range(cfg.layers)])
        self.head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.num_targets))

    def forward(self, batch) -> torch.Tensor:
        from torch_geometric.utils import scatter

        from sciformer.data.atoms import neighbor_list

        z, pos = batch.atomic_numbers, batch.pos
        b = batch.batch if getattr(batch, "batch", None) is not None else torch.zeros_like(z)
        edge_index, _, dist = neighbor_list(pos, self.config.cutoff, b, getattr(batch, "cell", None),
                                            getattr(batch, "pbc", None))
        e = self.edge_embed(self.rbf(dist))
        x = self.atom_embed(z)
        for k, layer in enumerate(self.layers):
            if self.config.attention:
                x = layer(x, edge_index, batch=b, edge_attr=e)
            else:
                x = x + torch.nn.functional.silu(self.norms[k](layer(x, edge_index, edge_attr=e)))
        n_sys = int(b.max()) + 1 if b.numel() else 0
        return self.head(scatter(x, b, dim=0, dim_size=n_sys, reduce="mean"))


register_sizes = [
    ("graph-gps", dict(hidden=128, layers=4, heads=4)),
    ("graph-gps-tiny", dict(hidden=64, layers=2, heads=4)),
    ("graph-gine", dict(hidden=128, layers=4, attention=False)),
    ("graph-gine-tiny", dict(hidden=64, layers=2, attention=False)),
]


def _register() -> None:
    from sciformer.models.registry import register

    for name, hp in register_sizes:
        register(name, GraphTransformer, **hp)


_register()
