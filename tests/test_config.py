import copy
import subprocess
import sys

import pytest
import yaml

from conftest import PROJECT_ROOT
from fiveflow.config import ConfigError, load_config, validate_config

DEFAULT = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())


def cfg(**patch):
    c = copy.deepcopy(DEFAULT)
    for dotted, value in patch.items():
        node = c
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return c


def test_default_config_is_valid():
    validate_config(copy.deepcopy(DEFAULT))


def test_every_key_in_default_config_is_commented():
    text = (PROJECT_ROOT / "config.yaml").read_text().splitlines()
    for i, line in enumerate(text):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("- ") or s.endswith(":") and not s.startswith("- "):
            continue
        # a value line must carry a comment, or the line before it must be a comment
        prev = text[i - 1].strip() if i else ""
        assert "#" in line or prev.startswith("#"), f"config.yaml line {i + 1} has no comment: {line!r}"


def test_wrong_type_names_key_and_fix():
    with pytest.raises(ConfigError, match=r"`tiling.target_mpp`.*not of type 'number'.*Fix"):
        validate_config(cfg(tiling__target_mpp="abc"))


def test_unknown_key_suggests_the_right_one():
    c = cfg()
    c["tiling"]["target_mmp"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown key `tiling.target_mmp`.*Did you mean `target_mpp`"):
        validate_config(c)


def test_enum_lists_choices():
    with pytest.raises(ConfigError, match="mask.method.*use one of: otsu, morphological"):
        validate_config(cfg(tiling__mask__method="magic"))


def test_overlap_must_be_smaller_than_the_patch():
    with pytest.raises(ConfigError, match="tiling.overlap.*smaller than `tiling.patch_size`"):
        validate_config(cfg(tiling__overlap=224))
    validate_config(cfg(tiling__overlap=112))


def test_tiling_defaults_match_the_shipped_config():
    from fiveflow.slides.tiling import default_tiling

    assert default_tiling() == DEFAULT["tiling"]


def test_missing_files_are_reported():
    c = cfg(cohort__source="samples", cohort__samples="nope/samples.csv", cohort__reports="nope/r.csv")
    with pytest.raises(ConfigError, match=r"cohort.samples`: file not found.*nope/samples.csv"):
        validate_config(c)
    with pytest.raises(ConfigError, match="embedding.weights"):
        validate_config(cfg(embedding__weights="/no/such/ckpt.pt"))


def test_missing_required_key():
    c = cfg()
    del c["split"]
    with pytest.raises(ConfigError, match="'split' is a required property"):
        validate_config(c)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_snakemake_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    c = cfg(tiling__patch_size="big")
    bad.write_text(yaml.safe_dump(c))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "tiling.patch_size" in r.stdout + r.stderr
