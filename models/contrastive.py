"""Contrastive self-supervised learning (SimCLR): a small ViT trained with the NT-Xent loss.

Two augmented views of each image (models/data/images.py, NumPy data code) go through one encoder:

    patches   image [B, H, W] -> [B, N, P*P] (reshape + transpose), Linear -> [B, N, D]
    tokens    learned position embeddings (and, with pool="cls", a learned [CLS] token in front)
    encoder   pre-LN nn.TransformerEncoder (textbook attention) with its final LayerNorm
    pool      the mean over tokens (default) or the [CLS] output: the embedding, [B, D]
    head      Linear -> GELU -> Linear: the projection the loss sees, [B, proj_dim]

Mean pooling is the default because it trains at once from the N(0, 0.02) init, while the [CLS]
output then barely depends on the image and NT-Xent starts near collapse (loss log(2B - 1)).

``nt_xent`` is the loss, written as graph code. The features are judged by a linear probe:
``pretrain_and_probe`` trains, freezes the encoder, fits a closed-form ridge classifier on the
embeddings of labelled images and compares with the same probe on random-init features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError, ShapeError
from graphdsl.graph import Graph
from graphdsl.ops.nn import size_of
from graphdsl.tracing import Parameter, as_tensor, trace, user_loc

from .data.images import Augment, make_shapes, two_views
from .registry import ModelSpec, register

MASK_FILL = -1e9  # the logit of a view against itself: exp() of it is 0, and it stays finite


@dataclass(frozen=True)
class ContrastiveConfig:
    image_size: int = 16
    patch_size: int = 4
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 64
    proj_dim: int = 32
    temperature: float = 0.2
    dropout: float = 0.0
    pool: str = "mean"                                # "mean" over patches, or "cls"
    augment: Augment = field(default_factory=Augment)

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# -- the model ---------------------------------------------------------------------------------
def patchify(images, patch: int):
    """``[B, H, W] -> [B, (H/P)*(W/P), P*P]``: non-overlapping P x P patches, row by row."""
    x = as_tensor(images)
    if x.ndim != 3 or not all(isinstance(d, int) and d % patch == 0 for d in x.shape[1:]):
        raise ShapeError(f"patchify takes images [batch, H, W] with H and W multiples of {patch}, "
                         f"got {x.type}", loc=user_loc())
    batch, h, w = x.shape
    grid = x.reshape(batch, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return grid.reshape(batch, (h // patch) * (w // patch), patch * patch)


class ViTEncoder(nn.Module):
    """forward(images [B, H, W]) -> embeddings [B, d_model]."""

    def __init__(self, cfg: ContrastiveConfig, *, dtype=_dt.float32):
        super().__init__()
        if cfg.pool not in ("cls", "mean"):
            raise GraphDSLError(f"unknown pooling {cfg.pool!r}", hint="use 'cls' or 'mean'")
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_size ** 2, cfg.d_model, dtype=dtype)
        n_tokens = cfg.n_patches + (cfg.pool == "cls")
        self.cls_token = Parameter((1, 1, cfg.d_model), dtype) if cfg.pool == "cls" else None
        self.pos_embed = Parameter((1, n_tokens, cfg.d_model), dtype)
        self.encoder = nn.TransformerEncoder(cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff,
                                             cfg.dropout, norm_first=True, dtype=dtype)

    def forward(self, images):
        x = self.patch_embed(patchify(images, self.cfg.patch_size))
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], 1, self.cfg.d_model)
            x = ops.concat([cls, x], axis=1)
        h = self.encoder(x + self.pos_embed)
        return h[:, 0] if self.cls_token is not None else h.mean(axis=1)


class ProjectionHead(nn.Module):
    """The MLP between the embedding and the loss (SimCLR's g): Linear, GELU, Linear."""

    def __init__(self, d_model: int, proj_dim: int, *, dtype=_dt.float32):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_model, dtype=dtype)
        self.fc2 = nn.Linear(d_model, proj_dim, dtype=dtype)

    def forward(self, x):
        return self.fc2(ops.gelu(self.fc1(x)))


class ContrastiveModel(nn.Module):
    """forward(images) -> {"embedding": [B, d_model], "projection": [B, proj_dim]}."""

    def __init__(self, cfg: ContrastiveConfig, *, dtype=_dt.float32):
        super().__init__()
        self.cfg, self.dtype = cfg, _dt.dtype(dtype)
        self.vit = ViTEncoder(cfg, dtype=dtype)
        self.head = ProjectionHead(cfg.d_model, cfg.proj_dim, dtype=dtype)

    def forward(self, images):
        emb = self.vit(images)
        return {"embedding": emb, "projection": self.head(emb)}


# -- the loss ----------------------------------------------------------------------------------
def l2_normalize(z, eps: float = 1e-12):
    """Rows of ``z`` scaled to unit length (``eps`` keeps a zero row finite)."""
    return z * ((z * z).sum(axis=-1, keepdims=True) + eps).rsqrt()


def nt_xent_logits(z1, z2, temperature: float):
    """(logits [2B, 2B], targets [2B]) of NT-Xent for the view pairs ``(z1[i], z2[i])``.

    Rows and columns index the 2B views (the z1 views, then the z2 views); a logit is the cosine
    similarity over ``temperature``, a view against itself is ``MASK_FILL``, and the target of view
    i is its partner: i + B in the first half, i - B in the second.
    """
    z1, z2 = as_tensor(z1), as_tensor(z2)
    if z1.ndim != 2 or z1.type != z2.type:
        raise ShapeError(f"nt_xent takes two [batch, dim] embeddings of the same type, got {z1.type} "
                         f"and {z2.type}", loc=user_loc())
    if not temperature > 0:
        raise GraphDSLError(f"nt_xent: temperature must be positive, got {temperature}", loc=user_loc())
    z = l2_normalize(ops.concat([z1, z2], axis=0))
    logits = (z @ z.transpose(-1, -2)) * (1.0 / temperature)
    n2 = z.shape[0]
    self_pair = ops.iota(shape=(n2, n2), axis=0) == ops.iota(shape=(n2, n2), axis=1)
    logits = ops.where(self_pair, MASK_FILL, logits)
    first = ops.arange(z1.shape[0])
    half = size_of(z1, 0, _dt.int64)  # B, an int or (batch symbolic) a numel node
    targets = ops.concat([first + half, first], axis=0)
    return logits, targets


def nt_xent(z1, z2, temperature: float = 0.5):
    """NT-Xent (InfoNCE over the 2B views): mean over views of -log softmax(logits)[partner]."""
    logits, targets = nt_xent_logits(z1, z2, temperature)
    return ops.cross_entropy(logits, targets)


# -- graphs --------------------------------------------------------------------------------------
def _image_type(model: ContrastiveModel) -> str:
    size = model.cfg.image_size
    return f"{model.dtype.short}[batch,{size},{size}]"


def loss_graph(model: ContrastiveModel) -> Graph:
    """Inputs ``view1``, ``view2`` [batch, H, W] (the model's dtype); outputs ``loss`` (NT-Xent) and ``accuracy``
    (the fraction of views whose most similar other view is their partner)."""
    cfg = model.cfg

    def contrastive_loss(view1, view2):
        both = ops.concat([view1, view2], axis=0)   # one encoder pass over the 2B views
        z1, z2 = ops.split(model(both)["projection"], sizes=(view1.shape[0], view1.shape[0]), axis=0)
        logits, targets = nt_xent_logits(z1, z2, cfg.temperature)
        hit = (logits.argmax(axis=-1) == targets).astype(model.dtype)
        return {"loss": ops.cross_entropy(logits, targets), "accuracy": hit.mean()}

    t = _image_type(model)
    return trace(contrastive_loss, params=model, view1=t, view2=t)


def forward_graph(model: ContrastiveModel) -> Graph:
    """Input ``images`` f32[batch, H, W]; outputs ``embedding`` and ``projection``."""
    return trace(lambda images: model(images), name="contrastive_forward", params=model,
                 images=_image_type(model))


def make_batch(cfg: ContrastiveConfig, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Two augmented views of ``n`` freshly drawn shape images."""
    images, _ = make_shapes(n, rng, cfg.image_size)
    return two_views(images, rng, cfg.augment)


# -- training and the linear probe (backends imported here only) ------------------------------
def pretrain(model: ContrastiveModel, images: np.ndarray, *, steps: int, batch_size: int = 32,
             lr: float = 2e-3, seed: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """Train ``model`` from ``model.init(seed)`` with AdamW on batches of ``images`` (two fresh
    views per image each step). Returns the trained parameters and the loss of each step."""
    import backends
    from graphdsl.optim import AdamW, StepRunner, WarmupCosine, make_train_step

    rng = np.random.default_rng(seed)
    step = make_train_step(loss_graph(model.train()), AdamW(lr=lr, weight_decay=0.05), clip_norm=1.0,
                           schedule=WarmupCosine(max(1, steps // 10), steps))
    runner = StepRunner(backends.compile(step, "numpy"), model.init(seed), seed=seed)
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(images), batch_size, replace=False)
        losses.append(runner.step(two_views(images[idx], rng, model.cfg.augment))["loss"])
    return runner.params, losses


def embed(model: ContrastiveModel, params: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The frozen encoder's embeddings (before the projection head) of ``images``: [n, d_model]."""
    import backends
    exe = backends.compile(forward_graph(model.eval()), "numpy")
    return exe(images=images.astype(np.float32), **params)["embedding"]


def linear_probe(train_x, train_y, val_x, val_y, *, ridge: float = 1.0) -> float:
    """Validation accuracy of a linear classifier fit in closed form: ridge regression onto one-hot
    labels (features standardized with the training statistics, a bias column unpenalized)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6

    def design(x):
        return np.hstack([(x - mean) / std, np.ones((len(x), 1))])

    a = design(train_x.astype(np.float64))
    y = np.eye(int(train_y.max()) + 1)[train_y]
    penalty = ridge * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(a.T @ a + penalty, a.T @ y)
    return float(np.mean((design(val_x.astype(np.float64)) @ w).argmax(1) == val_y))


@dataclass
class ProbeReport:
    learned: float          # linear-probe validation accuracy on the pretrained features
    random: float           # the same probe on the features of the untrained (init) encoder
    losses: list[float]     # pretraining loss per step


def pretrain_and_probe(cfg: ContrastiveConfig | str = "contrastive-tiny", *, steps: int = 800,
                       batch_size: int = 32, lr: float = 2e-3, n_pretrain: int = 1024,
                       n_train: int = 600, n_val: int = 600, seed: int = 0) -> ProbeReport:
    """Pretrain on unlabelled shapes, then probe frozen learned vs random-init features."""
    if isinstance(cfg, str):
        from .registry import get
        cfg = get(cfg).config
    model = ContrastiveModel(cfg)
    unlabelled, _ = make_shapes(n_pretrain, seed + 1, cfg.image_size)
    train_x, train_y = make_shapes(n_train, seed + 2, cfg.image_size)
    val_x, val_y = make_shapes(n_val, seed + 3, cfg.image_size)
    trained, losses = pretrain(model, unlabelled, steps=steps, batch_size=batch_size, lr=lr, seed=seed)

    def accuracy(params):
        return linear_probe(embed(model, params, train_x), train_y, embed(model, params, val_x), val_y)

    return ProbeReport(accuracy(trained), accuracy(model.init(seed)), losses)


# -- registry ------------------------------------------------------------------------------------
def _spec(name: str, description: str, cfg: ContrastiveConfig) -> ModelSpec:
    return register(ModelSpec(name=name, family="contrastive", description=description, config=cfg,
                              build=ContrastiveModel, loss=loss_graph, forward=forward_graph,
                              batch=make_batch, attention_blocks=cfg.n_layers))


_spec("contrastive-tiny", "ViT 16x16 images, 4x4 patches, 2 layers d=32; NT-Xent (SimCLR)",
      ContrastiveConfig())
_spec("contrastive-mini", "ViT 28x28 images, 4x4 patches, 4 layers d=128; NT-Xent (SimCLR)",
      ContrastiveConfig(image_size=28, patch_size=4, d_model=128, n_layers=4, n_heads=4, d_ff=256,
                        proj_dim=64, temperature=0.2, dropout=0.1))
