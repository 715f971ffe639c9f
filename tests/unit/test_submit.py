"""cluster/ configs parse and agree with each other; `rprm-ray submit` logic that needs no cluster.

The cloud and Kubernetes files cannot be applied here: these tests only check what can be checked
locally (they parse, name the fields their tools require, point at a real recipe, and the two
KubeRay cluster specs have not drifted apart)."""

from __future__ import annotations

import argparse
import shlex
import socket
from pathlib import Path

import pytest
import yaml

from rprm_ray.commands import submit
from rprm_ray.config import load_recipe

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"


def _yaml(rel: str):
    return yaml.safe_load((CLUSTER / rel).read_text())


def _closed_port_address() -> str:
    """An http address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------- cluster/ files


def test_every_cluster_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert {f.relative_to(CLUSTER).as_posix() for f in files} >= {
        "runtime_env.yaml", "ray-up-aws-gpu.yaml",
        "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/shared-pvc.yaml",
    }
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


@pytest.mark.parametrize("rel", sorted(p.relative_to(CLUSTER).as_posix()
                                       for p in (CLUSTER / "kuberay").glob("*.yaml")))
def test_kubernetes_manifests_name_api_version_and_kind(rel):
    doc = _yaml(rel)
    assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), rel


def test_raycluster_has_autoscaling_gpu_workers_and_dashboard_port():
    doc = _yaml("kuberay/raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never exposed outside the cluster
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert 8265 in ports
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] < gpu["maxReplicas"]  # room for Serve to ask for judge nodes
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1


def test_rayjob_runs_a_valid_recipe_on_the_same_cluster_spec():
    job = _yaml("kuberay/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["rprm-ray", "run"]
    recipe = load_recipe(REPO / argv[2])  # the recipe exists and validates
    assert recipe.resources.address == "auto"  # the driver joins the job's cluster
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert "working_dir" in runtime_env
    assert job["spec"]["rayClusterSpec"] == _yaml("kuberay/raycluster.yaml")["spec"]


def test_launcher_config_names_its_node_types_and_keeps_the_dashboard_local():
    cfg = _yaml("ray-up-aws-gpu.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert any("rprm_ray-*.whl" in c and "[gpu]" in c for c in cfg["setup_commands"])  # from the checkout's wheel
    workers = [t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] >= t["min_workers"] for t in workers)


def test_runtime_env_excludes_heavy_paths_and_leaves_driver_env_vars_alone(monkeypatch):
    monkeypatch.chdir(REPO)
    env, path = submit.load_runtime_env(None)  # the default file, found from the repo root
    assert path == submit.DEFAULT_RUNTIME_ENV
    assert Path(env["working_dir"]) == REPO
    for pattern in (".git/", ".venv/", "/runs/", "/models/", "__pycache__/", "*.safetensors"):
        assert pattern in env["excludes"], pattern
    # Ray refuses a job whose runtime_env repeats env var keys the driver's ray.init sets.
    assert not {"VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM"} & set(env.get("env_vars", {}))


# ---------------------------------------------------------------------------- runtime env file


def test_runtime_env_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "env.yaml"
    bad.write_text("working_dir: .\nenv_vars:\n  OMP_NUM_THREADS: 4\n")
    with pytest.raises(submit.SubmitError, match=r"env\.yaml: env_vars\.OMP_NUM_THREADS: .*strings"):
        submit.load_runtime_env(bad)
    bad.write_text("working_dir: no/such/dir\n")
    with pytest.raises(submit.SubmitError, match="not a directory"):
        submit.load_runtime_env(bad)
    with pytest.raises(submit.SubmitError, match="runtime env file not found"):
        submit.load_runtime_env(tmp_path / "missing.yaml")


def test_missing_default_runtime_env_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(submit.SubmitError, match="cluster/runtime_env.yaml does not exist"):
        submit.load_runtime_env(None)


def test_remote_working_dir_is_left_as_is(tmp_path):
    f = tmp_path / "env.yaml"
    f.write_text('working_dir: "https://example.com/repo/archive/abc.zip"\n')
    env, _ = submit.load_runtime_env(f)
    assert env["working_dir"] == "https://example.com/repo/archive/abc.zip"


# ---------------------------------------------------------------------------- address


def test_address_resolution(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with pytest.raises(submit.SubmitError, match="no cluster address"):
        submit.resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://env-head:8265/")
    assert submit.resolve_address(None) == "http://env-head:8265"
    assert submit.resolve_address("head:8265") == "http://head:8265"  # the flag beats the env
    assert submit.resolve_address("https://head.example:443") == "https://head.example:443"
    with pytest.raises(submit.SubmitError, match="not a dashboard URL"):
        submit.resolve_address("ray://head:10001")
    with pytest.raises(submit.SubmitError, match="GCS port"):
        submit.resolve_address("10.0.0.5:6379")


def test_unreachable_address_gives_one_line_naming_it(capsys):
    address = _closed_port_address()
    args = argparse.Namespace(job_id="rprm-x", address=address)
    assert submit.run_status(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"cannot reach the Ray dashboard at {address}" in err


# ---------------------------------------------------------------------------- the job


def test_bad_recipe_fails_before_contacting_the_cluster(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("trainer:\n  micro_batch_size_per_device: 3\n  global_batch_size: 64\n")
    p = argparse.ArgumentParser()
    submit.add_submit_arguments(p)
    args = p.parse_args([str(recipe), "--address", _closed_port_address()])
    assert submit.run_submit(args) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: trainer" in err and "global_batch_size" in err
    assert "cannot reach" not in err


def test_entrypoint_round_trips_through_the_shell():
    overrides = submit.job_overrides(["loop.iterations=3", "name=two words"])
    assert overrides[-1] == "resources.address=auto"
    cmd = submit.build_entrypoint("recipes/my recipe.yaml", overrides)
    assert shlex.split(cmd) == ["rprm-ray", "run", "recipes/my recipe.yaml",
                                "--set", "loop.iterations=3", "--set", "name=two words",
                                "--set", "resources.address=auto"]
    # A user's own choice of address is kept, not overridden.
    assert submit.job_overrides(["resources.address=ray://x:10001"]) == ["resources.address=ray://x:10001"]


def test_recipe_must_be_uploaded_with_the_working_dir(tmp_path):
    wd = tmp_path / "repo"
    (wd / "recipes").mkdir(parents=True)
    inside = wd / "recipes" / "r.yaml"
    inside.write_text("name: r\n")
    upload = submit.Upload(wd, (("recipes/r.yaml", 8),))
    assert submit.recipe_path_in_job(inside, upload) == "recipes/r.yaml"
    assert submit.recipe_path_in_job(Path("any/r.yaml"), None) == "any/r.yaml"
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("name: r\n")
    with pytest.raises(submit.SubmitError, match="outside working_dir"):
        submit.recipe_path_in_job(outside, upload)
    excluded = wd / "runs" / "r.yaml"
    excluded.parent.mkdir()
    excluded.write_text("name: r\n")
    with pytest.raises(submit.SubmitError, match="excluded from the working_dir upload"):
        submit.recipe_path_in_job(excluded, upload)


def test_oversized_upload_names_the_biggest_entries():
    mib = 2**20
    upload = submit.Upload(Path("/repo"), (
        ("rprm_ray/cli.py", 4_000), ("models/policy/model.safetensors", 300 * mib),
        ("models/judge/model.safetensors", 200 * mib), ("notes.bin", 150 * mib),
    ))
    assert upload.biggest_entries(2) == [("models/", 500 * mib), ("notes.bin", 150 * mib)]
    with pytest.raises(submit.SubmitError) as err:
        submit.check_upload_size(upload, 100 * mib, "cluster/runtime_env.yaml")
    msg = str(err.value)
    assert "over Ray's 100.0 MiB limit" in msg
    assert "models/ 500.0 MiB" in msg and "notes.bin 150.0 MiB" in msg
    assert "models/policy/model.safetensors 300.0 MiB" in msg
    assert "cluster/runtime_env.yaml" in msg
    submit.check_upload_size(submit.Upload(Path("/repo"), (("a.py", 10),)), 100 * mib, "x")  # fits
