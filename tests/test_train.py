"""Training protocols: question dropping, splits, draws, bags, schedule, and a tiny end-to-end run."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from fiveflow.train.data import load_bag
from fiveflow.train.descriptions import (
    all_variants,
    draw_dropped_questions,
    n_variants,
    perturb_description,
    perturb_descriptions,
)
from fiveflow.train.schedule import lr_factor
from fiveflow.train.splits import make_fewshot_draws, make_split

ROOT = Path(__file__).resolve().parents[1]
PRED_COLUMNS = ["method", "shots", "run", "slide_id", "patient_id", "label", "prob", "pred"]


# -- question dropping ----------------------------------------------------------------------
DESCS = [
    "Well differentiated;Unknown;Vascular invasion present;No pleural invasion;Unknown;R0",
    "Well differentiated;Unknown;Vascular invasion present;Unknown;Unknown;R0",
    "Poorly differentiated;STAS present;Unknown;No pleural invasion;Unknown;R1",
]


def test_drop_removes_unknown_and_merges_and_remaps():
    # drop question 3 (pleural): descriptions 0 and 1 become identical and merge
    texts, remap = perturb_descriptions(DESCS, [3], rng=None, shuffle=False)
    assert texts == ["Well differentiated; Vascular invasion present; R0", "Poorly differentiated; STAS present; R1"]
    assert remap == [0, 0, 1]
    # nothing dropped: Unknown segments removed, all three distinct
    texts, remap = perturb_descriptions(DESCS, [], rng=None, shuffle=False)
    assert len(texts) == 3 and remap == [0, 1, 2] and all("Unknown" not in t for t in texts)
    # drop everything known of the first two -> they become the empty string together
    texts, remap = perturb_descriptions(DESCS, [0, 2, 3, 5], rng=None, shuffle=False)
    assert texts == ["", "STAS present"] and remap == [0, 0, 1]


def test_shuffle_keeps_segments():
    rng = np.random.default_rng(0)
    seen = {perturb_description(DESCS[0], [], rng) for _ in range(50)}
    assert len(seen) > 1
    for s in seen:
        assert sorted(s.split("; ")) == sorted(
            ["Well differentiated", "Vascular invasion present", "No pleural invasion", "R0"]
        )


def test_single_sentence_class_texts_vanish_only_with_question_zero():
    classes = [
        "LUAD (Lung Adenocarcinoma) typically exhibits glandular structures, and more.",
        "LUSC (Lung Squamous Cell Carcinoma) forms sheets, with keratinization.",
    ]
    rng = np.random.default_rng(0)
    for dropped in ([1, 2], [5], [1, 2, 3, 4, 5]):
        texts, remap = perturb_descriptions(classes, dropped, rng)
        assert texts == classes and remap == [0, 1]
    texts, remap = perturb_descriptions(classes, [0, 3], rng)
    assert texts == [""] and remap == [0, 0]  # the authors' zero-loss step


def test_draw_dropped_questions_range_and_rate():
    rng = np.random.default_rng(0)
    ks, zero = [], 0
    for _ in range(3000):
        d = draw_dropped_questions(6, rng)
        assert len(set(d)) == len(d) and all(0 <= i < 6 for i in d)
        ks.append(len(d))
        zero += 0 in d
    assert set(ks) == set(range(6))  # k ~ U{0..5}
    assert abs(zero / 3000 - 2.5 / 6) < 0.03  # question 0 dropped in ~42% of steps


def test_all_variants_cover_every_perturbation():
    rng = np.random.default_rng(1)
    for d, known in zip(DESCS, (4, 3, 4)):
        variants = set(all_variants(d))
        assert len(variants) == n_variants(d) == sum(math.perm(known, j) for j in range(known + 1))
        for _ in range(200):
            assert perturb_description(d, draw_dropped_questions(6, rng), rng) in variants


# -- splits and draws ----------------------------------------------------------------------
def _samples(n_patients=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "LUAD" if p % 2 == 0 else "LUSC"
        for s in range(1 + (p % 5 == 0)):  # some patients have two slides
            rows.append({"slide_id": f"P{p:02d}-S{s}", "patient_id": f"P{p:02d}", "label": label})
    df = pd.DataFrame(rows)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_split_patient_level_stratified_deterministic(tmp_path):
    samples = _samples()
    a = make_split(samples, 0.3, 7, tmp_path / "split.csv")
    assert list(a.columns) == ["slide_id", "patient_id", "label", "split"]
    assert a.groupby("patient_id")["split"].nunique().max() == 1  # no patient on both sides
    per = a.drop_duplicates("patient_id").groupby(["label", "split"]).size()
    assert per["LUAD", "test"] == 3 and per["LUSC", "test"] == 3  # round(10 * 0.3) patients per class
    b = make_split(_samples(seed=1), 0.3, 7, None)  # same rows, other order
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "split.csv"))
    c = make_split(samples, 0.3, 8, None)
    assert not a["split"].equals(c["split"])


def test_fewshot_draws_respect_shots_and_train_only(tmp_path):
    split = make_split(_samples(), 0.3, 0, None)
    draws = make_fewshot_draws(split, [1, 2, 4], 3, 0, tmp_path / "draws.csv")
    assert list(draws.columns) == ["shots", "run", "seed", "slide_id"]
    train = split.set_index("slide_id")
    assert set(draws["slide_id"]) <= set(split.loc[split.split == "train", "slide_id"])
    for (k, _run), g in draws.groupby(["shots", "run"]):
        assert g["seed"].nunique() == 1
        assert train.loc[g["slide_id"], "label"].value_counts().to_dict() == {"LUAD": k, "LUSC": k}
        assert train.loc[g["slide_id"], "patient_id"].is_unique  # patient-distinct when possible
    assert draws.groupby(["shots", "run"])["seed"].first().nunique() == 9
    again = make_fewshot_draws(split, [1, 2, 4], 3, 0, None)
    pd.testing.assert_frame_equal(draws, again)
    pd.testing.assert_frame_equal(draws, pd.read_csv(tmp_path / "draws.csv"))
    with pytest.raises(ValueError, match="asks for 50 slides per class"):
        make_fewshot_draws(split, [50], 1, 0, None)


def test_fewshot_draws_take_16_shots_or_refuse_naming_the_class():
    """16 shots (config/tcga_lung.yaml) are drawn when every class has 16 training slides, patient-distinct
    while patients last; otherwise the draws refuse, naming each short class, its counts and the fix."""
    split = make_split(_samples(n_patients=40), 0.375, 0, None)  # train: LUAD 16 slides / 12 patients, LUSC 14 / 12
    with pytest.raises(ValueError) as err:
        make_fewshot_draws(split, [1, 2, 4, 8, 16], 3, 0, None)
    msg = str(err.value)
    assert "asks for 16 slides per class" in msg and "class 'LUSC' has 14 training slide(s) (from 12 patient(s))" in msg
    assert "'LUAD'" not in msg  # LUAD can supply 16
    assert "lower fewshot.shots to at most 14" in msg and "split.test_fraction" in msg
    big = make_split(_samples(n_patients=80), 0.25, 0, None)
    draws = make_fewshot_draws(big, [1, 2, 4, 8, 16], 2, 0, None)
    lab = big.set_index("slide_id")
    for (k, _run), g in draws.groupby(["shots", "run"]):
        assert lab.loc[g["slide_id"], "label"].value_counts().to_dict() == {"LUAD": k, "LUSC": k}
        assert lab.loc[g["slide_id"], "patient_id"].is_unique and g["slide_id"].is_unique
    assert sorted(draws["shots"].unique()) == [1, 2, 4, 8, 16]


def test_load_bag_accepts_feats(tmp_path):
    f = tmp_path / "b.h5"
    with h5py.File(f, "w") as fh:
        fh.create_dataset("feats", data=np.ones((4, 3), dtype=np.float64))
        fh.create_dataset("coords", data=np.array([[0, 0], [224, 0], [0, 224], [224, 224]]))
    feats, coords = load_bag(f)
    assert feats.dtype == np.float32 and feats.shape == (4, 3) and coords.shape == (4, 2)


def test_load_bag_refuses_an_incomplete_bag(tmp_path):
    """A bag whose writer was killed (``complete`` False) never reaches training or evaluation (issue 16)."""
    from fiveflow.embed.bags import BagError, write_bag
    from fiveflow.train.data import BagStore

    bag = write_bag(tmp_path / "s1.h5", np.ones((4, 3)), np.zeros((4, 2)), {"encoder": "x"})
    with h5py.File(bag, "a") as fh:
        fh.attrs["complete"] = False
    for read in (lambda: load_bag(bag), lambda: BagStore({"s1": str(bag)}).get("s1")):
        with pytest.raises(BagError, match="incomplete") as exc:
            read()
        msg = str(exc.value)
        assert str(bag) in msg and "fiveflow embed" in msg and "delete" in msg


def test_load_bag_refuses_nonfinite_features(tmp_path):
    from fiveflow.embed.bags import BagError, write_bag

    feats = np.ones((5, 3), np.float32)
    feats[3, 2] = np.inf
    feats[1, 0] = np.nan
    bag = write_bag(tmp_path / "s1.h5", feats, np.zeros((5, 2)))
    with pytest.raises(BagError, match=r"2 row\(s\) with NaN/inf values \(first: row 1\)") as exc:
        load_bag(bag)
    assert str(bag) in str(exc.value) and "fiveflow embed" in str(exc.value)
    big = np.full((3, 2), 3e38, np.float32)  # finite, though their float32 sum would overflow
    feats, _ = load_bag(write_bag(tmp_path / "big.h5", big, np.zeros((3, 2))))
    assert np.isfinite(feats).all()


def test_lr_schedule_warmup_then_cosine_to_floor():
    lrs = [lr_factor(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


# -- tiny end-to-end run ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from synthetic_bags import make_synthetic_cohort

    out = tmp_path_factory.mktemp("tiny")
    coh = make_synthetic_cohort(out / "cohort", n_slides=14, dim=40, n_range=(20, 40), signal=3.0, n_unlabeled=1)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["model"].update(dim=32, heads=4, n_prompts=4, text_max_tokens=64)
    cfg["train"]["device"] = "cpu"
    cfg["train"]["pretrain"].update(epochs=2, warmup_epochs=1, accumulate=4)
    cfg["train"]["finetune"].update(epochs=2, warmup_epochs=1)
    split = make_split(coh["samples"], 0.3, 0, out / "split.csv")
    make_fewshot_draws(split, [1, 2], 2, 0, out / "draws.csv")
    return out, coh, cfg


def test_end_to_end_tiny(tiny, monkeypatch):
    from fiveflow.baselines import abmil, run_baseline
    from fiveflow.evaluate.metrics import summarize
    from fiveflow.train.fewshot import run_fewshot, run_zeroshot
    from fiveflow.train.pretrain import pretrain

    out, coh, cfg = tiny
    summary = pretrain(
        out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "pretrain.pt", log=out / "p.log"
    )
    assert (out / "pretrain.pt").is_file() and len(summary["epoch_loss"]) == 2
    assert summary["n_dropped_slides"] >= 1  # the unlabeled patient's slide
    assert "pretrain epoch 2/2" in (out / "p.log").read_text()
    import torch

    again = pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "again.pt")
    assert again["epoch_loss"] == summary["epoch_loss"]  # deterministic on CPU
    sd1, sd2 = (torch.load(out / f, weights_only=False)["state_dict"] for f in ("pretrain.pt", "again.pt"))
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    zs = run_zeroshot(out / "pretrain.pt", out / "split.csv", coh["bag_paths"], cfg, out / "pred/FiVE_0.parquet")
    fs = run_fewshot(
        out / "pretrain.pt", out / "split.csv", out / "draws.csv", coh["bag_paths"], cfg, 2, out / "pred/FiVE_2.parquet"
    )
    monkeypatch.setattr(abmil, "EPOCHS", 2)
    bl = [
        run_baseline(b, out / "split.csv", out / "draws.csv", coh["bag_paths"], cfg, 1, out / f"pred/{b}_1.parquet")
        for b in ("meanpool", "abmil")
    ]
    n_test = int((pd.read_csv(out / "split.csv")["split"] == "test").sum())
    for _df, method, shots, runs in [
        (zs, "FiVE", 0, 1),
        (fs, "FiVE", 2, 2),
        (bl[0], "meanpool", 1, 2),
        (bl[1], "abmil", 1, 2),
    ]:
        disk = pd.read_parquet(out / f"pred/{method}_{shots}.parquet")
        assert list(disk.columns) == PRED_COLUMNS
        assert len(disk) == n_test * runs and set(disk["method"]) == {method} and set(disk["shots"]) == {shots}
        assert disk["prob"].between(0, 1).all() and set(disk["pred"]) <= {"LUAD", "LUSC"}
        assert ((disk["prob"] >= 0.5) == (disk["pred"] == "LUSC")).all()
    table = summarize(pd.concat([zs, fs, *bl]), classes=["LUAD", "LUSC"])
    assert len(table) == 4 and {"acc_mean", "f1auth_std"} <= set(table.columns)
    # determinism: the same draw gives the same predictions
    again = run_fewshot(out / "pretrain.pt", out / "split.csv", out / "draws.csv", coh["bag_paths"], cfg, 2, None)
    pd.testing.assert_frame_equal(fs, again)


def test_empty_steps_skipped_or_kept(tiny):
    from fiveflow.model import load_checkpoint
    from fiveflow.train.data import BagStore
    from fiveflow.train.loop import fit

    out, coh, cfg = tiny
    if not (out / "pretrain.pt").is_file():
        pytest.skip("needs the end-to-end checkpoint")
    texts = [c["text"] for c in cfg["classes"]]
    items = [(s, i % 2) for i, s in enumerate(sorted(coh["bag_paths"])[:4])]
    store = BagStore(coh["bag_paths"])
    res = {}
    for faithful in (False, True):
        model, _ = load_checkpoint(out / "pretrain.pt")
        ft = dict(cfg["train"]["finetune"], epochs=10, faithful_empty_steps=faithful)
        res[faithful] = fit(model, store, items, texts, ft, seed=3)
    skip, keep = res[False], res[True]
    assert skip["n_empty"] > 0 and skip["n_empty_skipped"] == skip["n_empty"]
    assert skip["n_forward"] + skip["n_empty"] == 40
    assert keep["n_empty_skipped"] == 0 and keep["n_forward"] == 40 and keep["n_empty"] == skip["n_empty"]


def test_symmetric_loss_terms():
    import torch

    from fiveflow.train.loop import _symmetric_loss

    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 4.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    i2t = torch.nn.functional.cross_entropy(logits, targets)
    # text 0: one positive slide (0); text 1: positives slides 1 and 2 (multi-positive)
    t0 = torch.logsumexp(logits[:, 0], 0) - logits[0, 0]
    t1 = torch.logsumexp(logits[:, 1], 0) - torch.logsumexp(logits[1:, 1], 0)
    assert torch.allclose(_symmetric_loss(logits, targets), 0.5 * (i2t + (t0 + t1) / 2))


def test_symmetric_fit_runs(tiny):
    from fiveflow.model import load_checkpoint
    from fiveflow.train.data import BagStore
    from fiveflow.train.loop import fit

    out, coh, cfg = tiny
    if not (out / "pretrain.pt").is_file():
        pytest.skip("needs the end-to-end checkpoint")
    model, _ = load_checkpoint(out / "pretrain.pt")
    items = [(s, i % 3) for i, s in enumerate(sorted(coh["bag_paths"])[:6])]
    texts = ["well differentiated;Unknown;present", "poorly differentiated;absent;Unknown", "moderate;Unknown;Unknown"]
    res = fit(
        model,
        BagStore(coh["bag_paths"]),
        items,
        texts,
        dict(cfg["train"]["pretrain"], epochs=2, accumulate=3, symmetric_loss=True),
        seed=0,
    )
    assert res["n_updates"] + res["n_empty_skipped"] // 3 == 4 and np.isfinite(res["final_loss"])


def test_class_text_ablation_pretrains_on_class_texts(tiny):
    import torch

    from fiveflow.train.ablations import ablation_method
    from fiveflow.train.fewshot import run_zeroshot
    from fiveflow.train.pretrain import pretrain

    out, coh, cfg = tiny
    s = pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "abl.pt", targets="class_texts")
    assert s["n_texts"] == 2  # the two class texts, not the fine-grained descriptions
    payload = torch.load(out / "abl.pt", weights_only=False)
    assert payload["extra"]["targets"] == "class_texts"
    fine = pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "fine.pt")
    assert fine["n_texts"] > 2 and fine["n_slides"] == s["n_slides"]  # same slides, other targets
    assert (
        torch.load(out / "fine.pt", weights_only=False)["extra"]["config_sha256"] != payload["extra"]["config_sha256"]
    )
    pred = run_zeroshot(
        out / "abl.pt", out / "split.csv", coh["bag_paths"], cfg, None, method=ablation_method("class_texts")
    )
    assert set(pred["method"]) == {"FiVE-classtexts"}
    with pytest.raises(ValueError, match="targets"):
        pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "x.pt", targets="classes")


def test_ablations_parse_apply_and_validate():
    from fiveflow.config import ConfigError, validate_config
    from fiveflow.train.ablations import ablation_for_method, apply_ablation, parse_ablation

    assert parse_ablation("no_tfs").method == "FiVE-noTFS"
    assert parse_ablation("ratio_0.25").method == "FiVE-ratio0.25"
    assert parse_ablation("ratio_0.50").method == "FiVE-ratio0.5"
    cfg = {
        "model": {"tfs": True, "dim": 8},
        "train": {"pretrain": {"instance_ratio": 1.0}, "finetune": {"instance_ratio": 0.25}},
    }
    out, targets = apply_ablation(cfg, "no_tfs")
    assert out["model"]["tfs"] is False and cfg["model"]["tfs"] is True and targets == "descriptions"
    out, targets = apply_ablation(cfg, "ratio_0.25")
    assert out["train"]["pretrain"]["instance_ratio"] == 0.25 and out["train"]["finetune"]["instance_ratio"] == 0.25
    assert apply_ablation(cfg, "class_texts")[1] == "class_texts"
    assert apply_ablation(cfg, None) == (cfg, "descriptions")
    assert ablation_for_method("FiVE-noTFS", ["class_texts", "no_tfs"]).name == "no_tfs"
    assert ablation_for_method("FiVE", ["class_texts"]) is None
    for bad in ("ratio_2", "tfs_off"):
        with pytest.raises(ValueError, match="Fix"):
            parse_ablation(bad)
    from pathlib import Path

    import yaml

    base = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    for bad, msg in (
        (["ratio_1.5"], "sampling ratio"),
        (["ratio_0.5", "ratio_0.50"], "same ablation"),
        (["nope"], "ablations"),
    ):
        with pytest.raises(ConfigError, match=msg):
            validate_config({**base, "ablations": bad})


def test_no_tfs_ablation_pretrains_without_cross_attention(tiny):
    import torch

    from fiveflow.model import load_checkpoint
    from fiveflow.train.ablations import apply_ablation
    from fiveflow.train.fewshot import run_zeroshot
    from fiveflow.train.pretrain import pretrain

    out, coh, cfg = tiny
    acfg, targets = apply_ablation(cfg, "no_tfs")
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], acfg, out / "notfs.pt", targets=targets)
    model, payload = load_checkpoint(out / "notfs.pt", "cpu")
    assert payload["model_cfg"]["tfs"] is False and not hasattr(model.aggregator, "cross_block")
    assert not any(k.startswith("aggregator.cross_block") for k in payload["state_dict"])
    # the prompt bank no longer reaches the slide embedding
    bag = torch.randn(1, 20, model.dim)
    pos = torch.rand(1, 20, 2)
    a = model.aggregator(bag, pos, model.prompt_bank(None))
    b = model.aggregator(bag, pos, torch.randn(3, model.dim))
    torch.testing.assert_close(a, b)
    pred = run_zeroshot(out / "notfs.pt", out / "split.csv", coh["bag_paths"], acfg, None, method="FiVE-noTFS")
    assert set(pred["method"]) == {"FiVE-noTFS"} and pred["prob"].between(0, 1).all()


def test_no_patient_of_a_fewshot_training_draw_is_in_its_test_split(tmp_path):
    """Through the one driver every few-shot method uses (run_draws): for every shot count and draw, the
    patients the method is trained on and the patients it is scored on are disjoint, also for patients
    with two slides, and the test slides are exactly the held-out split."""
    import h5py

    from fiveflow.train.draws import run_draws

    for seed in range(3):
        samples = _samples(n_patients=30, seed=seed)
        split = make_split(samples, 0.375, seed, tmp_path / f"split{seed}.csv")
        make_fewshot_draws(split, [1, 2, 4, 8], 3, seed, tmp_path / f"draws{seed}.csv")
        bags = {}
        for sid in split["slide_id"]:
            bags[sid] = str(tmp_path / f"{sid}.h5")
            with h5py.File(bags[sid], "w") as fh:
                fh["features"] = np.ones((3, 4), np.float32)
                fh["coords"] = np.zeros((3, 2), np.int64)
        patient = dict(zip(split["slide_id"], split["patient_id"]))
        held_out = set(split.loc[split["split"] == "test", "slide_id"])
        seen = []

        # called within this iteration only, so the loop's current values are the ones meant
        def fit_predict(store, train_ids, y, test_ids, s, device, patient=patient, held_out=held_out, seen=seen):
            train_p, test_p = {patient[i] for i in train_ids}, {patient[i] for i in test_ids}
            assert not train_p & test_p, f"patients in both the draw and the test split: {train_p & test_p}"
            assert set(test_ids) == held_out and not set(train_ids) & held_out
            seen.append(len(train_ids))
            return np.full(len(test_ids), 0.5)

        cfg = {"classes": [{"name": "LUAD", "text": "a"}, {"name": "LUSC", "text": "b"}], "train": {"device": "cpu"}}
        for shots in (1, 2, 4, 8):
            pred = run_draws(
                "probe",
                fit_predict,
                tmp_path / f"split{seed}.csv",
                tmp_path / f"draws{seed}.csv",
                bags,
                cfg,
                shots,
                None,
            )
            assert set(pred["slide_id"]) == held_out and pred["run"].nunique() == 3
        assert seen == [2 * k for k in (1, 2, 4, 8) for _ in range(3)]
