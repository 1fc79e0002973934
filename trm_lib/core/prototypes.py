"""Multimodal category prototypes and pseudo-labels (docs/METHOD_CHOICES.md, their rows).

Three stateful pieces, all ``nn.Module`` whose whole state lives in registered buffers (plain
tensors), so a checkpoint taken mid-training restores them bit-exactly and loads with
``torch.load(weights_only=True)``:

- :class:`PrototypeMemory` — a per-class ring buffer of query-level features of *confident,
  observed* positives, and one visual prototype per class (EMA or mean of the bank). Text
  prototypes are the class text embeddings t_c and are passed in, not stored.
- :class:`InstanceMemory` — per class, the region features r_{n,c} of recent *observed*
  positives and negatives, one slot per image: the instance-level memory bank that the default
  pseudo-label source (``method.pseudo_source="memory"``) scores unknown entries against.
- :class:`PseudoLabeler` — turns prototype or memory scores of unknown label entries into
  pseudo-labels (hard ±1 by thresholds, or the score itself as a soft target), keeps a
  per-sample pseudo-label buffer and counts how often the pseudo-labels agree with the hidden
  full labels, so precision/recall can be logged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceMemory", "PrototypeMemory", "PseudoLabeler"]


class PrototypeMemory(nn.Module):
    """Memory bank and visual prototypes of the query-level features z_{n,c}.

    Only entries that are *observed* positives (``targets == 1``) **and** confidently predicted
    (``sigmoid(s) > gate``) enter, so neither unknown entries nor pseudo-labels nor badly-fitted
    positives pollute the prototypes. Features are stored L2-normalised (all later comparisons
    are cosines).

    Prototype update (``update``):

    - ``"ema"``: ``v_c ← normalize(m · v_c + (1 - m) · mean(new gated features of c))``; the first
      update of a class sets ``v_c`` to that mean. A long-horizon average, smooth but lagging.
    - ``"overwrite"``: ``v_c ← normalize(mean of the bank of c)`` — the last ``memory_size``
      features, equally weighted.
    """

    def __init__(self, num_classes: int, dim: int, memory_size: int = 64, update: str = "ema",
                 momentum: float = 0.9, gate: float = 0.8):
        super().__init__()
        if update not in ("ema", "overwrite"):
            raise ValueError(f"method.proto_update must be ema|overwrite, got {update!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"method.proto_momentum must be in [0, 1), got {momentum}")
        self.num_classes, self.dim, self.memory_size = num_classes, dim, memory_size
        self.update_rule, self.momentum, self.gate = update, momentum, gate
        self.register_buffer("bank", torch.zeros(num_classes, memory_size, dim))
        self.register_buffer("bank_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("bank_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("visual", torch.zeros(num_classes, dim))
        self.register_buffer("visual_valid", torch.zeros(num_classes, dtype=torch.bool))

    def gate_mask(self, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, C) bool: entries allowed into the memory (observed positive and ``p > gate``)."""
        return (targets > 0) & (probs > self.gate)

    @torch.no_grad()
    def update(self, z: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> int:
        """Push gated features of a batch into the bank and refresh the prototypes.

        ``z`` (B, C, D) query-level features, ``probs`` (B, C) sigmoid(s), ``targets`` (B, C)
        *observed* labels. Returns the number of features that entered."""
        mask = self.gate_mask(probs, targets)
        if not mask.any():
            return 0
        feats_all = F.normalize(z.detach().float(), dim=-1)
        for c in mask.any(0).nonzero().flatten().tolist():
            feats = feats_all[mask[:, c], c]
            if self.memory_size > 0:
                keep = feats[-self.memory_size:]
                idx = (self.bank_ptr[c] + torch.arange(len(keep), device=keep.device))
                self.bank[c, idx % self.memory_size] = keep
                self.bank_ptr[c] = (self.bank_ptr[c] + len(keep)) % self.memory_size
                self.bank_count[c] = min(int(self.bank_count[c]) + len(keep), self.memory_size)
            if self.update_rule == "overwrite" and self.memory_size > 0:
                new = self.bank[c, : int(self.bank_count[c])].mean(0)
            else:
                new = feats.mean(0)
                if self.visual_valid[c]:
                    new = self.momentum * self.visual[c] + (1.0 - self.momentum) * new
            self.visual[c] = F.normalize(new, dim=0)
            self.visual_valid[c] = True
        return int(mask.sum())

    def bank_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All filled bank slots as ``(feats (K, D), labels (K,))``."""
        filled = torch.arange(self.memory_size, device=self.bank.device)[None, :] \
            < self.bank_count[:, None]
        labels = torch.arange(self.num_classes, device=self.bank.device)[:, None].expand_as(filled)
        return self.bank[filled], labels[filled]


class InstanceMemory(nn.Module):
    """Region features of observed positives and negatives per class, for k-NN label scores.

    Why instances and not only class prototypes: the pseudo-label score must carry information
    the classifier σ(s) does not already have, or the pseudo-labels only repeat what it believes.
    A class prototype is a mean of the same query features the classifier reads, so it mostly
    re-ranks by cos(z_c, t_c); the nearest *images* in region-feature space (r_c, CLIP space)
    do not — on the embedded world their score ranks the unknown entries of the training split
    several AP points better than σ(s) alone once the two are combined (docs/METHOD_CHOICES.md).

    Per class c two ring buffers (``size`` slots each) hold L2-normalised r_{n,c} of observed
    positives and observed negatives together with the sample index n. An image already in a
    buffer overwrites its own slot, so the k nearest neighbours are k different images, and
    :meth:`score` never matches an entry with its own sample. Under the single-positive protocol
    nothing is observed absent: a batch without any observed negative stores its unknown entries
    as negatives (the same "assume negative" reading as the region calibrator).
    """

    POLARITIES = ("pos", "neg")

    def __init__(self, num_classes: int, dim: int, size: int = 512, k: int = 5):
        super().__init__()
        if size < 1 or k < 1 or k > size:
            raise ValueError(f"method.pseudo_k ({k}) must be in [1, method.pseudo_bank] and "
                             f"method.pseudo_bank ({size}) >= 1")
        self.num_classes, self.size, self.k = num_classes, size, k
        for name in self.POLARITIES:
            self.register_buffer(f"{name}_feats", torch.zeros(num_classes, size, dim))
            self.register_buffer(f"{name}_index", torch.full((num_classes, size), -1,
                                                             dtype=torch.long))
            self.register_buffer(f"{name}_ptr", torch.zeros(num_classes, dtype=torch.long))

    def _buffers_of(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (getattr(self, f"{name}_feats"), getattr(self, f"{name}_index"),
                getattr(self, f"{name}_ptr"))

    @torch.no_grad()
    def update(self, r: torch.Tensor, observed: torch.Tensor, index: torch.Tensor) -> None:
        """Store the region features ``r`` (B, C, D) of the batch's observed entries
        (``observed`` (B, C) in {1, -1, 0}) under their sample ``index`` (B,).

        All classes at once (a per-class Python loop cost ~10 % of a run); the rules are the
        loop's, which ``tests/test_prototypes.py`` keeps and checks this against bit for bit:
        an image already stored keeps its slot; new images take the next ring slots in batch
        order (at most ``size`` of them, the last), written second, so a ring slot wins over a
        stored image it evicts."""
        r = r.detach()
        index = index.to(self.pos_index.device).long()
        negative = observed < 0
        if not negative.any():
            negative = observed == 0
        for name, mask in zip(self.POLARITIES, (observed > 0, negative), strict=True):
            feats, slots_of, ptr = self._buffers_of(name)
            mask = mask.to(slots_of.device)
            b, c = mask.nonzero(as_tuple=True)  # the batch's entries of this polarity
            rn = F.normalize(r[b, c].float(), dim=-1)  # (entries, D), only the stored ones
            hit = slots_of[c] == index[b][:, None]  # (entries, size): the image already stored?
            known = hit.any(1)
            if known.any():
                slot = hit[known].float().argmax(1)  # the first slot holding the image
                feats[c[known], slot] = rn[known].to(feats.dtype)
            fresh = torch.zeros_like(mask)
            fresh[b[~known], c[~known]] = True
            row = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
            row[b, c] = torch.arange(len(b), device=mask.device)  # entry (b, c) -> its rn row
            rank = fresh.long().cumsum(0) - 1  # (B, C): order among the class's fresh rows
            n_fresh = fresh.sum(0)
            skip = (n_fresh - self.size).clamp(min=0)  # only the last `size` fresh rows stay
            keep = fresh & (rank >= skip[None])
            b, c = keep.nonzero(as_tuple=True)
            if len(b):
                slot = (ptr[c] + rank[b, c] - skip[c]) % self.size
                feats[c, slot] = rn[row[b, c]].to(feats.dtype)
                slots_of[c, slot] = index[b]
                ptr.copy_((ptr + n_fresh - skip) % self.size)

    def _used_slots(self, slots_of: torch.Tensor) -> int:
        """How many leading slots to score: up to the last one any class has filled (at least
        k). Rings fill from slot 0 and never empty, and at low label proportions they stay far
        from full (p = 0.1, epoch 3: 180 of 512 positives for the commonest class), so the k-NN
        product skips the empty tail, which scored -inf and never reached the top k."""
        filled = (slots_of >= 0).any(0).nonzero()
        last = int(filled[-1, 0]) + 1 if len(filled) else 0
        return min(self.size, max(self.k, last))

    @torch.no_grad()
    def score(self, r: torch.Tensor, index: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """k-NN score of every entry and where it exists, both (B, C).

        score = mean cosine of r_{n,c} to its k nearest stored positives of c − the same to its
        k nearest stored negatives of c (other images only when ``index`` is given); valid
        where both buffers of c hold at least k other images."""
        # class-major (C, B, size) throughout: the batched product's own layout, so no
        # (B, C, size) transposed copy is made (30 -> 24 ms of a 64-image step, one thread)
        rn = F.normalize(r.detach().float(), dim=-1).transpose(0, 1)  # (C, B, D)
        parts = []
        valid = torch.ones(rn.shape[:2], dtype=torch.bool, device=rn.device)
        for name in self.POLARITIES:
            feats, slots_of, _ = self._buffers_of(name)
            used = self._used_slots(slots_of)
            feats, slots_of = feats[:, :used], slots_of[:, :used]
            sim = torch.bmm(rn, feats.to(rn.device).transpose(1, 2))  # (C, B, used)
            slots = slots_of.to(rn.device)[:, None, :]  # (C, 1, used)
            blocked = slots < 0  # an empty slot, or (with index) the entry's own image
            if index is not None:
                blocked = blocked | (slots == index.to(rn.device).long()[:, None])
            sim.masked_fill_(blocked, float("-inf"))
            top = sim.topk(self.k, dim=-1).values
            # at least k usable slots <=> the k-th largest is a cosine, not the fill
            valid &= top[..., -1] > float("-inf")
            parts.append(torch.where(torch.isfinite(top), top, torch.zeros_like(top)).mean(-1))
        return (parts[0] - parts[1]).T.contiguous(), valid.T.contiguous()


class PseudoLabeler(nn.Module):
    """Pseudo-labels for unknown entries, with bookkeeping.

    :meth:`label` thresholds scores from any source (the TRM-ML head passes either the
    calibrated :class:`InstanceMemory` score or :meth:`score`); :meth:`score` is the
    multimodal-prototype source. Prototype score of an unknown entry (n, c), with
    ẑ = z_{n,c}/‖z_{n,c}‖ and, for every class c',
    ``m_{c'} = (cos(ẑ, v_{c'}) + cos(ẑ, t_{c'})) / 2`` (just ``cos(ẑ, t_{c'})`` while c' has no
    visual prototype yet):

    - ``"softmax_mean"`` (default): ``softmax_{c'}(m_{c'} / temperature)[c]`` — the entry's
      feature must be closer to class c's prototypes than to every other class's (intra- *and*
      inter-category evidence); a region feature of an absent class usually resembles whatever
      other object or background the query attended to, which sends the score to ~0.
    - ``"cosine_mean"``: ``m_c`` alone (intra-category only; thresholds then act on a cosine).

    Rule: ``score ≥ high`` → +1, ``score ≤ low`` → −1, else 0 (still unknown). With
    ``agree=True`` the classifier must concur: a pseudo-positive also needs ``σ(s_{n,c}) ≥ 0.5``
    and a pseudo-negative ``σ(s_{n,c}) < 0.5`` (two views of the same entry). An entry of class c
    can only be pseudo-labelled where its score exists (a visual prototype of c, or k stored
    images of each polarity), observed entries are never touched, and :meth:`active` is false
    during the first ``warmup`` epochs (the trainer counts epochs from 1; epoch 0 is the
    evaluation before training), i.e. pseudo-labels start at epoch ``warmup + 1``, once the
    prototypes or the memory have seen ``warmup`` epochs of observed labels.

    ``labels`` (num_train, C) int8 holds the latest pseudo-labels of every training sample (0 on
    observed entries), so notebooks can inspect them and checkpoints resume them. ``counts``
    accumulates agreement with the hidden full labels over the current epoch (reset by
    :meth:`reset_stats`), from which :meth:`stats` derives precision/recall.
    """

    #: order of the counters in the ``counts`` buffer
    COUNTERS = ("unknown", "pseudo_pos", "pseudo_neg", "evaluated", "eval_pseudo_pos",
                "eval_pseudo_neg", "unknown_pos", "unknown_neg", "true_pos", "true_neg")

    def __init__(self, num_train: int, num_classes: int, high: float = 0.9, low: float = 0.02,
                 temperature: float = 0.07, score: str = "softmax_mean", warmup: int = 2,
                 agree: bool = False):
        super().__init__()
        if score not in ("softmax_mean", "cosine_mean"):
            raise ValueError(f"method.pseudo_score must be softmax_mean|cosine_mean, got {score!r}")
        if not low < high:
            raise ValueError(f"method.pseudo_low ({low}) must be < method.pseudo_high ({high})")
        if temperature <= 0:
            raise ValueError(f"method.pseudo_temp must be > 0, got {temperature}")
        self.high, self.low, self.temperature = high, low, temperature
        self.score_rule, self.warmup, self.agree = score, warmup, agree
        self.register_buffer("labels", torch.zeros(num_train, num_classes, dtype=torch.int8))
        self.register_buffer("counts", torch.zeros(len(self.COUNTERS), dtype=torch.long))

    def active(self, epoch: int) -> bool:
        """Whether pseudo-labelling runs in (1-based) ``epoch``."""
        return epoch > self.warmup

    @torch.no_grad()
    def score(self, z: torch.Tensor, text: torch.Tensor, visual: torch.Tensor,
              visual_valid: torch.Tensor) -> torch.Tensor:
        """(B, C) prototype score of every entry (see the class docstring)."""
        zn = F.normalize(z.detach().float(), dim=-1)  # (B, C, D)
        cos_t = zn @ F.normalize(text.detach().float(), dim=-1).t()  # (B, C, C')
        cos_v = zn @ F.normalize(visual.float(), dim=-1).t()
        valid = visual_valid.to(zn.device)[None, None, :]
        mean = torch.where(valid, 0.5 * (cos_v + cos_t), cos_t)
        if self.score_rule == "cosine_mean":
            return torch.diagonal(mean, dim1=1, dim2=2)
        probs = torch.softmax(mean / self.temperature, dim=-1)
        return torch.diagonal(probs, dim1=1, dim2=2)

    def assign(self, scores: torch.Tensor, observed: torch.Tensor, valid: torch.Tensor,
               probs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) int8 pseudo-labels in {1, -1, 0}; 0 wherever a label is observed or the score
        does not exist (``valid``: (C,) per class, or (B, C) per entry).
        ``probs`` (B, C) = σ(s), required when ``agree``."""
        valid = valid.to(observed.device)
        eligible = (observed == 0) & (valid[None, :] if valid.dim() == 1 else valid)
        pos, neg = eligible & (scores >= self.high), eligible & (scores <= self.low)
        if self.agree:
            if probs is None:
                raise ValueError("PseudoLabeler(agree=True) needs the classifier's probs")
            pos, neg = pos & (probs >= 0.5), neg & (probs < 0.5)
        pseudo = torch.zeros(observed.shape, dtype=torch.int8, device=observed.device)
        pseudo[pos] = 1
        pseudo[neg] = -1
        return pseudo

    @torch.no_grad()
    def label(self, scores: torch.Tensor, valid: torch.Tensor, observed: torch.Tensor,
              index: torch.Tensor, full: torch.Tensor | None = None,
              probs: torch.Tensor | None = None) -> torch.Tensor:
        """Threshold given ``scores`` (B, C) (from any source; ``valid`` (C,) or (B, C) says
        where they exist), store the labels in the buffer and count agreement with ``full``.
        Returns (B, C) int8 in {1, -1, 0}. Soft pseudo-labels go through here too: their
        thresholded form is what the buffer and the logged precision describe."""
        pseudo = self.assign(scores, observed, valid, probs)
        self.labels[index.to(self.labels.device).long()] = pseudo.to(self.labels.device)
        self.record(pseudo, observed, full)
        return pseudo

    @torch.no_grad()
    def record(self, pseudo: torch.Tensor, observed: torch.Tensor,
               full: torch.Tensor | None) -> None:
        """Add one batch to the epoch counters (agreement counters only if ``full`` is known)."""
        unknown = observed == 0
        ppos, pneg = pseudo > 0, pseudo < 0
        c = {"unknown": unknown.sum(), "pseudo_pos": ppos.sum(), "pseudo_neg": pneg.sum()}
        if full is not None:
            fpos, fneg = unknown & (full > 0), unknown & (full < 0)
            c.update(evaluated=unknown.sum(), eval_pseudo_pos=ppos.sum(),
                     eval_pseudo_neg=pneg.sum(), unknown_pos=fpos.sum(), unknown_neg=fneg.sum(),
                     true_pos=(ppos & fpos).sum(), true_neg=(pneg & fneg).sum())
        for name, value in c.items():
            self.counts[self.COUNTERS.index(name)] += value.to(self.counts.device)

    def reset_stats(self) -> None:
        self.counts.zero_()

    def stats(self) -> dict[str, float]:
        """Epoch statistics of the pseudo-labels on unknown entries.

        ``pseudo_precision`` = correct pseudo-positives / pseudo-positives; ``pseudo_recall`` =
        correct pseudo-positives / hidden positives among unknowns; ``pseudo_neg_precision`` /
        ``pseudo_neg_recall`` the same for negatives; ``pseudo_pos_lost`` = hidden positives
        pseudo-labelled *negative* / hidden positives among unknowns (with a 5-10 % positive rate a
        negative precision of 0.97 can still turn a quarter of the missing positives into
        negatives: this is the number to watch); ``pseudo_coverage`` = labelled / unknown.
        Ratios with an empty denominator are NaN (undefined, not 0). Agreement figures use only the
        batches that carried ``full`` labels (NaN if none did)."""
        n = dict(zip(self.COUNTERS, self.counts.tolist(), strict=True))

        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else math.nan

        return {
            "pseudo_precision": ratio(n["true_pos"], n["eval_pseudo_pos"]),
            "pseudo_recall": ratio(n["true_pos"], n["unknown_pos"]),
            "pseudo_neg_precision": ratio(n["true_neg"], n["eval_pseudo_neg"]),
            "pseudo_neg_recall": ratio(n["true_neg"], n["unknown_neg"]),
            "pseudo_pos_lost": ratio(n["eval_pseudo_neg"] - n["true_neg"], n["unknown_pos"]),
            "pseudo_coverage": ratio(n["pseudo_pos"] + n["pseudo_neg"], n["unknown"]),
            "pseudo_pos": float(n["pseudo_pos"]),
            "pseudo_neg": float(n["pseudo_neg"]),
            "pseudo_unknown": float(n["unknown"]),
        }
