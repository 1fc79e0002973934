"""The one trainer: files, exact kill-and-resume, NaN handling, frozen backbone, honest validation.

Everything runs on a tiny world written here in the generic folder format (coloured squares on
noise, 4 classes) through a random-weight TinyCLIP-RN at 64 px, so no pre-training is needed.
"""

from __future__ import annotations

import math

import fixture_writers as fx
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

import trm_lib.train as T
import trm_lib.train.trainer as TR
from trm_lib.config.run_config import ConfigError, RunConfig, TrainConfig
from trm_lib.core import metrics
from trm_lib.core.losses import partial_bce
from trm_lib.core.methods import Method, MethodContext

CLASSES = fx.SQUARE_CLASSES


def make_world(root, n_train: int = 48, n_test: int = 24, seed: int = 0):
    return fx.write_square_world(root, n_train, n_test, seed)


def tiny_config(world, **overrides) -> RunConfig:
    base = {"data.dataset": "folder", "data.root": str(world), "data.proportion": 0.5,
            "data.val_fraction": 0.25, "backbone.model": "TinyCLIP-RN",
            "backbone.pretrained": None, "backbone.image_size": 64, "backbone.batch_size": 32,
            "train.epochs": 3, "train.batch_size": 16, "train.lr": 0.01, "train.device": "cpu",
            "train.progress": False, "method.name": "linear_probe"}
    base.update(overrides)
    return RunConfig().with_overrides(base)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny world, plus a private cache (masks, features) and one CPU thread."""
    root = tmp_path_factory.mktemp("world")
    cache = tmp_path_factory.mktemp("cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(cache))
        yield make_world(root)
    torch.set_num_threads(threads)


class LinearHead(Method):
    """Test-local method: dropout + linear layer on the global embedding, a per-sample buffer
    (so checkpoints must carry buffers) and dropout (so resume must restore the RNG)."""

    name = "linear_head"

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(ctx.embed_dim, len(ctx.class_names))
        self.register_buffer("seen", torch.zeros(ctx.num_train))

    def forward(self, batch):
        return {"logits": self.fc(self.drop(batch["global"]))}

    def loss(self, out, batch, epoch):
        if self.training:
            self.seen[batch["index"]] += 1
        loss = partial_bce(out["logits"], batch["observed"])
        return loss, {"cls": float(loss.detach())}

    def epoch_end(self, epoch):
        return {"seen_mean": float(self.seen.mean())}


class NaNAfterFirstEpoch(LinearHead):
    def loss(self, out, batch, epoch):
        loss, logs = super().loss(out, batch, epoch)
        return (loss * float("nan") if epoch >= 2 else loss), logs


@pytest.fixture
def head(monkeypatch):
    monkeypatch.setattr(TR, "build_method", lambda cfg, ctx: LinearHead(cfg, ctx))


def _same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    np.testing.assert_equal(a, b)  # NaN-aware exact equality


def test_train_writes_history_checkpoints_and_honest_metrics(world, tmp_path, head):
    cfg = tiny_config(world, **{"train.select": "val"})
    res = T.train(cfg, tmp_path / "run", log=None)
    out = res.out_dir
    for name in ("config.yaml", "history.csv", "last.pt", "best.pt", "test_scores.npy",
                 "result.json"):
        assert (out / name).exists(), name
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3]
    for col in ("lr", "loss", "train_cls", "val_mAP", "val_mAP_hidden", "test_mAP", "seen_mean",
                "seconds"):
        assert col in hist.columns, col
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and set(last) >= {"method", "optimizer", "scheduler", "rng",
                                                "history", "config"}
    assert torch.equal(last["method"]["seen"], torch.full((48,), 0.0).index_fill(
        0, torch.as_tensor(T.prepare_data(cfg).train_idx), 3.0))
    best = torch.load(out / "best.pt", weights_only=True)
    # the selected epoch is the best validation epoch, and "test" is the test mAP *there*
    assert best["epoch"] == res.best_epoch == int(hist.loc[hist["val_mAP"].idxmax(), "epoch"])
    assert res.metrics["test"]["mAP"] == hist.set_index("epoch").loc[res.best_epoch, "test_mAP"]
    assert res.metrics["test_oracle"]["mAP"] == hist["test_mAP"].max() >= res.metrics["test"]["mAP"]
    # saved scores reproduce the reported test metrics through the metrics module
    data = T.prepare_data(cfg)
    assert res.scores.shape == (24, 4)
    again = metrics.evaluate_scores(np.load(out / "test_scores.npy"), data.test.labels, CLASSES)
    assert again["mAP"] == res.metrics["test"]["mAP"]
    assert res.per_class_ap == {c: again[f"AP/{c}"] for c in CLASSES}
    # a finished run is read back, not retrained
    again_res = T.train(cfg, out, log=None)
    _same_metrics(again_res.metrics, res.metrics)
    assert again_res.complete and again_res.history["epoch"].tolist() == [1, 2, 3]


def test_kill_and_resume_reproduces_uninterrupted_run(world, tmp_path, head):
    cfg = tiny_config(world)
    full = T.train(cfg, tmp_path / "full", log=None)
    part = T.train(cfg, tmp_path / "cut", stop_after_epoch=1, log=None)
    assert not part.complete and part.epochs_done == 1
    assert not (tmp_path / "cut" / "result.json").exists()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    lines: list[str] = []
    resumed = T.train(cfg, tmp_path / "cut", log=lines.append)  # a new call = a new "process"
    assert any("resuming" in line for line in lines)
    assert resumed.complete and resumed.best_epoch == full.best_epoch
    _same_metrics(resumed.metrics, full.metrics)
    np.testing.assert_array_equal(resumed.scores, full.scores)
    cols = [c for c in full.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(resumed.history[cols], full.history[cols])
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["method"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(world, tmp_path, head):
    cfg = tiny_config(world, **{"train.epochs": 1})
    T.train(cfg, tmp_path / "r", stop_after_epoch=1, log=None)
    with pytest.raises(T.TrainingError, match=r"train\.lr: 0\.01 \(checkpoint\) != 0\.02"):
        T.train(cfg.with_overrides({"train.lr": 0.02}), tmp_path / "r", log=None)
    # fields that do not change results may differ
    T.train(cfg.with_overrides({"train.num_workers": 0, "train.progress": False}),
            tmp_path / "r", log=None)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(world, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(TR, "build_method", lambda cfg, ctx: NaNAfterFirstEpoch(cfg, ctx))
    out = tmp_path / "nan"
    with pytest.raises(T.TrainingError, match=r"non-finite loss \(nan\) at epoch 2, step 1/") as err:
        T.train(tiny_config(world), out, log=None)
    assert f"last good checkpoint kept: {out / 'last.pt'} (epoch 1)" in str(err.value)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())
    assert len(pd.read_csv(out / "history.csv")) == 1 and not (out / "result.json").exists()


def test_gradient_flows_only_into_method_parameters_live_images(world, tmp_path, head):
    cfg = tiny_config(world, **{"train.use_cache": False, "train.epochs": 1,
                                "train.augment": "crop_flip"})
    res = T.Resources()
    backbone = res.backbone(cfg.backbone, torch.device("cpu"))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    captured = {}

    def build(cfg_m, ctx):
        captured["m"] = LinearHead(cfg_m, ctx)
        captured["init"] = {k: v.clone() for k, v in captured["m"].state_dict().items()}
        return captured["m"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TR, "build_method", build)
        T.train(cfg, tmp_path / "live", resources=res, log=None)
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not torch.equal(captured["init"]["fc.weight"], captured["m"].fc.weight)


def test_method_exposing_backbone_parameters_is_refused(world, tmp_path, monkeypatch):
    class Leaky(LinearHead):
        def trainable_parameters(self):
            return [*super().trainable_parameters(), *self.ctx.backbone.parameters()]

    monkeypatch.setattr(TR, "build_method", lambda cfg, ctx: Leaky(cfg, ctx))
    with pytest.raises(T.TrainingError, match="frozen backbone parameters"):
        T.train(tiny_config(world), tmp_path / "leak", log=None)


def test_validation_metric_ignores_unknown_entries():
    rng = np.random.default_rng(0)
    full = np.where(rng.random((60, 5)) < 0.3, 1, -1)
    full[0] = 1
    observed = np.where(rng.random(full.shape) < 0.5, full, 0)
    scores = rng.random(full.shape)
    res = T.observed_metrics(scores, observed)
    assert res["n_excluded_classes"] == 0
    # changing the scores of unknown entries changes nothing
    scrambled = np.where(observed == 0, rng.random(full.shape), scores)
    assert T.observed_metrics(scrambled, observed) == res
    # per class: sklearn AP over the known rows only
    aps = [average_precision_score(observed[observed[:, c] != 0, c] == 1,
                                   scores[observed[:, c] != 0, c]) for c in range(5)]
    assert math.isclose(res["mAP"], float(np.mean(aps)), rel_tol=1e-12)
    assert res["known_fraction"] == (observed != 0).mean()
    # "negative" (protocol B): unknowns count as negatives
    neg = T.observed_metrics(scores, observed, unknown="negative")
    want = np.mean([average_precision_score(observed[:, c] == 1, scores[:, c]) for c in range(5)])
    assert math.isclose(neg["mAP"], want, rel_tol=1e-12)
    # classes that cannot rank are excluded and counted: no observed positive (class 2), or
    # only observed positives (class 3, whose AP would be a trivial 1)
    observed[:, 2] = np.where(observed[:, 2] == 1, 0, observed[:, 2])
    observed[:, 3] = np.where(observed[:, 3] == -1, 0, observed[:, 3])
    res = T.observed_metrics(scores, observed)
    assert res["n_excluded_classes"] == 2
    assert math.isclose(res["mAP"], float(np.mean([aps[0], aps[1], aps[4]])), rel_tol=1e-12)
    assert math.isnan(T.observed_metrics(scores, np.zeros_like(observed))["mAP"])


def test_lr_schedule_constant_warmup_then_cosine():
    cfg = TrainConfig(epochs=4, lr=0.1, warmup_epochs=1, warmup_lr=1e-5)
    lrs = [T.lr_at(s, cfg, steps_per_epoch=10) for s in range(40)]
    assert lrs[:10] == [1e-5] * 10 and lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.1 * 0.01
    const = TrainConfig(epochs=4, lr=0.1, warmup_epochs=0, scheduler="constant")
    assert {T.lr_at(s, const, 10) for s in range(40)} == {0.1}


def test_epoch_order_depends_only_on_seed_and_epoch():
    idx = np.arange(50)
    assert np.array_equal(T.epoch_order(idx, 3, 2), T.epoch_order(idx, 3, 2))
    assert not np.array_equal(T.epoch_order(idx, 3, 2), T.epoch_order(idx, 3, 3))
    assert sorted(T.epoch_order(idx, 3, 2)) == list(idx)


def test_zero_shot_is_evaluated_without_training_through_the_evaluator(world, tmp_path):
    cfg = tiny_config(world, **{"method.name": "zero_shot"})
    res = T.train(cfg, tmp_path / "zs", log=None)
    assert res.best_epoch == 0 and res.history["epoch"].tolist() == [0]
    assert "loss" not in res.history.columns
    run = T.load_run(tmp_path / "zs")
    direct = T.evaluate(run.method, run.batches("test"), run.session.data.test.labels)
    assert direct["mAP"] == res.metrics["test"]["mAP"]


@pytest.mark.parametrize("name", ["trm_ml", "dualcoop"])
def test_method_one_epoch_and_load_run_reproduces_selected_epoch(world, tmp_path, name):
    cfg = tiny_config(world, **{"method.name": name, "train.epochs": 1, "method.num_heads": 2,
                                "method.n_ctx": 4})
    res = T.train(cfg, tmp_path / name, log=None)
    assert res.complete and np.isfinite(res.metrics["test"]["mAP"])
    assert np.isfinite(res.history["loss"]).all()
    run = T.load_run(tmp_path / name)
    values = run.evaluate("test")
    assert values["mAP"] == res.metrics["test"]["mAP"]
    out = run.method(next(iter(run.batches("test", indices=[0, 1]))))
    assert out["logits"].shape == (2, 4)
    assert "observed_mAP" in run.evaluate("val")
    # the method context carries the prompt words (here the folder world's own class names)
    assert run.session.ctx.prompt_names == T.prompt_words(run.session.data.train)


def test_history_has_one_column_per_declared_loss_term_and_the_figure_plots_them(world, tmp_path):
    """A real short TRM-ML run with soft pseudo-labels from epoch 1: history holds the total
    ``loss`` and one ``train_<term>`` per term TRM-ML logged (``train_pseudo`` included, no
    ``train_loss`` copy of the total), and the training-curves figure draws exactly those."""
    from trm_lib import viz
    from trm_lib.core.model import TRMML

    cfg = tiny_config(world, **{"method.name": "trm_ml", "train.epochs": 2, "method.num_heads": 2,
                                "method.pseudo_warmup": 1})
    hist = T.train(cfg, tmp_path / "run", log=None).history
    terms = [f"train_{t}" for t in TRMML.loss_terms if f"train_{t}" in hist.columns]
    assert "train_loss" not in hist.columns and np.isfinite(hist["loss"]).all()
    assert {"train_cls", "train_pseudo", "train_kd", "train_mcl"} <= set(terms)
    total = hist["train_cls"] + cfg.method.kd_weight * hist["train_kd"] \
        + cfg.method.mcl_weight * hist["train_mcl"]
    assert (hist["loss"] >= total - 1e-6).all()  # the total adds the pseudo term on top
    fig = viz.plot_training_curves(hist)
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["loss", *terms]


def test_prompt_words_follow_the_datasets_prompt_names():
    from types import SimpleNamespace

    ds = SimpleNamespace(class_names=["diningtable", "cat"], num_classes=2, name="d",
                         split="train", meta={"prompt_names": ["dining table", "cat"]})
    assert T.prompt_words(ds) == ["dining table", "cat"]
    ds.meta = {"prompt_names": {"diningtable": "dining table"}}
    assert T.prompt_words(ds) == ["dining table", "cat"]
    ds.meta = {}
    assert T.prompt_words(ds) == ["diningtable", "cat"]


def test_predict_keeps_float64_probabilities():
    """Confident images differ only below float32 resolution; rounding them would tie them."""

    class Confident(Method):
        def forward(self, batch):
            return {"logits": batch["global"].double()}

        def scores(self, out):
            return torch.sigmoid(out["logits"])

    ctx = MethodContext(["a"], torch.ones(1, 1), 1, 1, (1, 1), 2)
    m = Confident(RunConfig().method, ctx)
    batches = [{"global": torch.tensor([[20.0], [21.0]], dtype=torch.float64)}]
    scores = T.predict(m, batches)
    assert scores.dtype == np.float64 and scores[1, 0] > scores[0, 0]
    assert np.float32(scores[0, 0]) == np.float32(scores[1, 0]) == 1.0  # float32 would tie


def test_probabilities_rank_like_the_logits_even_where_sigmoid_saturates():
    from sklearn.metrics import average_precision_score

    from trm_lib.core.model import probabilities

    logits = torch.tensor([-60.0, -5.0, 0.0, 3.0, 38.0, 40.0, 45.0, 90.0], dtype=torch.float64)
    assert torch.sigmoid(logits)[-3:].eq(1.0).all()  # float64 sigmoid ties the confident ones
    p = probabilities(logits)
    assert torch.all(p[1:] > p[:-1]) and p.min() >= 0 and p.max() <= 1
    assert p[2].item() == 0.5  # threshold 0.5 still means s > 0
    assert torch.allclose(p, torch.sigmoid(logits), atol=2e-6)
    y = np.array([0, 0, 1, 0, 0, 1, 0, 1])
    assert average_precision_score(y, p.numpy()) == average_precision_score(y, logits.numpy())
    assert average_precision_score(y, torch.sigmoid(logits).numpy()) != \
        average_precision_score(y, logits.numpy())


def test_select_last_reports_the_final_epoch(world, tmp_path, head):
    res = T.train(tiny_config(world, **{"train.select": "last"}), tmp_path / "run", log=None)
    hist = res.history.set_index("epoch")
    assert res.best_epoch == 3
    assert res.metrics["test"]["mAP"] == hist.loc[3, "test_mAP"]
    assert res.metrics["val"]["mAP"] == hist.loc[3, "val_mAP"]
    assert res.metrics["val"]["mAP_hidden"] == hist.loc[3, "val_mAP_hidden"]
    assert res.metrics["test_oracle"]["mAP"] == hist["test_mAP"].max()


@pytest.mark.parametrize("select", ["val", "last"])
def test_test_every_scores_fewer_epochs_without_changing_the_result(world, tmp_path, head,
                                                                    select):
    """train.test_every only skips test scoring: the model, the selected epoch and its test
    numbers are those of the run scored every epoch; test_oracle is over the scored epochs."""
    every = T.train(tiny_config(world, **{"train.select": select, "train.epochs": 4}),
                    tmp_path / "every", log=None)
    sparse = T.train(tiny_config(world, **{"train.select": select, "train.epochs": 4,
                                           "train.test_every": 0}), tmp_path / "sparse", log=None)
    scored = sparse.history.set_index("epoch")["test_mAP"].dropna()
    assert 4 in scored.index and sparse.best_epoch in scored.index
    # scored once at the end: the last epoch, and the selected one from best.pt, not every
    # epoch that validation selected on the way
    assert list(scored.index) == sorted({4, sparse.best_epoch})
    assert torch.load(tmp_path / "sparse" / "best.pt", weights_only=True)["test"]["mAP"] \
        == sparse.metrics["test"]["mAP"]
    assert sparse.best_epoch == every.best_epoch
    _same_metrics(sparse.metrics["test"], every.metrics["test"])
    _same_metrics(sparse.metrics["val"], every.metrics["val"])
    np.testing.assert_array_equal(sparse.scores, every.scores)
    assert sparse.metrics["test_oracle"]["mAP"] == scored.max()
    # every second epoch: 2 and 4 (plus val-selected ones)
    half = T.train(tiny_config(world, **{"train.select": "last", "train.epochs": 4,
                                         "train.test_every": 2}), tmp_path / "half", log=None)
    assert list(half.history.set_index("epoch")["test_mAP"].dropna().index) == [2, 4]
    # runs differing only in test_every share a config hash (and so a run folder)
    assert T.config_hash(tiny_config(world)) == T.config_hash(
        tiny_config(world, **{"train.test_every": 3}))
    with pytest.raises(ConfigError, match="train.test_every"):
        tiny_config(world, **{"train.test_every": -1})


def test_a_run_stopped_after_an_unselected_epoch_resumes_to_the_same_numbers(
        world, tmp_path, head, monkeypatch):
    """test_every=0 and validation preferring epoch 1: a run stopped after epoch 2 scores its
    selected epoch from best.pt, yet last.pt keeps epoch 2's state, so resuming it gives the
    uninterrupted run's numbers."""
    validate = TR._validate

    def falling(loop, row):  # a validation score that only gets worse after epoch 1
        val = validate(loop, row)
        val["mAP"] = row["val_mAP"] = 1.0 - 0.1 * row["epoch"]
        return val

    monkeypatch.setattr(TR, "_validate", falling)
    cfg = tiny_config(world, **{"train.select": "val", "train.epochs": 3,
                                "train.test_every": 0})
    full = T.train(cfg, tmp_path / "full", log=None)
    assert full.best_epoch == 1
    part = T.train(cfg, tmp_path / "cut", stop_after_epoch=2, log=None)
    assert part.best_epoch == 1 and not part.complete
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = T.train(cfg, tmp_path / "cut", log=None)
    _same_metrics(resumed.metrics, full.metrics)
    np.testing.assert_array_equal(resumed.scores, full.scores)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["method"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resources_keep_worlds_with_the_same_labels_apart(monkeypatch):
    """SynthScenes worlds of different difficulty share classes, paths and labels (so their
    fingerprint): the in-process feature cache must still tell them apart by folder."""
    from types import SimpleNamespace

    import trm_lib.backbone.features as features
    from trm_lib.config.run_config import BackboneConfig

    calls = []
    monkeypatch.setattr(features, "compute_features",
                        lambda backbone, ds, **kw: calls.append(ds.root) or object())
    res = T.Resources()

    def world(root):
        return SimpleNamespace(name="synthscenes", split="train", root=root,
                               fingerprint=lambda: "same labels")

    easy, hard = world("/w/easy"), world("/w/hard")
    a = res.features(BackboneConfig(), None, easy, False, False)
    b = res.features(BackboneConfig(), None, hard, False, False)
    assert a is not b and calls == ["/w/easy", "/w/hard"]
    assert res.features(BackboneConfig(), None, easy, False, False) is a  # still cached


@pytest.mark.parametrize(("setting", "expected"), [
    ({"data.proportion": 1.0}, True), ({"data.protocol": "full"}, True),
    ({"data.proportion": 0.5}, False), ({"data.protocol": "single_positive"}, False)])
def test_context_says_when_every_training_label_is_observed(world, setting, expected):
    """The trainer tells the method when nothing is left to pseudo-label (TRM-ML then skips the
    k-NN score and its memory; tests/test_model.py checks that training is the same)."""
    from trm_lib.train.session import Session

    session = Session.build(tiny_config(world, **setting))
    observed = session.data.observed[session.data.train_idx]
    assert session.ctx.all_observed is expected
    assert session.ctx.all_observed == bool((observed != 0).all())
