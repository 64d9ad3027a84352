"""cluster.yaml: Ray's own cluster-config validator accepts it, and it keeps what a careless edit would lose: every
node installs the same, exact versions (cluster-constraints.txt), the sweep's storage reaches every node, token
authentication stays on and the dashboard stays off the internet.

Offline and fast: `prepare_config` + `validate_config` are the steps `ray up` takes before it calls AWS; they read
only the file, Ray's bundled aws/defaults.yaml and ray-schema.json.
"""

import copy
import importlib.metadata
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from dvc.utils.hydra import compose_and_dump
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # the test extra installs it on Python < 3.11

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()
RAW = yaml.safe_load(TEXT)
PYPROJECT = (ROOT / "pyproject.toml").read_text()
CONSTRAINTS = ROOT / "cluster-constraints.txt"

COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)

SECRET_PATTERNS = {
    "AWS access key ID": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret key": r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{20,}",
    "W&B key": r"WANDB_API_KEY\s*[=:]\s*['\"]?(?!\$)[^\s'\"]+",
    "W&B key given to `wandb login`": r"wandb\s+login\s+(?:-\S+\s+)*[0-9A-Za-z_]{20,}",
    "Ray token": r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?(?!\$)[^\s'\"]+",
    "64-hex-digit token (Ray's format)": r"\b[0-9a-f]{64}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
}


def prepared(raw: dict) -> dict:
    """What `ray up` checks: the file merged with Ray's AWS defaults, then validated against Ray's schema."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if re.search(pattern, text)]


@pytest.fixture(scope="module")
def config() -> dict:
    return prepared(RAW)


def commands(config: dict) -> list[str]:
    return [cmd for key in COMMAND_LISTS for cmd in config[key]]


def worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


# --------------------------------------------------------------------------- Ray's validator


def test_ray_validator_accepts_the_file(config):
    assert config["provider"]["type"] == "aws"
    # Every command list is in the file itself, so none comes from Ray's defaults (which bind the dashboard to
    # 0.0.0.0 and install a nightly Ray).
    assert set(COMMAND_LISTS) <= set(RAW)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(unknown_top_level_key=1),
        lambda c: c["available_node_types"]["ray.worker.gpu"].update(gpus=1),
        lambda c: c.update(head_node_type="ray.head.missing"),
        lambda c: c["available_node_types"]["ray.worker.gpu"].update(min_workers=5),
    ],
    ids=["unknown-top-level-key", "unknown-node-type-key", "missing-head-type", "min-workers-above-max-workers"],
)
def test_ray_validator_rejects_broken_variants(break_it):
    raw = copy.deepcopy(RAW)
    break_it(raw)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        prepared(raw)


# --------------------------------------------------------------------------- nodes


def test_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0, "the head is meant to be CPU-only"
    gpu_workers = {k: v for k, v in worker_types(config).items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker node type declares GPUs"
    for name, t in gpu_workers.items():
        assert t["min_workers"] == 0, f"{name}: GPU nodes should start only when trials wait for them"
    assert any(t["max_workers"] >= 1 for t in gpu_workers.values()), "the autoscaler could never add a GPU node"
    assert config["max_workers"] >= max(t["max_workers"] for t in gpu_workers.values())
    # A spot type is offered beside the on-demand one, with the same resources (so the same trials fit).
    market = {k: t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") for k, t in gpu_workers.items()}
    spot = [k for k, m in market.items() if m == "spot"]
    on_demand = [k for k, m in market.items() if m is None]
    assert spot and on_demand, market
    assert {str(gpu_workers[k]["resources"]) for k in spot + on_demand} == {str(gpu_workers[on_demand[0]]["resources"])}


def test_every_node_uses_the_same_image(config):
    # Ray needs the same Python on every node; one image gives that.
    images = {t["node_config"].get("ImageId") for t in config["available_node_types"].values()}
    assert len(images) == 1 and None not in images, images


# --------------------------------------------------------------------------- security


def test_no_secrets_in_the_file():
    assert secrets_in(TEXT) == []


@pytest.mark.parametrize(
    "leak",
    [
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "aws_secret_access_key = " + "a1B2" * 10,
        "export WANDB_API_KEY=" + "0123456789abcdef" * 2 + "01234567",
        "wandb login " + "f" * 40,
        "RAY_AUTH_TOKEN=" + "e" * 64,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_secret_scan_catches_leaks(leak):
    assert secrets_in(f"setup_commands:\n    - {leak}\n")


@pytest.mark.parametrize(
    "fine",
    [
        "WANDB_API_KEY=$WANDB_API_KEY dvc repro",
        "RAY_AUTH_TOKEN_PATH=~/.ray/auth_token",
        "ImageId: ami-0123456789abcdef0",
        "git checkout " + "a" * 40,
    ],
)
def test_secret_scan_passes_references(fine):
    assert secrets_in(fine) == []


def test_dashboard_is_not_exposed(config):
    for cmd in commands(config):
        for host in re.findall(r"--dashboard-host[=\s]+(\S+)", cmd):
            assert host.strip("'\"") in {"127.0.0.1", "localhost", "::1"}, cmd
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        every_port = rule.get("IpProtocol") in ("-1", -1)
        assert not every_port and not rule["FromPort"] <= 8265 <= rule["ToPort"], rule


def test_token_auth_stays_on(config):
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", TEXT, re.IGNORECASE)
    # Ray 2.60's launcher does not distribute a token, and a worker's `ray start` enables token auth only when
    # RAY_AUTH_MODE=token is set: both have to come from this file.
    assert any("export RAY_AUTH_MODE=token" in cmd for cmd in config["initialization_commands"])
    home = f"/home/{config['auth']['ssh_user']}"
    assert config["file_mounts"].get(f"{home}/.ray/auth_token") == "~/.ray/auth_token"


# --------------------------------------------------------------------------- installation


def pins() -> dict[str, str]:
    """cluster-constraints.txt as {canonical name: version}; every line must be `name==version`."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;@+]+)", line.strip())
        assert m, f"cluster-constraints.txt: {line!r} is not one exact version (name==version)"
        name = canonicalize_name(m[1])
        assert name not in out, f"cluster-constraints.txt pins {name} twice"
        out[name] = str(Version(m[2]))
    return out


def split(cmd: str) -> list[str]:
    """A shell command's simple commands (split at &&, || and ;)."""
    return re.split(r"&&|;|\|\|", cmd)


def node_path(config: dict, local: str) -> str:
    """Where file_mounts puts the local file `local` on every node."""
    (remote,) = [r for r, here in config["file_mounts"].items() if here == local]
    return remote


def test_every_node_installs_the_project_from_the_same_pinned_versions(config):
    """One pip install, in setup_commands (run on the head and on every worker), of the project's `cluster` extra
    constrained by cluster-constraints.txt, which file_mounts copies to the head and the head to every worker: a
    worker the autoscaler adds later, or a head rebuilt by another `ray up`, installs the same versions."""
    setup = " && ".join(config["setup_commands"])
    assert "git clone" in setup
    assert "python3 -m venv .venv" in setup
    on_node = node_path(config, "cluster-constraints.txt").replace(f"/home/{config['auth']['ssh_user']}", "~")
    raw = [(key, seg) for key in COMMAND_LISTS for cmd in RAW[key] for seg in split(cmd) if "pip install" in seg]
    assert [key for key, _ in raw] == ["setup_commands"], raw
    install = raw[0][1]
    assert re.fullmatch(rf"""\s*(\S*/)?pip install -e ["']?\.\[cluster\]["']? -c {re.escape(on_node)}\s*""", install)
    # Ray merges setup_commands into the head's and the workers' lists (as `ray up` does): both run that install.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert [seg for cmd in config[key] for seg in split(cmd) if "pip install" in seg] == [install], key
    assert CONSTRAINTS.is_file()


def requirement_closure(name: str, extras: set[str]) -> dict[str, str | None]:
    """{canonical name: installed version, None where not installed here} of what `name[extras]` needs, through
    the installed packages' metadata (markers evaluated for this Python)."""
    seen: dict[str, set[str]] = {}
    versions: dict[str, str | None] = {}
    todo = [(name, set(extras))]
    while todo:
        dist_name, wanted = todo.pop()
        key = canonicalize_name(dist_name)
        if key in seen and wanted <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | wanted
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
            continue
        versions[key] = dist.version
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
                todo.append((req.name, set(req.extras)))
    return versions


def test_the_pins_cover_everything_the_nodes_install_at_the_versions_tested_here():
    """Every package that `pip install -e ".[cluster]"` brings is pinned, at the version this environment (the one
    the tests, and `ray up`, run from) has: Ray above all, since Ray refuses a node of another version."""
    pinned = pins()
    needed = requirement_closure("grutune", {"cluster"})
    needed.pop("grutune")
    assert not set(needed) - set(pinned), f"not pinned: {sorted(set(needed) - set(pinned))}"
    stale = {
        name: (pinned[name], have)
        for name, have in needed.items()
        if have is not None and Version(pinned[name]) != Version(Version(have).public)
    }
    assert not stale, (
        f"cluster-constraints.txt differs from this environment {stale} (pinned, here): refresh it as "
        f"docs/cluster.md says (Pinned versions)"
    )
    assert pinned["ray"] == ray.__version__


def test_the_pins_satisfy_the_projects_own_ranges():
    pinned = pins()
    project = tomllib.loads(PYPROJECT)["project"]
    for spec in [*project["dependencies"], *project["optional-dependencies"]["cluster"]]:
        req = Requirement(spec)
        assert Version(pinned[canonicalize_name(req.name)]) in req.specifier, (req, pinned[req.name])


def _extra(name: str) -> list[str]:
    return tomllib.loads(PYPROJECT)["project"]["optional-dependencies"][name]


def test_the_cluster_extra_installs_the_projects_ray_and_the_launchers_tools():
    deps = {Requirement(r).name: Requirement(r) for r in tomllib.loads(PYPROJECT)["project"]["dependencies"]}
    extra = {Requirement(r).name: Requirement(r) for r in _extra("cluster")}
    assert {"ray", "boto3", "dvc-s3"} <= set(extra)
    assert "default" in extra["ray"].extras and str(extra["ray"].specifier) == str(deps["ray"].specifier)
    # Ranges bounded above (the next major version), never one exact version: grutune uses public APIs only, and
    # CI tests the lower bounds (.ci/run).
    for name in ("ray", "optuna"):
        assert any(s.operator in ("<", "<=", "~=") for s in deps[name].specifier), deps[name]
        assert not any(s.operator == "==" for s in deps[name].specifier), deps[name]


def test_ray_runs_from_the_project_venv(config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        calls = re.findall(r"(\S*)\bray (?:start|stop)\b", " ; ".join(config[key]))
        assert calls and all(prefix.endswith(".venv/bin/") for prefix in calls), (key, calls)


def test_commands_are_valid_bash(config):
    for cmd in commands(config):
        done = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd}\n{done.stderr}"


# --------------------------------------------------------------------------- shared storage, and the guide


def test_the_head_sets_the_storage_that_dvc_exp_run_composes(config, tmp_path, monkeypatch):
    """The head's shells export GRUTUNE_STORAGE (an EDIT value that stops `ray up` until it is set), and params
    composed from conf/ by `dvc exp run` take it for search.storage and gan_search.storage, in every budget."""
    head = " ; ".join(config["head_setup_commands"])
    assert re.search(r"GRUTUNE_STORAGE=s3://YOUR-BUCKET/\S+;", head) and "*YOUR-BUCKET*) echo" in head
    assert 'echo "export GRUTUNE_STORAGE=$GRUTUNE_STORAGE" >> ~/.bashrc' in head
    monkeypatch.setenv("GRUTUNE_STORAGE", "s3://my-bucket/grutune")
    for budget in ("full", "cluster", "laptop"):
        out = tmp_path / f"{budget}.yaml"
        compose_and_dump(out, str(ROOT / "conf"), None, "config", "", [f"budget={budget}"])
        params = yaml.safe_load(out.read_text())
        assert params["search"]["storage"] == params["gan_search"]["storage"] == "s3://my-bucket/grutune"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", "", ["budget=cluster", "search.storage=/mnt/nfs/g"])
    assert yaml.safe_load(out.read_text())["gan_search"]["storage"] == "/mnt/nfs/g"  # one setting moves both


def test_every_worker_type_can_write_to_the_bucket(config):
    profiles = {name: t["node_config"].get("IamInstanceProfile") for name, t in worker_types(config).items()}
    assert all(p == {"Name": "grutune-worker"} for p in profiles.values()), profiles


def test_the_files_named_in_comments_exist():
    for path in re.findall(r"\b((?:docs|tests|conf)/[\w./-]+\.(?:md|py|yaml))", TEXT):
        assert (ROOT / path).exists(), path
    assert "README" not in TEXT  # the guide is docs/cluster.md
