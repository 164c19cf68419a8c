"""The Dockerfile, parsed with Docker's own parser (the ``dockerfile`` package): no engine here."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import dockerfile  # type: ignore[import-not-found]
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def stages() -> list[list[dockerfile.Command]]:
    """Instructions grouped by build stage (each starts at a FROM)."""
    grouped: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(command)
    return grouped


def _all(stage: list[dockerfile.Command], cmd: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == cmd]


def _last(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = _all(stage, cmd)
    assert found, f"no {cmd} in stage"
    return found[-1]


def _env(stage: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in _all(stage, "ENV"):
        values = command.value
        pairs = zip(values[::2], values[1::2], strict=True)
        env.update({key: value.strip('"') for key, value in pairs})
    return env


def test_multi_stage_build_copies_only_the_venv(stages: list[list[dockerfile.Command]]) -> None:
    assert len(stages) == 3
    native, builder, runtime = stages
    assert native[0].value[-2:] == ("AS", "native")
    assert any("maturin build" in " ".join(c.value) for c in _all(native, "RUN"))
    assert builder[0].value[-2:] == ("AS", "builder")
    assert [(c.flags, c.value) for c in _all(builder, "COPY") if c.flags] == [
        (("--from=native",), ("/wheels/", "/native-wheels/"))
    ]
    assert runtime[0].value[-2:] == ("AS", "runtime")
    assert any("pip wheel" in " ".join(c.value) for c in _all(builder, "RUN"))
    copies = _all(runtime, "COPY")
    assert [(c.flags, c.value) for c in copies] == [
        (("--from=builder",), ("/opt/venv", "/opt/venv"))
    ]


def test_runtime_is_non_root_and_read_only_friendly(
    stages: list[list[dockerfile.Command]],
) -> None:
    runtime = stages[-1]
    user = _last(runtime, "USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) == 10001
    assert gid.isdigit()
    assert int(gid) != 0
    env = _env(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert _last(runtime, "WORKDIR").value == ("/tmp",)


def test_entrypoint_cmd_and_port_match_compose_and_chart(
    stages: list[list[dockerfile.Command]],
) -> None:
    runtime = stages[-1]
    entrypoint = _last(runtime, "ENTRYPOINT")
    cmd = _last(runtime, "CMD")
    assert entrypoint.json
    assert list(entrypoint.value) == ["xconv"]
    assert cmd.json
    assert list(cmd.value) == ["run", "--config", "/etc/xconv/config.toml"]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert compose["services"]["consumer"]["command"] == list(cmd.value)
    values = yaml.safe_load((REPO_ROOT / "helm/xconv/values.yaml").read_text(encoding="utf-8"))
    assert _last(runtime, "EXPOSE").value == (str(values["config"]["observability"]["http_port"]),)
    assert values["securityContext"]["runAsUser"] == 10001


def test_oci_labels(stages: list[list[dockerfile.Command]]) -> None:
    labels = _last(stages[-1], "LABEL").value
    keys = set(labels[::2])
    for key in ("title", "description", "version", "revision", "licenses", "created"):
        assert f"org.opencontainers.image.{key}" in keys


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    excluded = False
    for raw in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.replace("/**", "")):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_build_inputs_only(
    stages: list[list[dockerfile.Command]],
) -> None:
    sources = [
        src
        for stage in stages[:2]
        for c in _all(stage, "COPY")
        if not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    ]
    assert sources
    for source in sources:
        assert not _dockerignore_excludes(source.removeprefix("./")), source
        assert (REPO_ROOT / source).exists(), source
    for unwanted in (
        ".venv",
        ".git",
        "tests/deploy/test_image.py",
        ".tools/bin/helm",
        ".cache",
        "native/target",
    ):
        assert _dockerignore_excludes(unwanted), unwanted
    assert not _dockerignore_excludes("consumer/cli.py")


def test_pyproject_packages_what_the_image_copies() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["xconv"] == "consumer.cli:main"
    assert (
        json.dumps(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
        == '["consumer"]'
    )


CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1, f"{line}: pin exactly one version"
        assert specs[0].operator == "==", f"{line}: pin with =="
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def test_constraints_pin_every_dependency_of_pyproject() -> None:
    """Runtime, dev and build dependencies are all pinned, at versions pyproject accepts."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.extend(extra)
    build_system = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared.extend(build_system["build-system"]["requires"])  # the wheel's build backend
    pins = _pins()
    assert declared
    for text in declared:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in {CONSTRAINTS.name}: make constraints"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy pyproject's {req.specifier}: make constraints"
        )


def test_image_and_venv_install_with_the_same_constraints(
    stages: list[list[dockerfile.Command]],
) -> None:
    builder = stages[1]
    runs = [" ".join(c.value) for c in _all(builder, "RUN")]
    deps = [r for r in runs if "-c requirements/constraints.txt" in r]
    assert len(deps) == 1, runs
    assert "-r /tmp/requirements.txt" in deps[0]
    # The dependency layer comes before the code is copied (so code changes reuse it), and
    # the package is installed on top without resolving dependencies again.
    order = [c for c in builder if c.cmd in ("COPY", "RUN")]
    dep_at = next(i for i, c in enumerate(order) if c.cmd == "RUN" and " ".join(c.value) == deps[0])
    code_at = next(i for i, c in enumerate(order) if c.cmd == "COPY" and "consumer" in c.value)
    assert dep_at < code_at
    copied_before = {src for c in order[:dep_at] if c.cmd == "COPY" for src in c.value[:-1]}
    assert copied_before == {"pyproject.toml", "requirements/constraints.txt"}
    assert any("pip install --no-deps /wheels/" in r for r in runs)
    # The build backend: pinned into its own venv, used without build isolation (an
    # isolated build would fetch the newest backend whatever the pins say).
    assert (
        "/opt/build/bin/pip install -c requirements/constraints.txt -r /tmp/build-requirements.txt"
        in deps[0]
    )
    assert any("/opt/build/bin/pip wheel --no-build-isolation --no-deps" in r for r in runs)
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "CONSTRAINTS := requirements/constraints.txt" in makefile
    assert (
        "pip install -q -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[dev]'" in makefile
    )
