"""environment.yml (conda users) agrees with pyproject.toml (the one source of dependencies)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_package_with_every_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert project["requires-python"] == ">=3.11"
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    editable = [p for p in pip if p.startswith("-e .")]
    assert len(editable) == 1
    extras = set(re.fullmatch(r"-e \.\[([\w,]+)\]", editable[0]).group(1).split(","))
    assert extras == set(project["optional-dependencies"])
    # nothing else is listed there that the pyproject does not own, except the torch pin
    assert [p for p in pip if p not in editable] == [f"torch=={makefile_torch_pin()}"]


def makefile_torch_pin():
    return re.search(r"TORCH_SPEC \?= torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)


def test_torch_pin_satisfies_the_pyproject_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_req,) = [d for d in project["dependencies"] if d.startswith("torch")]
    lower = tuple(int(p) for p in re.fullmatch(r"torch>=([\d.]+)", torch_req).group(1).split("."))
    pinned = tuple(int(p) for p in makefile_torch_pin().split("."))
    assert pinned >= lower


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert commands[:2] == ["make reports", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
