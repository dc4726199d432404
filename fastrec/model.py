"""GPT-style causal transformer over item ids for next-item recommendation.

Shape legend:
    B  batch size
    T  positions in a window (at most ``ModelConfig.max_len``)
    D  model width (``d_model``)
    H  attention heads, each D // H wide
    F  MLP hidden width (``d_ff``)
    V  item rows (``vocab_size``): padding 0, real items 1..n, then the specials
    G  genres (``n_genres``)
    U  users (``n_users``)

Item ids are dense: 0 is padding, real items are 1..n and ``n_special`` special tokens
(start, end) follow at n + 1 and up. Sequences are left-padded with 0. Item and user
tensors may be int32 or int64.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastrec.errors import ConfigError
from fastrec.layers import Dropout, attention

HEADS = ("dot", "interaction")

# Prefixes that wrappers put in front of every state_dict key: torch.compile's
# OptimizedModule stores the model as `_orig_mod`, DistributedDataParallel as `module`.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class ModelConfig:
    """Sizes and options of a SequentialRecommender.

    The defaults other than vocab_size and n_users are the tutorial's model: width 32,
    4 blocks of 4 heads, MLP width 128, dropout 0.1, windows of 5 and the interaction
    head.
    """

    vocab_size: int
    """Number of item rows: padding 0, real items 1..n, then the special tokens."""

    n_users: int
    """Number of users, with dense ids 0..n_users - 1."""

    max_len: int = 5
    """Maximum window length T. The interaction head requires exactly this length."""

    d_model: int = 32
    """Width D of the embeddings and of the residual stream."""

    n_layers: int = 4
    """Number of transformer blocks."""

    n_heads: int = 4
    """Number of attention heads, a divisor of d_model."""

    d_ff: int = 128
    """Hidden width of the GELU MLP in each block."""

    dropout: float = 0.1
    """Dropout probability after the embeddings and on each residual."""

    attention_dropout: float = 0.1
    """Dropout probability on the attention weights. On the CPU, windows longer than
    fastrec.layers.SHORT_WINDOW run the fused attention kernel only at 0. Above 0
    they take the math path, which dominates a step."""

    head: str = "interaction"
    """Output head: "dot" (tied item embedding, logits at every position) or
    "interaction" (MLP over the flattened window, logits for the next item)."""

    interaction_hidden: int = 16
    """Hidden width of the interaction MLP 2·T·D → hidden → V."""

    use_user: bool = False
    """Add the user embedding to the query of the dot head. The interaction head always
    uses the user embedding."""

    n_genres: int = 0
    """Number of genres G. Above 0, the mean of an item's genre embeddings is added to
    its item embedding, which needs the item_genres tensor."""

    demographics: bool = False
    """Add gender, age-group and occupation embeddings to the user embedding (needs the
    user_codes tensor)."""

    demographic_sizes: tuple[int, int, int] = (2, 7, 21)
    """Number of distinct gender, age-group and occupation codes. The default fits
    MovieLens-1M: 2 genders, 7 age groups and 21 occupations."""

    n_special: int = 2
    """Number of special tokens (start, end) after the real items."""

    init_range: float = 0.1
    """Half-width of the uniform initialization of embeddings and head. 0 selects a
    normal initialization with standard deviation 0.02 instead."""

    def __post_init__(self) -> None:
        """Raise ConfigError naming the first field whose value is invalid."""
        # One padding row and at least one real item come before the specials.
        _require_int(self, "n_special", minimum=0)
        _require_int(self, "vocab_size", minimum=self.n_special + 2)
        _require_int(self, "n_users", minimum=1)
        _require_int(self, "max_len", minimum=1)
        _require_int(self, "d_model", minimum=1)
        _require_int(self, "n_layers", minimum=1)

        _require_int(self, "n_heads", minimum=1)
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"invalid model.n_heads {self.n_heads!r}: it must divide "
                f"model.d_model {self.d_model}"
            )
        _require_int(self, "d_ff", minimum=1)

        _require_float(self, "dropout", low=0.0, high=1.0, high_open=True)
        _require_float(self, "attention_dropout", low=0.0, high=1.0, high_open=True)
        if self.head not in HEADS:
            raise ConfigError(
                f"invalid model.head {self.head!r}: expected one of {', '.join(HEADS)}"
            )
        _require_int(self, "interaction_hidden", minimum=1)
        _require_bool(self, "use_user")

        _require_int(self, "n_genres", minimum=0)
        _require_bool(self, "demographics")
        self._check_demographic_sizes()

        if self.demographics and self.head == "dot" and not self.use_user:
            raise ConfigError(
                "invalid model.demographics True: the dot head ignores the user "
                "embedding unless model.use_user is true, so set use_user: true or "
                "demographics: false"
            )

        _require_float(self, "init_range", low=0.0, high=math.inf, high_open=True)

    def _check_demographic_sizes(self) -> None:
        sizes = self.demographic_sizes
        if isinstance(sizes, list):
            sizes = tuple(sizes)
            self.demographic_sizes = sizes  # YAML gives lists
        valid = (
            isinstance(sizes, tuple)
            and len(sizes) == 3
            and all(_is_int(size) and size >= 1 for size in sizes)
        )
        if not valid:
            raise ConfigError(
                f"invalid model.demographic_sizes {sizes!r}: expected three positive "
                "integers (gender, age-group and occupation code counts)"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int(config: ModelConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not _is_int(value) or value < minimum:
        raise ConfigError(
            f"invalid model.{name} {value!r}: expected an integer >= {minimum}"
        )


def _require_float(
    config: ModelConfig, name: str, low: float, high: float, high_open: bool
) -> None:
    value = getattr(config, name)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    in_range = (
        is_number and low <= value and (value < high if high_open else value <= high)
    )
    if not in_range:
        bracket = ")" if high_open else "]"
        interval = f"[{low}, {high}{bracket}"
        raise ConfigError(
            f"invalid model.{name} {value!r}: expected a number in {interval}"
        )


def _require_bool(config: ModelConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ConfigError(f"invalid model.{name} {value!r}: expected true or false")


def position_ids(items: Tensor) -> Tensor:
    """Count positions from the first real item of each row.

    Position = (number of real items up to and including this slot) - 1, so a real item
    gets the same position however much left padding precedes it. Padding slots before
    the first real item get 0, and no caller reads their outputs.
    """
    real = items != 0  # [B, T]
    return (real.cumsum(dim=1) - 1).clamp_min(0)  # [B, T] int64


def causal_padding_mask(items: Tensor) -> Tensor:
    """Build the boolean attention mask [B, 1, T, T], True where a query may attend.

    A query attends to the real keys at or before its own slot. Each query also attends
    to itself, so a row of nothing but padding still has one key per query and a
    finite softmax. The mask uses only elementwise tensor operations, with no host
    sync, no loop over rows and no data-dependent shapes, so it traces under
    torch.compile.
    """
    T = items.shape[1]
    slots = torch.arange(T, device=items.device)
    causal = slots[None, :] <= slots[:, None]  # [T, T]: key index <= query index
    itself = slots[None, :] == slots[:, None]  # [T, T]
    real_key = (items != 0)[:, None, None, :]  # [B, 1, 1, T]
    return (causal & real_key) | itself  # [B, 1, T, T]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention through fastrec.layers.attention (fused SDPA, or an
    explicit short-window path on the CPU)."""

    def __init__(self, config: ModelConfig) -> None:
        """Create the joint query/key/value projection and the output projection."""
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.attention_dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Attend over x [B, T, D] under the boolean mask [B, 1, T, T]."""
        B, T, D = x.shape
        head_width = D // self.n_heads
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x [B, T, D]
        q = q.view(B, T, self.n_heads, head_width).transpose(1, 2)  # [B, H, T, D/H]
        k = k.view(B, T, self.n_heads, head_width).transpose(1, 2)  # [B, H, T, D/H]
        v = v.view(B, T, self.n_heads, head_width).transpose(1, 2)  # [B, H, T, D/H]

        # NOTE: an explicit mask rules out the flash backend on CUDA, so SDPA picks
        # the memory-efficient or the math kernel.
        y = attention(
            q, k, v, mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, T, D/H]
        y = y.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention and a GELU MLP, each residual."""

    def __init__(self, config: ModelConfig) -> None:
        """Create the two LayerNorms, the attention and the MLP D → F → D."""
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
            Dropout(config.dropout),
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Apply the block to x [B, T, D]."""
        x = x + self.attn(self.ln_attn(x), mask)
        return x + self.mlp(self.ln_mlp(x))


class SequentialRecommender(nn.Module):
    """Causal transformer that scores the next item of a left-padded window.

    Optional side features, each stored as a persistent buffer so that it travels in
    the state_dict:

    - ``item_genres`` [V, G] float multi-hot, required when ``config.n_genres > 0``.
    - ``user_codes`` [U, 3] long gender, age-group and occupation codes, required when
      ``config.demographics`` is true.
    """

    def __init__(
        self,
        config: ModelConfig,
        item_genres: Tensor | None = None,
        user_codes: Tensor | None = None,
    ) -> None:
        """Build the model from config and the side-feature tensors it requires.

        Raises ConfigError when a required tensor is missing, has the wrong shape,
        contains codes outside ``config.demographic_sizes``, or is given for a feature
        that the config turns off.
        """
        super().__init__()
        self.config = config
        D = config.d_model

        self.item_embedding = nn.Embedding(config.vocab_size, D, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, D)
        # The dot head reads users only with use_user; an unused table would leave
        # parameters without gradients, which DDP rejects.
        uses_users = config.head == "interaction" or config.use_user
        self.user_embedding = nn.Embedding(config.n_users, D) if uses_users else None
        self.embedding_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(D)

        self._init_genres(item_genres)
        self._init_demographics(user_codes)

        if config.head == "interaction":
            self.interaction = nn.Sequential(
                nn.Linear(2 * config.max_len * D, config.interaction_hidden),
                nn.ReLU(),
                nn.Linear(config.interaction_hidden, config.vocab_size, bias=False),
            )
        else:
            self.interaction = None

        # Padding and the special tokens are never recommended.
        blocked = torch.zeros(config.vocab_size, dtype=torch.bool)
        blocked[0] = True
        blocked[config.vocab_size - config.n_special :] = True
        self.register_buffer("blocked_items", blocked, persistent=False)

        self.reset_parameters()

    def _init_genres(self, item_genres: Tensor | None) -> None:
        config = self.config
        if config.n_genres == 0:
            if item_genres is not None:
                raise ConfigError(
                    "item_genres was given but model.n_genres is 0: set n_genres to "
                    f"{item_genres.shape[-1]} or drop the genre tensor"
                )
            self.genre_embedding = None
            return
        expected = (config.vocab_size, config.n_genres)
        if item_genres is None:
            raise ConfigError(
                f"model.n_genres is {config.n_genres} but no item_genres tensor was "
                f"given: pass a multi-hot tensor of shape {expected} or set n_genres: 0"
            )
        if tuple(item_genres.shape) != expected:
            raise ConfigError(
                f"invalid item_genres shape {tuple(item_genres.shape)}: expected "
                f"(vocab_size, n_genres) = {expected}"
            )
        self.register_buffer("item_genres", item_genres.detach().float().clone())
        self.genre_embedding = nn.Embedding(config.n_genres, config.d_model)

    def _init_demographics(self, user_codes: Tensor | None) -> None:
        config = self.config
        if not config.demographics:
            if user_codes is not None:
                raise ConfigError(
                    "user_codes was given but model.demographics is false: set "
                    "demographics: true or drop the user-code tensor"
                )
            self.demographic_embeddings = None
            return
        expected = (config.n_users, 3)
        if user_codes is None:
            raise ConfigError(
                "model.demographics is true but no user_codes tensor was given: pass "
                f"a long tensor of shape {expected} or set demographics: false"
            )
        if tuple(user_codes.shape) != expected:
            raise ConfigError(
                f"invalid user_codes shape {tuple(user_codes.shape)}: expected "
                f"(n_users, 3) = {expected}"
            )
        codes = user_codes.detach().long().clone()
        names = ("gender", "age-group", "occupation")
        for column, (name, size) in enumerate(zip(names, config.demographic_sizes)):
            low, high = int(codes[:, column].min()), int(codes[:, column].max())
            if low < 0 or high >= size:
                raise ConfigError(
                    f"invalid {name} codes in user_codes column {column}: range "
                    f"{low}..{high} is outside 0..{size - 1}. Encode the codes densely "
                    "or raise model.demographic_sizes"
                )
        self.register_buffer("user_codes", codes)
        self.demographic_embeddings = nn.ModuleList(
            nn.Embedding(size, config.d_model) for size in config.demographic_sizes
        )

    def reset_parameters(self) -> None:
        """Initialize all weights.

        Embeddings and head weights are uniform in (-init_range, init_range), as in the
        tutorial, or normal with std 0.02 when init_range is 0. Other linear layers are
        normal with std 0.02 and zero bias, and LayerNorms start as the identity.
        """
        r = self.config.init_range

        def init_weight(weight: Tensor) -> None:
            if r > 0:
                nn.init.uniform_(weight, -r, r)
            else:
                nn.init.normal_(weight, std=0.02)

        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                init_weight(module.weight)
        if self.interaction is not None:
            for layer in self.interaction:
                if isinstance(layer, nn.Linear):
                    init_weight(layer.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def item_weights(self) -> Tensor:
        """Compute the item representations [V, D]: embedding plus mean genre embedding.

        The same table embeds the input items and, tied, scores them in the dot head.
        """
        weights = self.item_embedding.weight  # [V, D]
        if self.genre_embedding is None:
            return weights
        counts = self.item_genres.sum(dim=1, keepdim=True).clamp_min(1.0)  # [V, 1]
        genre_mean = (self.item_genres / counts) @ self.genre_embedding.weight  # [V, D]
        return weights + genre_mean

    def user_vectors(self, users: Tensor) -> Tensor:
        """Embed users [B] into [B, D], adding the demographic embeddings when on."""
        vectors = self.user_embedding(users)  # [B, D]
        if self.demographic_embeddings is not None:
            codes = self.user_codes[users.long()]  # [B, 3]
            for column, table in enumerate(self.demographic_embeddings):
                vectors = vectors + table(codes[:, column])
        return vectors

    def encode(self, items: Tensor, users: Tensor) -> Tensor:
        """Run the transformer over items [B, T] and return hidden states [B, T, D].

        users is accepted so that every entry point takes the same arguments, but the
        transformer itself does not read it.
        """
        del users
        T = items.shape[1]
        if T > self.config.max_len:
            raise ConfigError(
                f"window length {T} exceeds model.max_len {self.config.max_len}: "
                "raise max_len or shorten the windows"
            )
        mask = causal_padding_mask(items)  # [B, 1, T, T]
        x = F.embedding(items, self.item_weights(), padding_idx=0)  # [B, T, D]
        x = x + self.position_embedding(position_ids(items))  # [B, T, D]
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_final(x)

    def _interaction_logits(self, hidden: Tensor, users: Tensor) -> Tensor:
        B, T, D = hidden.shape
        if T != self.config.max_len:
            raise ConfigError(
                f"the interaction head needs windows of exactly model.max_len "
                f"{self.config.max_len} items, got {T}: pad the windows to max_len"
            )
        user = self.user_vectors(users)[:, None, :].expand(B, T, D)  # [B, T, D]
        joined = torch.cat([hidden, user], dim=2).reshape(B, 2 * T * D)  # [B, 2TD]
        return self.interaction(joined)  # [B, V]

    def _dot_query(self, hidden: Tensor, users: Tensor) -> Tensor:
        if not self.config.use_user:
            return hidden
        user = self.user_vectors(users)  # [B, D]
        if hidden.dim() == 3:
            user = user[:, None, :]  # [B, 1, D]
        return hidden + user

    def head_inputs(self, items: Tensor, users: Tensor) -> tuple[Tensor, Tensor]:
        """Return the output layer's input features and weight, so logits = f @ w.T.

        Dot head: the query at every position [B, T, D] and the item table [V, D].
        Interaction head: the hidden MLP layer [B, H] and the last layer's weight
        [V, H]. ``fastrec.losses.linear_cross_entropy`` trains from these without
        building the logits.
        """
        hidden = self.encode(items, users)  # [B, T, D]
        if self.interaction is None:
            return self._dot_query(hidden, users), self.item_weights()
        B, T, D = hidden.shape
        if T != self.config.max_len:
            raise ConfigError(
                f"the interaction head needs windows of exactly model.max_len "
                f"{self.config.max_len} items, got {T}: pad the windows to max_len"
            )
        user = self.user_vectors(users)[:, None, :].expand(B, T, D)  # [B, T, D]
        joined = torch.cat([hidden, user], dim=2).reshape(B, 2 * T * D)  # [B, 2TD]
        features = self.interaction[1](self.interaction[0](joined))  # [B, H]
        return features, self.interaction[2].weight

    def forward(self, items: Tensor, users: Tensor) -> Tensor:
        """Compute training logits: [B, T, V] for the dot head, [B, V] for interaction.

        Dot-head logits at position t score the item after position t. Interaction
        logits score the item after the whole window.
        """
        hidden = self.encode(items, users)  # [B, T, D]
        if self.interaction is not None:
            return self._interaction_logits(hidden, users)
        return self._dot_query(hidden, users) @ self.item_weights().T  # [B, T, V]

    def score_next(self, items: Tensor, users: Tensor) -> Tensor:
        """Score every item as the next one after the window, [B, V].

        Columns of padding and special tokens are -inf, so no ranking returns them.
        """
        hidden = self.encode(items, users)  # [B, T, D]
        if self.interaction is not None:
            scores = self._interaction_logits(hidden, users)  # [B, V]
        else:
            query = self._dot_query(hidden[:, -1], users)  # [B, D]
            scores = query @ self.item_weights().T  # [B, V]
        return scores.masked_fill(self.blocked_items, float("-inf"))

    def query_and_item_weights(
        self, items: Tensor, users: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Return the dot head's query [B, D] and item weights [V, D].

        query @ weights.T equals score_next before the padding and special columns
        are set to -inf, so a caller that fuses the matmul with top-K must exclude
        ``blocked_items`` itself. Raises ValueError for the interaction head, whose
        scores are not a dot product.
        """
        if self.interaction is not None:
            raise ValueError(
                "query_and_item_weights needs the dot head, but this model uses the "
                "interaction head: call score_next instead"
            )
        hidden = self.encode(items, users)  # [B, T, D]
        return self._dot_query(hidden[:, -1], users), self.item_weights()

    def num_parameters(self) -> int:
        """Count the trainable parameters, the tied item embedding once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_per_sample(self, seq_len: int | None = None) -> int:
        """Estimate the training FLOPs of one sample with estimate_flops_per_sample."""
        return estimate_flops_per_sample(self.config, seq_len)


def estimate_flops_per_sample(config: ModelConfig, seq_len: int | None = None) -> int:
    """Estimate the FLOPs of one sample's forward and backward pass.

    An analytic estimate for MFU logs: it counts matrix products only, at 2 FLOPs per
    multiply-add, and takes the backward pass as twice the forward. It leaves out
    LayerNorm, softmax, GELU, dropout, embedding lookups and the per-batch genre table.
    Attention is counted over all T x T pairs because the masked kernel computes them.
    seq_len defaults to max_len. The dot head counts logits at every position.
    """
    T = config.max_len if seq_len is None else seq_len
    D, F_, V = config.d_model, config.d_ff, config.vocab_size

    # Per block: QKV and output projections, scores and weighted values, the MLP.
    projections = 2 * T * D * (3 * D + D)
    attention = 2 * T * T * D * 2
    mlp = 2 * T * D * F_ * 2
    forward = config.n_layers * (projections + attention + mlp)

    if config.head == "dot":
        forward += 2 * T * D * V
    else:
        hidden = config.interaction_hidden
        forward += 2 * (2 * T * D) * hidden + 2 * hidden * V
    return 3 * forward


def sequence_loss(
    logits: Tensor, targets: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Compute the weighted mean cross-entropy, skipping padding targets.

    logits [B, T, V] go with targets [B, T], and logits [B, V] with targets [B].
    The logits are upcast to fp32. Target 0 is padding and adds nothing. Optional
    weights of the targets' shape scale each target's loss. The result is the weighted
    sum over max(weight sum, tiny), so a batch without any real target returns 0, not
    NaN. Runs without a host sync.
    """
    if tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            f"logits shape {tuple(logits.shape)} does not match targets shape "
            f"{tuple(targets.shape)}: expected logits of shape targets.shape + (V,)"
        )
    if weights is not None and tuple(weights.shape) != tuple(targets.shape):
        raise ValueError(
            f"weights shape {tuple(weights.shape)} does not match targets shape "
            f"{tuple(targets.shape)}"
        )
    # NOTE: the fp32 copy of the logits takes B*T*V*4 bytes. At large catalogs a
    # chunked or fused cross-entropy would avoid it.
    V = logits.shape[-1]
    flat_logits = logits.reshape(-1, V).float()  # [B*T, V] or [B, V]
    flat_targets = targets.reshape(-1).long()  # [B*T] or [B]
    losses = F.cross_entropy(
        flat_logits, flat_targets, reduction="none", ignore_index=0
    )

    real = (flat_targets != 0).float()
    if weights is not None:
        real = real * weights.reshape(-1).float()
    total_weight = real.sum().clamp_min(torch.finfo(torch.float32).tiny)
    return (losses * real).sum() / total_weight


def strip_state_dict_prefixes(state_dict: Mapping[str, Tensor]) -> OrderedDict:
    """Remove the torch.compile (``_orig_mod.``) and DDP (``module.``) key prefixes.

    Leading prefixes are removed in any order and number, for example
    ``module._orig_mod.blocks.0...`` becomes ``blocks.0...``. The version metadata
    that load_state_dict reads is carried over under the stripped names.
    """

    def strip(key: str) -> str:
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        return key

    stripped = OrderedDict((strip(key), value) for key, value in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        # Module paths in the metadata carry the same prefixes without the final dot.
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (strip(name + ".").rstrip(".") if name else name, value)
            for name, value in metadata.items()
        )
    return stripped
