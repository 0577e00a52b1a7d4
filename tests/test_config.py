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
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert "tiling.patch_size" in r.stdout + r.stderr


def test_llm_failure_share_and_rule_retries_are_range_checked():
    validate_config(cfg(reports__openai__max_failed_share=0.25, reports__openai__rule_retries=0))
    for bad in (1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="reports.openai.max_failed_share"):
            validate_config(cfg(reports__openai__max_failed_share=bad))
    with pytest.raises(ConfigError, match="reports.openai.rule_retries"):
        validate_config(cfg(reports__openai__rule_retries=-1))


@pytest.mark.parametrize(
    "key, value",
    [
        ("tiling__target_mpp", float("nan")),
        ("tiling__min_tissue", float("inf")),
        ("train__pretrain__lr", float("nan")),
        ("split__test_fraction", float("-inf")),
        ("tiling__assume_mpp", float("nan")),
    ],
)
def test_nan_and_infinity_are_refused_with_the_key_and_the_fix(key, value):
    """JSON Schema's bounds let NaN through (NaN <= 0 is false): `target_mpp: .nan` used to pass."""
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg(**{key: value}))
    msg = str(exc.value)
    assert f"key `{key.replace('__', '.')}`" in msg and "is not a finite number. Fix: set a finite number" in msg
    assert len(msg.splitlines()) == 1  # one problem, not also a schema message for the same key


def test_nan_in_a_yaml_file_names_the_key(tmp_path):
    text = (PROJECT_ROOT / "config.yaml").read_text().replace("  target_mpp: 1.0 ", "  target_mpp: .nan ", 1)
    assert ".nan" in text
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml: key `tiling\.target_mpp`: \.nan is not a finite number\. "
        r"Fix: set a finite number > 0\.",
    ):
        load_config(f)


def test_load_config_fix_names_the_option_of_the_interface(tmp_path):
    """`fiveflow` reads the file given by --config (--configfile is Snakemake's option)."""
    with pytest.raises(ConfigError, match="pass --config with an existing file") as exc:
        load_config(tmp_path / "absent.yaml")
    assert "--configfile" not in str(exc.value)
    with pytest.raises(ConfigError, match="pass --configfile with an existing file"):
        load_config(tmp_path / "absent.yaml", option="--configfile")
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_config(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)


def test_yaml_syntax_error_is_one_line_with_its_line(tmp_path):
    """PyYAML's message spans four lines; the CLI error must be one line (the fix says where)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling:\n  x: 1\n   y: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert "\n" not in msg and "not valid YAML at line 3, column 5" in msg and "Fix: " in msg


def test_a_downloaded_input_counts_as_present_and_downloads_are_checked():
    """Issue 17: cohort.reports / reports.precomputed may name the `path` of a `downloads` entry (fetched by the
    workflow); entries need an http(s) URL, a pinned checksum and distinct paths."""
    c = cfg(
        cohort__source="samples",
        cohort__samples="config.yaml",
        cohort__reports="data/x/corpus.csv.zip",
        reports__backend="import",
        reports__precomputed=["data/x/a.xlsx", "data/x/b.xlsx"],
    )
    with pytest.raises(ConfigError, match="cohort.reports`: file not found") as err:
        validate_config(copy.deepcopy(c), root=PROJECT_ROOT)
    assert "answers file not found ('data/x/a.xlsx')" in str(err.value)
    entry = lambda p, **kw: {"url": "https://example.org/f", "checksum": "sha256:" + "a" * 64, "path": p, **kw}  # noqa: E731
    c["downloads"] = {
        "corpus": entry("data/x/corpus.csv.zip"),
        "a": entry("data/x/a.xlsx", size=10),
        "b": entry("data/x/b.xlsx"),
    }
    validate_config(copy.deepcopy(c), root=PROJECT_ROOT)
    for bad, match in [
        ({"b": entry("data/x/a.xlsx")}, r"downloads.b.path` and `downloads.a.path` are the same file"),
        ({"b": {**entry("data/x/b.xlsx"), "checksum": "sha1:" + "a" * 40}}, "checksum"),
        ({"b": {**entry("data/x/b.xlsx"), "url": "file:///etc/passwd"}}, "url"),
        ({"b-c": entry("data/x/c")}, "b-c"),
    ]:
        with pytest.raises(ConfigError, match=match):
            validate_config({**copy.deepcopy(c), "downloads": {**c["downloads"], **bad}}, root=PROJECT_ROOT)
