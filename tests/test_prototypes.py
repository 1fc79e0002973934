"""Memory bank, visual prototypes and the pseudo-labeler (docs/METHOD_CHOICES.md: the prototype and pseudo-label rows) on hand examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trm_lib.core.prototypes import InstanceMemory, PrototypeMemory, PseudoLabeler

torch.set_num_threads(1)


def _feats(B: int, C: int, D: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, C, D, generator=torch.Generator().manual_seed(seed))


def test_gate_admits_only_confident_observed_positives():
    mem = PrototypeMemory(num_classes=3, dim=4, memory_size=8, gate=0.8)
    z = _feats(2, 3, 4)
    probs = torch.tensor([[0.9, 0.5, 0.95], [0.99, 0.9, 0.1]])
    targets = torch.tensor([[1, 1, 0], [-1, 1, 1]])
    # entering: (0,0) and (1,1); (0,1) is unconfident, (0,2) unknown, (1,0) negative, (1,2) low
    assert mem.update(z, probs, targets) == 2
    assert mem.bank_count.tolist() == [1, 1, 0]
    assert mem.visual_valid.tolist() == [True, True, False]
    assert torch.allclose(mem.bank[0, 0], F.normalize(z[0, 0], dim=0))
    assert torch.allclose(mem.bank[1, 0], F.normalize(z[1, 1], dim=0))
    assert mem.update(z, torch.zeros(2, 3), targets) == 0  # nothing is confident


def test_ring_buffer_keeps_the_latest_features():
    mem = PrototypeMemory(num_classes=1, dim=2, memory_size=3, update="overwrite")
    vecs = [torch.tensor([[[math.cos(a), math.sin(a)]]]) for a in (0.1, 0.2, 0.3, 0.4, 0.5)]
    for v in vecs:
        mem.update(v, torch.ones(1, 1), torch.ones(1, 1))
    feats, labels = mem.bank_features()
    assert labels.tolist() == [0, 0, 0]
    got = sorted(round(math.atan2(f[1].item(), f[0].item()), 4) for f in feats)
    assert got == [0.3, 0.4, 0.5]
    assert mem.bank_ptr.item() == 5 % 3
    # overwrite = normalised mean of the bank
    expected = F.normalize(torch.stack([vecs[i][0, 0] for i in (2, 3, 4)]).mean(0), dim=0)
    assert torch.allclose(mem.visual[0], expected, atol=1e-6)


def test_more_features_than_slots_in_one_batch():
    mem = PrototypeMemory(num_classes=1, dim=3, memory_size=2)
    z = _feats(5, 1, 3)
    mem.update(z, torch.ones(5, 1), torch.ones(5, 1))
    feats, _ = mem.bank_features()
    assert mem.bank_count.item() == 2
    assert torch.allclose(feats, F.normalize(z[3:, 0], dim=-1))


def test_ema_versus_overwrite():
    z1, z2 = _feats(3, 1, 4, seed=1), _feats(2, 1, 4, seed=2)
    ones = torch.ones
    ema = PrototypeMemory(num_classes=1, dim=4, memory_size=16, update="ema", momentum=0.9)
    ovw = PrototypeMemory(num_classes=1, dim=4, memory_size=16, update="overwrite")
    for mem in (ema, ovw):
        mem.update(z1, ones(3, 1), ones(3, 1))
        mem.update(z2, ones(2, 1), ones(2, 1))
    n1, n2 = F.normalize(z1[:, 0], dim=-1), F.normalize(z2[:, 0], dim=-1)
    first = F.normalize(n1.mean(0), dim=0)
    assert torch.allclose(ema.visual[0], F.normalize(0.9 * first + 0.1 * n2.mean(0), dim=0),
                          atol=1e-6)
    assert torch.allclose(ovw.visual[0], F.normalize(torch.cat([n1, n2]).mean(0), dim=0),
                          atol=1e-6)


def test_bad_switches_name_the_field():
    with pytest.raises(ValueError, match="method.proto_update"):
        PrototypeMemory(2, 4, update="median")
    with pytest.raises(ValueError, match="method.pseudo_low"):
        PseudoLabeler(4, 2, high=0.2, low=0.5)


def test_thresholds_never_touch_observed_or_prototypeless_classes():
    pl = PseudoLabeler(num_train=4, num_classes=4, high=0.9, low=0.1)
    scores = torch.tensor([[0.95, 0.05, 0.5, 0.99], [0.9, 0.1, 0.11, 0.95]])
    observed = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]])
    valid = torch.tensor([True, True, True, False])
    pseudo = pl.assign(scores, observed, valid)
    assert pseudo.tolist() == [[1, -1, 0, 0], [1, -1, 0, 0]]
    assert pseudo.dtype == torch.int8


def test_agreement_rule_needs_the_classifier_to_concur():
    pl = PseudoLabeler(num_train=2, num_classes=3, high=0.9, low=0.1, agree=True)
    scores = torch.tensor([[0.95, 0.95, 0.05], [0.05, 0.95, 0.5]])
    probs = torch.tensor([[0.7, 0.2, 0.3], [0.6, 0.5, 0.9]])
    observed = torch.zeros(2, 3)
    pseudo = pl.assign(scores, observed, torch.ones(3, dtype=torch.bool), probs)
    assert pseudo.tolist() == [[1, 0, -1], [0, 1, 0]]
    with pytest.raises(ValueError, match="probs"):
        pl.assign(scores, observed, torch.ones(3, dtype=torch.bool))


def test_softmax_mean_score_by_hand():
    # two classes in 2-D; feature aligned with class 0's text and visual prototype
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (B=1, C=2, D=2)
    pl = PseudoLabeler(1, 2, temperature=0.5)
    s = pl.score(z, text, visual, torch.tensor([True, True]))
    m0, m1 = (1.0 + 1.0) / 2, (0.0 + 0.6) / 2  # mean(cos visual, cos text) per class
    p0 = math.exp(m0 / 0.5) / (math.exp(m0 / 0.5) + math.exp(m1 / 0.5))
    assert s[0, 0].item() == pytest.approx(p0, rel=1e-6)
    assert s[0, 1].item() == pytest.approx(1 - p0, rel=1e-6)
    # without a visual prototype for class 1 only its text counts
    s = pl.score(z, text, visual, torch.tensor([True, False]))
    p0 = math.exp(1.0 / 0.5) / (math.exp(1.0 / 0.5) + math.exp(0.0))
    assert s[0, 0].item() == pytest.approx(p0, rel=1e-6)
    cos = PseudoLabeler(1, 2, score="cosine_mean").score(z, text, visual, torch.ones(2, dtype=bool))
    assert cos[0].tolist() == pytest.approx([m0, m1])


def test_warmup_then_prototype_labels_buffer_and_counts():
    C, D = 3, 4
    mem = PrototypeMemory(C, D, memory_size=4)
    text = torch.eye(C, D)
    mem.update(text[None].repeat(2, 1, 1), torch.ones(2, C), torch.ones(2, C))  # prototypes = t
    pl = PseudoLabeler(num_train=10, num_classes=C, high=0.9, low=0.05, temperature=0.07,
                       warmup=2)
    z = text[None].repeat(2, 1, 1).clone()  # every query looks exactly like its class
    z[1, 2] = text[0]  # ... except sample 1, class 2, which looks like class 0
    observed = torch.tensor([[1, 0, 0], [0, -1, 0]])
    full = torch.tensor([[1, 1, -1], [1, -1, -1]])
    index = torch.tensor([7, 3])
    assert not pl.active(1) and not pl.active(2) and pl.active(3)  # warm-up epochs are 1-based
    assert not pl.labels.any() and not pl.counts.any()
    scores = pl.score(z, text, mem.visual, mem.visual_valid)
    pseudo = pl.label(scores, mem.visual_valid, observed, index, full)
    assert pseudo.tolist() == [[0, 1, 1], [1, 0, -1]]
    assert pl.labels[7].tolist() == [0, 1, 1] and pl.labels[3].tolist() == [1, 0, -1]
    st = pl.stats()
    # unknown entries: (0,1) pos->1 ok, (0,2) neg->1 wrong, (1,0) pos->1 ok, (1,2) neg->-1 ok
    assert st["pseudo_precision"] == pytest.approx(2 / 3)
    assert st["pseudo_recall"] == pytest.approx(1.0)
    assert st["pseudo_neg_precision"] == pytest.approx(1.0)
    assert st["pseudo_neg_recall"] == pytest.approx(1 / 2)
    assert st["pseudo_pos_lost"] == pytest.approx(0.0)
    assert st["pseudo_coverage"] == pytest.approx(1.0)
    assert (st["pseudo_pos"], st["pseudo_neg"], st["pseudo_unknown"]) == (3, 1, 4)
    pl.reset_stats()
    assert math.isnan(pl.stats()["pseudo_precision"])


def test_stats_by_hand_and_without_full_labels():
    pl = PseudoLabeler(num_train=2, num_classes=4)
    observed = torch.tensor([[0, 0, 0, 0], [1, 0, 0, -1]])
    pseudo = torch.tensor([[1, 1, -1, 0], [0, -1, 0, 0]], dtype=torch.int8)
    full = torch.tensor([[1, -1, -1, 1], [1, -1, 1, -1]])
    pl.record(pseudo, observed, full)
    st = pl.stats()
    # unknown: 6 entries; hidden positives among them (0,0) (0,3) (1,2) = 3, negatives 3
    assert st["pseudo_precision"] == pytest.approx(1 / 2)
    assert st["pseudo_recall"] == pytest.approx(1 / 3)
    assert st["pseudo_neg_precision"] == pytest.approx(1.0)
    assert st["pseudo_neg_recall"] == pytest.approx(2 / 3)
    assert st["pseudo_pos_lost"] == pytest.approx(0.0)
    pl.reset_stats()
    pl.record(torch.tensor([[-1, 0, 0, -1]], dtype=torch.int8), observed[:1], full[:1])
    assert pl.stats()["pseudo_pos_lost"] == pytest.approx(2 / 2)  # both hidden positives lost
    assert st["pseudo_coverage"] == pytest.approx(4 / 6)
    pl.reset_stats()
    pl.record(pseudo, observed, None)  # real data without hidden labels: counts only
    st = pl.stats()
    assert math.isnan(st["pseudo_precision"]) and st["pseudo_coverage"] == pytest.approx(4 / 6)


def test_state_round_trip(tmp_path):
    mem = PrototypeMemory(3, 4, memory_size=2)
    mem.update(_feats(4, 3, 4), torch.ones(4, 3), torch.ones(4, 3))
    pl = PseudoLabeler(5, 3)
    pl.labels[2] = torch.tensor([1, -1, 0], dtype=torch.int8)
    pl.counts += 3
    torch.save({"m": mem.state_dict(), "p": pl.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    mem2, pl2 = PrototypeMemory(3, 4, memory_size=2), PseudoLabeler(5, 3)
    mem2.load_state_dict(state["m"])
    pl2.load_state_dict(state["p"])
    for a, b in zip(list(mem.buffers()) + list(pl.buffers()),
                    list(mem2.buffers()) + list(pl2.buffers()), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- instance memory (k-NN source)

def _stored(mem: InstanceMemory, name: str, c: int) -> dict[int, torch.Tensor]:
    """{sample index: stored feature} of one buffer."""
    feats, index = getattr(mem, f"{name}_feats")[c], getattr(mem, f"{name}_index")[c]
    return {int(i): feats[j] for j, i in enumerate(index.tolist()) if i >= 0}


def test_instance_memory_stores_each_observed_image_once():
    mem = InstanceMemory(num_classes=2, dim=3, size=4, k=1)
    r = _feats(3, 2, 3)
    observed = torch.tensor([[1, -1], [-1, 0], [0, 1]])
    mem.update(r, observed, torch.tensor([10, 11, 12]))
    assert set(_stored(mem, "pos", 0)) == {10} and set(_stored(mem, "neg", 0)) == {11}
    assert set(_stored(mem, "pos", 1)) == {12} and set(_stored(mem, "neg", 1)) == {10}
    torch.testing.assert_close(_stored(mem, "pos", 0)[10], F.normalize(r[0, 0], dim=0))
    # the same image again (a later epoch, new feature): its slot is overwritten, not duplicated
    r2 = _feats(3, 2, 3, seed=1)
    mem.update(r2, observed, torch.tensor([10, 11, 12]))
    assert (mem.pos_index[0] >= 0).sum() == 1
    torch.testing.assert_close(_stored(mem, "pos", 0)[10], F.normalize(r2[0, 0], dim=0))


def test_instance_memory_ring_keeps_the_latest_images():
    mem = InstanceMemory(num_classes=1, dim=2, size=3, k=1)
    for i in range(5):
        mem.update(_feats(1, 1, 2, seed=i), torch.ones(1, 1), torch.tensor([i]))
    assert set(_stored(mem, "pos", 0)) == {2, 3, 4}
    # more new images in one batch than slots: the last ones stay
    mem.update(_feats(5, 1, 2, seed=9), torch.ones(5, 1), torch.arange(20, 25))
    assert set(_stored(mem, "pos", 0)) == {22, 23, 24}


def test_instance_memory_single_positive_batches_store_unknowns_as_negatives():
    mem = InstanceMemory(num_classes=2, dim=2, size=4, k=1)
    mem.update(_feats(2, 2, 2), torch.tensor([[1, 0], [0, 1]]), torch.tensor([0, 1]))
    assert set(_stored(mem, "neg", 0)) == {1} and set(_stored(mem, "neg", 1)) == {0}
    # a batch with an observed negative stores only observed entries
    mem2 = InstanceMemory(num_classes=2, dim=2, size=4, k=1)
    mem2.update(_feats(2, 2, 2), torch.tensor([[1, 0], [0, -1]]), torch.tensor([0, 1]))
    assert set(_stored(mem2, "neg", 0)) == set() and set(_stored(mem2, "neg", 1)) == {1}


def test_instance_memory_score_against_a_brute_force_reference():
    C, D, k = 3, 5, 2
    mem = InstanceMemory(num_classes=C, dim=D, size=8, k=k)
    g = torch.Generator().manual_seed(0)
    r_bank = torch.randn(10, C, D, generator=g)
    observed = torch.where(torch.rand(10, C, generator=g) < 0.5, 1, -1)
    mem.update(r_bank, observed, torch.arange(10))
    query = torch.randn(4, C, D, generator=g)
    index = torch.tensor([0, 3, 99, 7])  # three of them are stored images
    score, valid = mem.score(query, index)
    bank = F.normalize(r_bank, dim=-1)
    for b in range(4):
        for c in range(C):
            sims = {1: [], -1: []}
            for n in range(10):
                if n == int(index[b]):
                    continue  # never its own neighbour
                cos = float(F.normalize(query[b, c], dim=0) @ bank[n, c])
                sims[1 if observed[n, c] > 0 else -1].append(cos)
            if len(sims[1]) < k or len(sims[-1]) < k:
                assert not valid[b, c]
                continue
            want = (sum(sorted(sims[1])[-k:]) - sum(sorted(sims[-1])[-k:])) / k
            assert valid[b, c]
            assert abs(float(score[b, c]) - want) < 1e-5
    assert valid.any()


def test_instance_memory_scores_only_filled_slots_with_the_same_result(monkeypatch):
    """The k-NN product skips the rings' empty tail: the same scores and validity as scoring
    every slot, from nearly empty rings to wrapped ones."""
    C, D, size, k = 3, 6, 32, 3
    g = torch.Generator().manual_seed(1)
    for n_images in (2, 5, 20, 200):  # fewer than k, partly filled, wrapped
        mem = InstanceMemory(num_classes=C, dim=D, size=size, k=k)
        observed = torch.where(torch.rand(n_images, C, generator=g) < 0.3, 1, -1)
        mem.update(torch.randn(n_images, C, D, generator=g), observed, torch.arange(n_images))
        query, index = torch.randn(7, C, D, generator=g), torch.arange(7)
        used = mem._used_slots(mem.pos_index)
        assert used == min(size, max(k, int((observed > 0).sum(0).max())))
        fast = mem.score(query, index)
        monkeypatch.setattr(InstanceMemory, "_used_slots", lambda self, slots: self.size)
        full = mem.score(query, index)
        monkeypatch.undo()
        assert torch.equal(fast[1], full[1])
        torch.testing.assert_close(fast[0], full[0], rtol=0, atol=1e-6)


def test_instance_memory_needs_k_images_and_names_bad_sizes():
    mem = InstanceMemory(num_classes=1, dim=2, size=4, k=2)
    mem.update(_feats(3, 1, 2), torch.tensor([[1], [-1], [-1]]), torch.arange(3))
    _, valid = mem.score(_feats(1, 1, 2, seed=5))
    assert not valid.any()  # one positive < k
    with pytest.raises(ValueError, match="method.pseudo_k"):
        InstanceMemory(1, 2, size=4, k=5)


def test_label_thresholds_any_score_with_entry_validity():
    pl = PseudoLabeler(num_train=4, num_classes=2, high=0.8, low=0.1)
    scores = torch.tensor([[0.9, 0.05], [0.9, 0.05]])
    valid = torch.tensor([[True, True], [False, True]])
    full = torch.tensor([[1, -1], [1, 1]])
    pseudo = pl.label(scores, valid, torch.zeros(2, 2), torch.tensor([2, 3]), full)
    assert pseudo.tolist() == [[1, -1], [0, -1]]
    assert pl.labels[2:].tolist() == [[1, -1], [0, -1]]
    stats = pl.stats()
    assert stats["pseudo_precision"] == 1.0 and stats["pseudo_neg_precision"] == 0.5


def _update_by_class(mem: InstanceMemory, r: torch.Tensor, observed: torch.Tensor,
                     index: torch.Tensor) -> None:
    """The per-class loop InstanceMemory.update replaced: the reference it must match."""
    rn = F.normalize(r.detach().float(), dim=-1)
    index = index.long()
    negative = observed < 0
    if not negative.any():
        negative = observed == 0
    for name, mask in zip(mem.POLARITIES, (observed > 0, negative), strict=True):
        feats, slots_of, ptr = mem._buffers_of(name)
        for c in mask.any(0).nonzero().flatten().tolist():
            rows = mask[:, c].nonzero().flatten()
            idx = index[rows]
            hit = slots_of[c][None, :] == idx[:, None]
            known = hit.any(1)
            if known.any():
                feats[c, hit[known].float().argmax(1)] = rn[rows[known], c]
            fresh = (~known).nonzero().flatten()[-mem.size:]
            if len(fresh):
                slot = (ptr[c] + torch.arange(len(fresh))) % mem.size
                feats[c, slot] = rn[rows[fresh], c]
                slots_of[c, slot] = idx[fresh]
                ptr[c] = (ptr[c] + len(fresh)) % mem.size


@pytest.mark.parametrize("seed", range(6))
def test_instance_memory_update_matches_the_per_class_loop_bit_for_bit(seed):
    g = torch.Generator().manual_seed(seed)
    C, D, size = 7, 4, int(torch.randint(3, 12, (1,), generator=g))
    fast, slow = (InstanceMemory(C, D, size=size, k=1) for _ in range(2))
    for step in range(25):
        B = int(torch.randint(1, 2 * size + 3, (1,), generator=g))
        # indices drawn from a small pool, so images recur (kept slots) and rings wrap
        index = torch.randperm(3 * size, generator=g)[:B]
        observed = torch.randint(-1, 2, (B, C), generator=g)
        if step % 4 == 3:  # single-positive batches: no observed negative anywhere
            observed = observed.clamp(min=0)
        r = torch.randn(B, C, D, generator=g)
        fast.update(r, observed, index)
        _update_by_class(slow, r, observed, index)
        for name, a in fast.state_dict().items():
            assert torch.equal(a, slow.state_dict()[name]), (seed, step, name)
    assert (fast.pos_index >= 0).all()  # the rings filled and wrapped
