"""The descriptions do not name the diagnosis by default (FIVE_METHOD.md section 2, issue 15 item 1).

A description that names the histologic type ("adenocarcinoma", "keratinizing squamous cell
carcinoma") puts the class label into FiVE pre-training. The FiVE authors' GPT-4 descriptions name it
in 4% of cases (31 of their 786); the rules backend names it only with ``reports.name_histotype``.

Measured on the 300 dev reports (../shared/data/reports/tcga_lung_reports_dev.csv):
default rules 0 of 300 (0.0%); opt-in rules 236 of 300 (78.7%: LUAD 84.7%, LUSC 72.7%); the authors'
GPT-4 answers 8 of the 287 non-empty ones (2.8%), the type appearing in explanations, never after the grade.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import PROJECT_ROOT, shared_path
from fiveflow.reports import offline
from fiveflow.reports.normalize import FIELDS
from fiveflow.reports.prompts import load_prompt
from fiveflow.reports.structure import structure_reports

DEV_CSV = "reports/tcga_lung_reports_dev.csv"
#: what "names the type" means here: the class names and their give-away words
NAMES_TYPE = re.compile(r"adenocarcinoma|squamous|\bLUAD\b|\bLUSC\b|keratin", re.I)
REPORT = (
    "FINAL DIAGNOSIS: Lung, right upper lobe, lobectomy: keratinizing squamous cell carcinoma, poorly "
    "differentiated. Lymphovascular invasion: present. Visceral pleural invasion: not identified. Margins: negative."
)


def share_naming(texts) -> tuple[int, float]:
    hits = [bool(NAMES_TYPE.search(str(t))) for t in texts]
    return sum(hits), sum(hits) / max(len(hits), 1)


@pytest.fixture(scope="module")
def dev() -> pd.DataFrame:
    df = pd.read_csv(shared_path(DEV_CSV))
    assert len(df) == 300
    return df


@pytest.fixture(scope="module")
def dev_results(dev):
    texts = dev["text"].fillna("").tolist()
    return ([offline.extract(t) for t in texts], [offline.extract(t, name_histotype=True) for t in texts])


# ----------------------------------------------------------------------------- real reports


@pytest.mark.shared_data
def test_default_rules_descriptions_do_not_name_the_type(dev, dev_results):
    default, _ = dev_results
    n, share = share_naming(r.answer for r in default)
    print(f"default rules: {n} of {len(default)} descriptions name the type ({share:.1%})")
    assert share <= 0.05, [r.answer for r in default if NAMES_TYPE.search(r.answer)][:5]
    # the reports do state it: the extractor still finds it, as data
    assert sum(bool(r.histology) for r in default) >= 0.8 * len(default)


@pytest.mark.shared_data
def test_opt_in_names_the_type_in_most_descriptions(dev, dev_results):
    _, named = dev_results
    n, share = share_naming(r.answer for r in named)
    per_class = {
        ct: share_naming(r.answer for r, c in zip(named, dev["cancer_type"]) if c == ct)[1] for ct in ("LUAD", "LUSC")
    }
    print(f"opt-in rules: {n} of {len(named)} name the type ({share:.1%}); per class {per_class}")
    assert share > 0.5  # measured 0.787 (LUAD 0.847, LUSC 0.727)


@pytest.mark.shared_data
def test_opt_in_changes_only_the_description(dev_results):
    default, named = dev_results
    assert [r.labels for r in default] == [r.labels for r in named]
    assert [r.histology for r in default] == [r.histology for r in named]
    changed = 0
    for a, b in zip(default, named):
        pa_, pb = a.answer.split("; "), b.answer.split("; ")
        assert pa_[1:] == pb[1:]  # questions 2-6 are untouched
        assert pb[0] == pa_[0] or pb[0].startswith(pa_[0] + " ")  # the type follows the grade, nothing else
        changed += pa_[0] != pb[0]
    assert changed > 0


@pytest.mark.shared_data
def test_authors_gpt4_answers_rarely_name_the_type(dev):
    ans = dev["answer"]
    ans = ans[ans.notna() & ans.astype(str).str.strip().ne("")].astype(str)
    n, share = share_naming(ans)
    print(f"authors' GPT-4 answers: {n} of {len(ans)} name the type ({share:.1%})")
    assert len(ans) == 287 and share <= 0.06  # measured 8 of 287 (2.8%); their 786 training answers: 31 (4%)


@pytest.mark.shared_data
def test_structure_reports_honours_the_key_on_real_reports(dev, tmp_path):
    src = shared_path(DEV_CSV)
    off = structure_reports(src, tmp_path / "a.parquet", {"backend": "offline"})
    on = structure_reports(src, tmp_path / "b.parquet", {"backend": "offline", "name_histotype": True})
    pd.testing.assert_frame_equal(off[["patient_id", *FIELDS]], on[["patient_id", *FIELDS]])
    assert share_naming(off["description"])[1] <= 0.05 < 0.5 < share_naming(on["description"])[1]


# ----------------------------------------------------------------------------- synthetic: API, config, CLI


def test_extract_names_the_type_only_on_request():
    res = offline.extract(REPORT)
    assert res.histology == "keratinizing squamous cell carcinoma"
    assert res.phrases[0] == "Poorly differentiated" and not NAMES_TYPE.search(res.answer)
    named = offline.extract(REPORT, name_histotype=True)
    assert named.phrases[0] == "Poorly differentiated keratinizing squamous cell carcinoma"
    assert named.labels == res.labels and named.phrases[1:] == res.phrases[1:]
    assert offline.answer_report(REPORT) == res.answer
    assert offline.answer_report(REPORT, name_histotype=True) == named.answer


def test_model_name_tells_the_versions_apart():
    assert offline.MODEL_NAME == "rules-v8"  # rules-v4 named the type by default
    assert offline.model_name() == offline.MODEL_NAME == offline.model_name(False)
    assert offline.model_name(True) == "rules-v8+histotype"


def _csv(tmp_path: Path) -> Path:
    src = tmp_path / "reports.csv"
    pd.DataFrame(
        {"patient_id": ["P1", "P2"], "text": [REPORT, "Adenocarcinoma, well differentiated. TNM: pT1b pN0 V0 R0."]}
    ).to_csv(src, index=False)
    return src


def test_structure_reports_reads_the_config_key(tmp_path):
    src = _csv(tmp_path)
    off = structure_reports(src, tmp_path / "off.parquet", {"backend": "offline"})
    no = structure_reports(src, tmp_path / "no.parquet", {"backend": "rules", "name_histotype": False})
    on = structure_reports(src, tmp_path / "on.parquet", {"backend": "rules", "name_histotype": True})
    assert set(off["model"]) == set(no["model"]) == {"rules-v8"} and set(on["model"]) == {"rules-v8+histotype"}
    pd.testing.assert_frame_equal(off, no)
    pd.testing.assert_frame_equal(off[["patient_id", *FIELDS]], on[["patient_id", *FIELDS]])
    assert not off["description"].str.contains(NAMES_TYPE).any()
    first = [d.split("; ")[0] for d in on["description"]]
    assert first == ["Poorly differentiated keratinizing squamous cell carcinoma", "Well differentiated adenocarcinoma"]
    assert [d.split("; ")[0] for d in off["description"]] == ["Poorly differentiated", "Well differentiated"]
    assert [d.split("; ")[1:] for d in on["description"]] == [d.split("; ")[1:] for d in off["description"]]
    meta = {
        k: json.loads(pq.read_schema(tmp_path / f"{k}.parquet").metadata[b"fiveflow.reports"]) for k in ("off", "on")
    }
    assert meta["off"]["name_histotype"] is False and meta["on"]["name_histotype"] is True
    assert meta["on"]["model"] == "rules-v8+histotype"


def test_name_histotype_is_ignored_by_other_backends(tmp_path, caplog):
    src = _csv(tmp_path)
    answers = tmp_path / "answers.csv"
    pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "answer": ["Poorly differentiated; Unknown; Unknown; Unknown; Unknown; Unknown"] * 2,
        }
    ).to_csv(answers, index=False)
    cfg = {"backend": "precomputed", "precomputed": str(answers), "name_histotype": True}
    with caplog.at_level("WARNING", logger="fiveflow.reports"):
        df = structure_reports(src, tmp_path / "l.parquet", cfg)
    assert set(df["model"]) == {"precomputed"}
    assert "rules backend only" in caplog.text


def test_cli_flag_and_config(tmp_path, capsys, monkeypatch):
    from fiveflow.cli import main

    src = _csv(tmp_path)
    full = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    assert full["reports"]["name_histotype"] is False  # the shipped default
    conf_off, conf_on = tmp_path / "off.yaml", tmp_path / "on.yaml"
    conf_off.write_text(yaml.safe_dump(full))
    full["reports"]["name_histotype"] = True
    conf_on.write_text(yaml.safe_dump(full))

    def model(*args: str) -> set[str]:
        out = tmp_path / "labels.parquet"
        assert main(["reports", "extract", str(src), "--backend", "rules", "--output", str(out), *args]) == 0
        return set(pd.read_parquet(out)["model"])

    assert model("--config", str(conf_off)) == {"rules-v8"}
    assert model("--config", str(conf_off), "--name-histotype") == {"rules-v8+histotype"}
    assert model("--config", str(conf_on)) == {"rules-v8+histotype"}
    assert model("--config", str(conf_on), "--no-name-histotype") == {"rules-v8"}
    monkeypatch.chdir(tmp_path)  # no config.yaml here: the built-in default, off
    assert model() == {"rules-v8"}
    capsys.readouterr()


def test_workflow_rule_passes_the_key():
    rule = (PROJECT_ROOT / "workflow" / "rules" / "reports.smk").read_text()
    params = rule.split("params:", 1)[1].split("log:", 1)[0]
    assert re.search(r"name_histotype\s*=.*config\[\"reports\"\]", params)  # a param: a change reruns the rule
    script = (PROJECT_ROOT / "workflow" / "scripts" / "reports.py").read_text()
    assert "smk.params.name_histotype" in script
    schema = yaml.safe_load((PROJECT_ROOT / "src" / "fiveflow" / "data" / "config.schema.yaml").read_text())
    assert schema["properties"]["reports"]["properties"]["name_histotype"]["default"] is False


def test_prompt_does_not_ask_for_or_demonstrate_the_type():
    prompt = load_prompt()
    assert not re.search(r"histolog|diagnos|tumou?r type|cancer type", prompt.instruction, re.I)
    assert any(NAMES_TYPE.search(rep) for rep, _ in prompt.examples)  # the example reports do state it ...
    for _, ans in prompt.examples:
        assert not NAMES_TYPE.search(ans), ans  # ... the worked answers leave it out, as the authors' do


def test_demo_reports_state_the_type_but_descriptions_do_not():
    from fiveflow.cohort.demo import demo_cases, demo_report_text

    seen, texts = set(), []
    for c in demo_cases(n_slides=60, seed=0):
        if c.patient_id not in seen:
            seen.add(c.patient_id)
            texts.append(demo_report_text(c))
    assert share_naming(texts)[1] == 1.0  # the generator writes realistic reports: every one names the type
    assert share_naming(offline.answer_report(t) for t in texts)[0] == 0
    assert share_naming(offline.answer_report(t, name_histotype=True) for t in texts)[1] > 0.5


def test_histotype_opt_in_renames_fives_rows_in_every_table():
    """With reports.name_histotype FiVE and its description-trained ablations get their own names, and
    the ablation table compares against that row, so nothing made with the leak reads as FiVE."""
    import pandas as pd

    from fiveflow.evaluate.tables import ablation_table, method_order
    from fiveflow.train.ablations import five_method, is_five, parse_ablation

    assert five_method({}) == five_method({"reports": {"name_histotype": False}}) == "FiVE"
    base = five_method({"reports": {"name_histotype": True}})
    assert base == "FiVE+histotype" and is_five(base)
    assert parse_ablation("no_tfs", base).method == "FiVE+histotype-noTFS"
    assert parse_ablation("ratio_0.25", base).method == "FiVE+histotype-ratio0.25"
    assert parse_ablation("class_texts", base).method == "FiVE-classtexts"  # no descriptions: no leak
    table = pd.DataFrame(
        {
            "method": [base, "FiVE+histotype-noTFS", "meanpool"],
            "shots": [1, 1, 1],
            "n_runs": [3, 3, 3],
            "acc_mean": [0.9, 0.7, 0.6],
            "acc_std": [0.0, 0.0, 0.0],
        }
    )
    assert method_order(table["method"]) == [base, "FiVE+histotype-noTFS", "meanpool"]
    abl = ablation_table(table)
    assert "difference (FiVE+histotype - FiVE+histotype-noTFS)" in set(abl["row"])
