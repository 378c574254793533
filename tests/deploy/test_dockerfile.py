# SPDX-License-Identifier: Apache-2.0
"""The root Dockerfile and .dockerignore, checked structurally (no Docker engine is needed):
stages for both BASE values, pinned images, prometheus-cpp, the CI scripts in the builder, and
a runtime stage that runs aaren-server as a non-root user with a health check. Also runs
deploy/docker/stage-runtime.sh, which the builder uses to find the runtime packages."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import DEPLOY, GRPC_PORT, METRICS_PORT, REPO, run

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
STAGE_RUNTIME = DEPLOY / "docker" / "stage-runtime.sh"
PROMETHEUS_CPP_VERSION = "v1.2.4"


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, buf = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        instruction, _, args = buf.partition(" ")
        result.append((instruction.upper(), " ".join(args.split())))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return result


class Stage:
    def __init__(self, base: str, name: str):
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def stages() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages in order."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction, args in parse_dockerfile(DOCKERFILE):
        if instruction == "FROM":
            m = re.fullmatch(r"(\S+) AS (\S+)", args, re.I)
            assert m, f"every stage is named: FROM {args}"
            result.append(Stage(m.group(1), m.group(2)))
        elif not result:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            result[-1].instructions.append((instruction, args))
    return global_args, result


def resolve(name_or_image: str, global_args: dict[str, str], base: str, by_name: dict) -> list:
    """The chain of stage names ending in an image, for one value of BASE."""
    values = dict(global_args, BASE=base)
    ref = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], name_or_image)
    if ref in by_name:
        return [ref] + resolve(by_name[ref].base, global_args, base, by_name)
    return [ref]


def final_stage() -> Stage:
    return stages()[1][-1]


def builder_stage() -> Stage:
    (builder,) = [s for s in stages()[1] if s.name == "builder"]
    return builder


def test_multi_stage_with_named_stages():
    _, all_stages = stages()
    assert len(all_stages) >= 2
    names = [s.name for s in all_stages]
    assert len(names) == len(set(names))
    assert {"builder", "runtime"} <= set(names)
    assert all_stages[-1].name == "runtime", "the last stage is the image built by default"


@pytest.mark.parametrize("base,builder_image,runtime_image", [
    ("cuda", r"nvidia/cuda:13\.\d+\.\d+-devel-ubuntu24\.04", r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04"),
    ("cpu", r"debian:bookworm(-slim)?", r"debian:bookworm-slim"),
])
def test_base_selects_builder_and_runtime_images(base, builder_image, runtime_image):
    global_args, all_stages = stages()
    assert global_args["BASE"] == "cuda"
    by_name = {s.name: s for s in all_stages}
    builder_chain = resolve(by_name["builder"].base, global_args, base, by_name)
    runtime_chain = resolve(by_name["runtime"].base, global_args, base, by_name)
    assert re.fullmatch(builder_image, builder_chain[-1]), builder_chain
    assert re.fullmatch(runtime_image, runtime_chain[-1]), runtime_chain
    # stage-runtime.sh lists package names: builder and runtime must be the same release.
    release = re.compile(r"(ubuntu\d+\.\d+|bookworm)")
    assert release.search(builder_chain[-1]).group(1) == release.search(runtime_chain[-1]).group(1)


def test_images_are_pinned():
    global_args, all_stages = stages()
    by_name = {s.name: s for s in all_stages}
    for base in ("cuda", "cpu"):
        for stage in all_stages:
            image = resolve(stage.base, global_args, base, by_name)[-1]
            if image in by_name or "$" in image:
                continue
            name, _, tag = image.partition(":")
            assert tag and tag != "latest", f"{stage.name}: unpinned image {image}"


def test_prometheus_cpp_is_built_from_the_pinned_release():
    builder = builder_stage()
    assert f"PROMETHEUS_CPP_VERSION={PROMETHEUS_CPP_VERSION}" in builder.args("ARG")
    (step,) = [r for r in builder.args("RUN") if "prometheus-cpp" in r]
    assert "github.com/jupp0r/prometheus-cpp" in step
    assert '--branch "${PROMETHEUS_CPP_VERSION}"' in step
    for flag in ("-DENABLE_PULL=ON", "-DENABLE_PUSH=OFF", "-DENABLE_COMPRESSION=OFF",
                 "-DENABLE_TESTING=OFF", "-DUSE_THIRDPARTY_LIBRARIES=OFF"):
        assert flag in step, flag
    assert "libcivetweb-dev" in step  # USE_THIRDPARTY_LIBRARIES=OFF: the system civetweb
    # The -dev package's CMake config imports /usr/bin/civetweb, which only `civetweb` ships.
    assert re.search(r"(?<![\w-])civetweb(?![\w-])", step.replace("libcivetweb-dev", "")), step
    assert "cmake --install" in step


def test_metrics_exporter_argument_selects_the_offline_build():
    builder = builder_stage()
    assert "METRICS_EXPORTER=prometheus-cpp" in builder.args("ARG")
    (step,) = [r for r in builder.args("RUN") if "prometheus-cpp" in r]
    # builtin: nothing fetched; prometheus-cpp: the clone; anything else: an error.
    cases = re.findall(r"(\S+)\) ", step[step.index('case "${METRICS_EXPORTER}" in'):])
    assert cases[:3] == ["builtin", "prometheus-cpp", "*"], cases
    builtin = step[step.index("builtin)"):step.index(";;")]
    assert "git" not in builtin and "apt-get" not in builtin
    assert "exit 1" in step[step.index("*)"):]


def test_builder_runs_the_ci_scripts_in_order():
    runs = builder_stage().args("RUN")
    def index(fragment):
        hits = [i for i, r in enumerate(runs) if fragment in r]
        assert hits, f"no RUN with {fragment!r} in the builder"
        return hits[0]
    deps = index("bash scripts/install-deps.sh")
    prom = index("prometheus-cpp")
    test = index("bash scripts/test.sh")
    stage = index("deploy/docker/stage-runtime.sh")
    assert deps < prom < test < stage
    # Portable CPU code: the image runs on machines other than the builder.
    assert "ARG AAREN_MARCH=native" not in " ".join(f"ARG {a}" for a in builder_stage().args("ARG"))
    assert "-DAAREN_MARCH=${AAREN_MARCH}" in runs[test]


def test_runtime_user_is_numeric_and_not_root():
    (user,) = final_stage().args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes' runAsNonRoot can check it"


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_runtime_healthcheck_entrypoint_cmd_expose():
    stage = final_stage()
    (health,) = stage.args("HEALTHCHECK")
    command = exec_form(health[health.index("CMD ") + 4:])
    assert command[:4] == ["aaren-cli", "health", "--target", f"localhost:{GRPC_PORT}"]
    (expose,) = stage.args("EXPOSE")
    assert {str(GRPC_PORT), str(METRICS_PORT)} <= set(expose.split())
    (entrypoint,) = stage.args("ENTRYPOINT")
    assert exec_form(entrypoint) == ["aaren-server"]
    (cmd,) = stage.args("CMD")
    cmd = exec_form(cmd)
    model_dirs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model_dir"]
    assert model_dirs == ["/opt/aaren/models/demo-lm", "/opt/aaren/models/demo-ts"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    copies = dict(reversed(c.split()[-2:]) for c in stage.args("COPY") if "--from" not in c)
    for model_dir in model_dirs:
        source = copies[model_dir]
        assert (REPO / source / "config.json").is_file()
        assert (REPO / source / "model.safetensors").is_file()


def test_image_version_label_follows_the_project():
    version = re.search(r"project\(aaren_serve VERSION ([0-9.]+)",
                        (REPO / "CMakeLists.txt").read_text()).group(1)
    assert f"VERSION={version}" in final_stage().args("ARG")


def test_runtime_stage_has_no_build_tools():
    runs = " ".join(final_stage().args("RUN"))
    for tool in ("-dev", "build-essential", "cmake", "g++", "test.sh", "install-deps.sh"):
        assert tool not in runs, tool
    assert any("/staging/packages.txt" in c for c in final_stage().args("COPY"))


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [l.strip().rstrip("/") for l in lines if l.strip() and not l.startswith("#")]


def ignored(relative: str) -> bool:
    """Approximates Docker's matching (enough for the patterns used here)."""
    parts = relative.split("/")
    for pattern in dockerignore_patterns():
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(p, pattern[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            return True
    return False


def test_dockerignore():
    patterns = set(dockerignore_patterns())
    assert {".git", "build*", "gpu-bundle", "*.configure.log", ".venv"} <= patterns
    assert any("__pycache__" in p for p in patterns)
    for excluded in ("build/server/aaren-server", "build-gpu/x", ".git/HEAD", "gpu-bundle/bin/x",
                     "build.configure.log", "tools/__pycache__/x.pyc"):
        assert ignored(excluded), excluded
    # Needed in the context: the sources, the scripts, the models, the deploy files.
    for needed in ("scripts/build.sh", "scripts/install-deps.sh", "scripts/test.sh",
                   "deploy/docker/stage-runtime.sh", "models/demo-lm/config.json",
                   "CMakeLists.txt", "Dockerfile", "tests/deploy/test_dockerfile.py"):
        assert not ignored(needed), needed


def test_copy_sources_exist_in_the_context():
    for stage in stages()[1]:
        for copy in stage.args("COPY"):
            if "--from" in copy:
                continue
            *sources, _ = copy.split()
            for source in sources:
                if source == ".":
                    continue
                assert (REPO / source).exists(), source
                assert not ignored(source), f"{source} is excluded by .dockerignore"


def test_hadolint_if_present():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed")
    r = run([hadolint, "--failure-threshold", "error", str(DOCKERFILE)])
    assert r.returncode == 0, r.stdout + r.stderr


# ---- deploy/docker/stage-runtime.sh ----

def stage_runtime(tmp_path: Path, *binaries: str) -> tuple[Path, list[str], str]:
    root, packages = tmp_path / "root", tmp_path / "packages.txt"
    r = run(["bash", str(STAGE_RUNTIME), str(root), str(packages), *binaries])
    assert r.returncode == 0, r.stdout + r.stderr
    return root, packages.read_text().split(), r.stderr


def test_stage_runtime_syntax():
    assert run(["bash", "-n", str(STAGE_RUNTIME)]).returncode == 0
    r = run(["bash", str(STAGE_RUNTIME), "only-one-arg"])
    assert r.returncode == 2 and "usage" in r.stderr


def test_stage_runtime_shellcheck_if_present():
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed")
    r = run([shellcheck, str(STAGE_RUNTIME)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_stage_runtime_lists_packages_and_installs_binaries(tmp_path):
    ls = shutil.which("ls")
    root, packages, _ = stage_runtime(tmp_path, ls)
    assert (root / "usr/local/bin/ls").is_file()
    assert os.access(root / "usr/local/bin/ls", os.X_OK)
    assert "libc6" in packages
    assert packages == sorted(set(packages))


def test_stage_runtime_copies_unpackaged_libraries(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (tmp_path / "answer.c").write_text("int answer(void) { return 42; }\n")
    (tmp_path / "main.c").write_text("int answer(void);\nint main(void) { return answer() - 42; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib_dir / "libanswer.so"),
                    str(tmp_path / "answer.c")], check=True)
    subprocess.run([cc, "-o", str(tmp_path / "main"), str(tmp_path / "main.c"),
                    f"-L{lib_dir}", "-lanswer", f"-Wl,-rpath,{lib_dir}"], check=True)
    root, packages, log = stage_runtime(tmp_path / "out", str(tmp_path / "main"))
    assert (root / str(lib_dir / "libanswer.so").lstrip("/")).is_file(), log
    assert "libc6" in packages and not any("answer" in p for p in packages)


def test_stage_runtime_on_aaren_server(tmp_path):
    server = os.environ.get("AAREN_SERVER") or str(REPO / "build" / "server" / "aaren-server")
    if not Path(server).is_file():
        pytest.skip("aaren-server is not built (set AAREN_SERVER)")
    root, packages, log = stage_runtime(tmp_path, server)
    assert (root / "usr/local/bin/aaren-server").is_file()
    # The libraries README "Building" names, by package (names carry sonames, so match stems).
    for stem in ("libc6", "libgrpc++", "libprotobuf", "libabsl", "libgomp", "libopenblas",
                 "libspdlog"):
        assert any(p.startswith(stem) for p in packages), f"{stem}: {packages}\n{log}"
    for package in packages:
        r = run(["dpkg-query", "-W", "-f=${Status}", package])
        assert "install ok installed" in r.stdout, package
