import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from fiveflow.cli import build_parser

SUBCOMMANDS = [
    "demo",
    "tile",
    "embed",
    "encoders",
    "import-bags",
    "reports",
    "split",
    "train",
    "fewshot",
    "evaluate",
    "doctor",
    "download",
    "heatmap",
]


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: fiveflow " + cmd in capsys.readouterr().out


def test_console_script_help():
    exe = PROJECT_ROOT / ".venv" / "bin" / "fiveflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fiveflow.cli"]
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and all(c in r.stdout for c in SUBCOMMANDS)


def test_tile_subcommand_on_a_slide(small_slide, tmp_path):
    from fiveflow.cli import main

    assert (
        main(
            ["tile", "--slide", str(small_slide), "--out", str(tmp_path), "--config", str(PROJECT_ROOT / "config.yaml")]
        )
        == 0
    )
    assert (tmp_path / "coords" / "small.parquet").exists() and (tmp_path / "qc" / "small.png").exists()


def test_bad_config_is_an_error_not_a_traceback(tmp_path, capsys):
    from fiveflow.cli import main

    bad = tmp_path / "c.yaml"
    bad.write_text("results_dir: 3\n")
    assert main(["tile", "--slide", "x.svs", "--config", str(bad)]) == 2
    assert "error" in capsys.readouterr().err


def test_embed_subcommand_resumes_and_lists_encoders(small_slide, tmp_path, capsys):
    from fiveflow.cli import main
    from fiveflow.embed.bags import bag_attrs
    from fiveflow.embed.encoders import specs

    cfg = ["--config", str(PROJECT_ROOT / "config.yaml")]
    assert main(["tile", "--slide", str(small_slide), "--out", str(tmp_path), *cfg]) == 0
    embed = ["embed", str(small_slide), "--out", str(tmp_path), "--batch-size", "8", "--workers", "0", *cfg]
    assert main(embed) == 0
    bag = tmp_path / "features" / "demo" / "small.h5"
    assert bag_attrs(bag)["complete"] and "tiles/s" in capsys.readouterr().out
    assert main(embed) == 0 and "up to date" in capsys.readouterr().out  # a rerun resumes: nothing to do
    assert main([*embed, "--overwrite"]) == 0 and "tiles/s" in capsys.readouterr().out
    assert main(["encoders"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in specs())


def test_evaluate_subcommand_labels_fives_protocol(tmp_path, monkeypatch):
    """`fiveflow evaluate` labels FiVE's rows with the protocol of its --config, as the workflow does."""
    import pandas as pd
    import yaml

    from fiveflow.cli import main
    from fiveflow.protocol import table_protocol
    from test_evaluate import fake_predictions

    files = fake_predictions(tmp_path, methods=(("FiVE", [0, 1]), ("meanpool", [1])))
    monkeypatch.chdir(PROJECT_ROOT)
    assert main(["evaluate", *files, "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "tables" / "fewshot.csv", keep_default_na=False)
    expected = table_protocol(yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text()))["label"]
    assert dict(zip(table["method"], table["protocol"])) == {"FiVE": expected, "meanpool": "baseline"}
