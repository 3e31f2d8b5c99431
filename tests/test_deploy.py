"""The container, Kubernetes and CI templates (docker/, deploy/kubernetes/, examples/ci/).

No image can be built or pulled here, so each file is checked by the tool that reads it:
``docker-compose config`` for the compose files, ``promtool`` for Prometheus, the Kubernetes
JSON schemas (``kubernetes-validate``, strict) for the manifests, and the project itself for
every command, option, port, path and metric name the files use. The metric names come from
a live ``evergreen serve`` scrape and, while ``evergreen watch`` is not in the CLI, from
``WATCH_METRICS`` below (a live ``watch`` scrape replaces it as soon as the command exists).
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
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is a dev dependency: pip install -e '.[dev]'")

from evergreen import config as config_mod  # noqa: E402
from evergreen.cli import cli  # noqa: E402
from evergreen.config import ServingConfig  # noqa: E402
from evergreen.registry import Registry  # noqa: E402
from evergreen.serving import ApiKeys, ServerThread, build  # noqa: E402
from tests.conftest import dataset, read_csv, write_config, write_csv  # noqa: E402
from tests.serving_support import Exports, publish, shared_exports  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
RULES = DOCKER / "prometheus" / "rules.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "evergreen.json"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
K8S = REPO / "deploy" / "kubernetes"
WORKFLOW = REPO / "examples" / "ci" / "evergreen.yml"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

# What `evergreen watch` exports (issue 16), name -> Prometheus type. The one place this list
# lives: used only while the CLI has no `watch`; with it, a live scrape is compared against it.
WATCH_METRICS = {
    "evergreen_watch_runs": "counter",  # {mode="full|incremental|block|failed"}
    "evergreen_watch_update_seconds": "histogram",
    "evergreen_watch_rows": "counter",
    "evergreen_watch_last_success_timestamp_seconds": "gauge",
    "evergreen_watch_pending_rows": "gauge",
    "evergreen_watch_drift_severity": "gauge",
}
WATCH_METRICS_PORT = 9464
IMAGE_USER_ID = 10001

# What the dashboard must show (the issue's list), as metric families.
DASHBOARD_MUST_SHOW = {
    "evergreen_requests": "requests by status",
    "evergreen_request_latency_seconds": "latency percentiles",
    "evergreen_batch_size": "batch sizes",
    "evergreen_queue_depth": "queue depth",
    "evergreen_model_loaded": "loaded versions",
    "evergreen_model_swaps": "swaps",
    "evergreen_watch_runs": "training runs and their mode",
    "evergreen_watch_rows": "rows per update",
    "evergreen_watch_update_seconds": "seconds per update",
    "evergreen_watch_drift_severity": "drift alarms",
}


def _fail_in_ci_or_skip(what: str, install: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: `make test` installs {install}")
    pytest.skip(f"{what} is absent (install Debian's {install}; `make test` tries apt-get)")


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def containers_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return spec["containers"] if spec else []


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def workflow_run_step() -> dict[str, Any]:
    steps = workflow()["jobs"]["train"]["steps"]
    (step,) = [s for s in steps if "evergreen run" in s.get("run", "")]
    return step


# -- the pins ---------------------------------------------------------------------------------


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def tensorflow_pin() -> str:
    """``2.21`` from ``tensorflow==2.21.*`` in pyproject.toml."""
    for dep in pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"tensorflow==(\d+\.\d+)\.\*", dep.replace(" ", ""))
        if match:
            return match.group(1)
    raise AssertionError("pyproject.toml pins no tensorflow==X.Y.*")


def dockerfile_tag() -> str:
    """The TensorFlow image tag docker/Dockerfile builds on (without its variant suffix)."""
    lines = [
        ln for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines() if ln.startswith("FROM")
    ]
    assert len(lines) == 1, f"one FROM line expected, got {lines}"
    match = re.fullmatch(r"FROM tensorflow/tensorflow:(\d+\.\d+\.\d+)\$\{TF_VARIANT\}", lines[0])
    assert match, f"FROM must be tensorflow/tensorflow:X.Y.Z${{TF_VARIANT}}, got {lines[0]!r}"
    return match.group(1)


def image_name(variant: str = "") -> str:
    return f"evergreen:{pyproject()['project']['version']}-tf{dockerfile_tag()}{variant}"


def test_dockerfile_builds_on_the_tensorflow_version_pyproject_pins():
    tag = dockerfile_tag()
    assert tag.rsplit(".", 1)[0] == tensorflow_pin(), (tag, tensorflow_pin())
    text = DOCKERFILE.read_text(encoding="utf-8")
    # The build refuses an image whose TensorFlow is not the pin (a retagged base, say).
    assert f"v.startswith('{tensorflow_pin()}.')" in text
    assert re.search(r'^ARG TF_VARIANT=""$', text, re.M), "the default variant is the CPU image"
    # TensorFlow is not reinstalled: the base image's packages constrain the install.
    assert "--constraint /tmp/base-image-packages.txt ." in text


def build_variants() -> dict[str, str]:
    """Image name -> TF_VARIANT, for every image the compose files build."""
    variants = {}
    for path in (COMPOSE, COMPOSE_GPU):
        for name, service in yaml.safe_load(path.read_text(encoding="utf-8"))["services"].items():
            if "build" in service:
                assert service["build"]["dockerfile"] == "docker/Dockerfile", name
                args = service["build"].get("args", {})
                variants[service["image"]] = args.get("TF_VARIANT", "")
    return variants


def test_every_built_image_is_a_variant_of_the_pin_and_named_after_it():
    variants = build_variants()
    assert set(variants.values()) == {"", "-gpu", "-jupyter"}, variants
    for image, variant in variants.items():
        assert image == image_name(variant), (image, variant)


def test_every_image_the_templates_run_is_the_pinned_one():
    used = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            used += [c["image"] for c in containers_of(doc)]
    for service in yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"].values():
        if service["image"].startswith("evergreen:"):
            used.append(service["image"])
    workflow_image = workflow()["jobs"]["train"]["container"]["image"]
    used.append(re.search(r"'([^']+)'", workflow_image).group(1))
    assert len(used) >= 8
    allowed = {image_name(v) for v in ("", "-gpu", "-jupyter")}
    assert set(used) <= allowed, set(used) - allowed


# -- the Dockerfile names only what exists ------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile_instructions() if word == name]


def test_dockerfile_copies_only_files_that_exist():
    copies = instruction("COPY")
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for source in sources:
            assert (REPO / source).exists(), f"docker/Dockerfile copies {source}: no such path"


def test_dockerfile_runs_evergreen_as_its_own_non_root_user_with_the_volumes():
    assert instruction("USER") == ["evergreen"]
    assert f"--uid {IMAGE_USER_ID}" in instruction("RUN")[1]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["evergreen"]
    assert "evergreen" in pyproject()["project"]["scripts"]
    assert json.loads(instruction("VOLUME")[0]) == ["/data", "/evergreen"]
    env = " ".join(instruction("ENV"))
    assert "EVERGREEN_ROOT=/evergreen" in env  # the root volume is the pipeline root
    assert sorted(instruction("EXPOSE")) == sorted(
        [str(ServingConfig().port), str(watch_metrics_port())]
    )


def test_dockerfile_healthcheck_asks_serves_readiness_route_on_its_port():
    (health,) = instruction("HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", health)
    assert url and int(url.group(1)) == ServingConfig().port
    assert url.group(2) == "/v2/health/ready"
    assert url.group(2) in serving_routes()


def serving_routes() -> set[str]:
    from evergreen.serving.app import create_app

    app = create_app(Registry(Path("/nonexistent-registry")), ServingConfig())
    return {route.path for route in app.routes}


def watch_metrics_port() -> int:
    """The watcher's default metrics port: the config's when it has [watch], else the issue's."""
    watch_config = getattr(config_mod, "WatchConfig", None)
    return watch_config().metrics_port if watch_config else WATCH_METRICS_PORT


# -- every evergreen command line in the templates is one the CLI accepts ---------------------


def command_lines() -> dict[str, list[str]]:
    """Every argv (after ``evergreen``) the templates run, by where it comes from."""
    found = {"dockerfile CMD": json.loads(instruction("CMD")[0])}
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name in ("serve", "watch"):
        found[f"compose {name}"] = [str(a) for a in compose[name]["command"]]
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            for c in containers_of(doc):
                found[f"{path.name} {c['name']}"] = [str(a) for a in c["args"]]
    for line in workflow_run_step()["run"].splitlines():
        if line.strip().startswith("evergreen "):
            words = shlex.split(line.split("|")[0])[1:]
            argv = [w for w in words if not re.fullmatch(r"\d*>.*", w)]  # drop redirections
            found["ci workflow"] = [a.replace("$EVERGREEN_CONFIG", "evergreen.toml") for a in argv]
    return found


COMMAND_LINES = command_lines()


@pytest.mark.parametrize("where", sorted(COMMAND_LINES), ids=sorted(COMMAND_LINES))
def test_every_command_and_option_the_templates_use_exists(where: str):
    argv = COMMAND_LINES[where]
    name = argv[0]
    if name not in cli.commands:
        if name == "watch":
            pytest.skip("`evergreen watch` is not in this CLI yet (the lead's branch adds it)")
        pytest.fail(f"{where} runs `evergreen {name}`, which the CLI does not have")
    command = cli.commands[name]
    options = {opt: p for p in command.params for opt in p.opts}
    for arg in argv[1:]:
        if arg.startswith("-"):
            assert arg in options, f"{where}: `evergreen {name}` has no option {arg}"
    # Parsing the whole line proves option values have the right types (ports are ints).
    command.make_context(name, list(argv[1:]), resilient_parsing=False).close()
    ports = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--port", "--metrics-port")}
    assert ports <= {str(ServingConfig().port), str(watch_metrics_port())}, ports


def test_every_place_reads_the_config_from_its_mount():
    for where, argv in COMMAND_LINES.items():
        config = argv[argv.index("-c") + 1]
        if where.startswith(("dockerfile", "compose")):
            assert config == "/data/evergreen.toml", where  # the project volume
        elif where.startswith("ci"):
            assert config == "evergreen.toml", where  # the checkout
        else:
            assert config == "/etc/evergreen/evergreen.toml", where  # the ConfigMap


# -- docker compose ---------------------------------------------------------------------------


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    _fail_in_ci_or_skip("docker-compose", "docker-compose package")
    raise AssertionError("unreachable")


def compose_config(files: list[Path], project: Path) -> subprocess.CompletedProcess:
    args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [*compose_command(), *args, "config"],
        env=dict(ENV, EVERGREEN_PROJECT=str(project)),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["compose", "compose+gpu"]
)
def test_docker_compose_config_validates_the_stack(files: list[Path], tmp_path: Path):
    checked = compose_config(files, tmp_path)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(checked.stdout)
    assert set(resolved["services"]) == {
        "serve", "watch", "prometheus", "grafana", "tensorboard", "jupyter"
    }  # fmt: skip
    serve = resolved["services"]["serve"]
    assert any(str(p).endswith(f":{ServingConfig().port}") or _target(p) == ServingConfig().port
               for p in serve["ports"])  # fmt: skip
    assert [s["source"] if isinstance(s, dict) else s for s in serve["secrets"]] == [
        "evergreen_api_keys"
    ]
    if COMPOSE_GPU in files:
        watch = resolved["services"]["watch"]
        assert watch["image"] == image_name("-gpu")
        assert watch["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def _target(port: Any) -> int | None:
    return int(port["target"]) if isinstance(port, dict) else None


def test_docker_compose_config_rejects_a_misspelt_key(tmp_path: Path):
    """The check above can fail: the same file with one typo is refused."""
    broken = (
        DOCKER / f".compose-broken-{os.getpid()}.yaml"
    )  # beside the original: relative paths hold
    broken.write_text(
        COMPOSE.read_text(encoding="utf-8").replace(
            "stop_grace_period: 30s", "stop_grace_perod: 30s"
        ),
        encoding="utf-8",
    )
    try:
        checked = compose_config([broken], tmp_path)
    finally:
        broken.unlink()
    assert checked.returncode != 0 and "stop_grace_perod" in checked.stderr + checked.stdout


def test_compose_mounts_existing_files_and_keeps_secrets_out_of_the_environment():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name} mounts {source}: no such path"
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|PASSWORD|TOKEN|SECRET", key):
                assert key.endswith("__FILE") and str(value).startswith("/run/secrets/"), key
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name} uses undeclared secret {secret}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    ignored = (DOCKER / "secrets" / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignored  # secrets never reach git
    assert "docker/secrets" in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets") / "secrets"
    made = subprocess.run(
        ["bash", str(DOCKER / "make-secrets.sh"), str(folder)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    return folder


def test_make_secrets_writes_keys_serve_accepts_and_keeps_them_on_a_second_run(secrets_dir: Path):
    keys = ApiKeys.load(key_file=secrets_dir / "api_keys")
    prometheus_key = (secrets_dir / "prometheus_api_key").read_text(encoding="utf-8").strip()
    assert keys.owners[prometheus_key] == "prometheus"
    assert len(keys.owners) == 2
    assert oct((secrets_dir).stat().st_mode)[-3:] == "700"
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    subprocess.run(["bash", str(DOCKER / "make-secrets.sh"), str(secrets_dir)], check=True,
                   capture_output=True)  # fmt: skip
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before


# -- Prometheus -------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        _fail_in_ci_or_skip("promtool", "prometheus package")
    return path  # type: ignore[return-value]


def _prometheus_copy(tmp_path: Path, rules_text: str | None = None) -> Path:
    """prometheus.yml and rules.yml in tmp_path, the secret path pointing at a real file.

    promtool checks that ``credentials_file`` exists; in the container it is a compose secret.
    """
    key = tmp_path / "prometheus_api_key"
    key.write_text("a-key-for-promtool-only\n", encoding="utf-8")
    text = PROMETHEUS.read_text(encoding="utf-8")
    assert text.count("/run/secrets/prometheus_api_key") == 1
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/run/secrets/prometheus_api_key", str(key)), encoding="utf-8"
    )
    (tmp_path / "rules.yml").write_text(rules_text or RULES.read_text(encoding="utf-8"))
    return tmp_path / "prometheus.yml"


def test_promtool_checks_the_prometheus_config_and_its_rules(tmp_path: Path):
    checked = subprocess.run(
        [promtool(), "check", "config", str(_prometheus_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    assert re.search(r"SUCCESS: [1-9]\d* rules found", checked.stdout)


def test_promtool_rejects_a_broken_rule(tmp_path: Path):
    broken = RULES.read_text(encoding="utf-8").replace(
        "max(evergreen_queue_depth) > 100", "max(evergreen_queue_depth > 100"
    )
    assert broken != RULES.read_text(encoding="utf-8")
    checked = subprocess.run(
        [promtool(), "check", "config", str(_prometheus_copy(tmp_path, broken))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0


def test_prometheus_scrapes_the_compose_services_where_they_listen():
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "evergreen-serve": [f"serve:{ServingConfig().port}"],
        "evergreen-watch": [f"watch:{watch_metrics_port()}"],
    }
    serve_job = config["scrape_configs"][0]
    assert serve_job["authorization"]["type"] == "Bearer"  # what evergreen serve accepts
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert "prometheus_api_key" in compose["services"]["prometheus"]["secrets"]


# -- every PromQL expression names an exported metric -----------------------------------------

_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels, keywords, variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, [5m] or [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        name, call = match.groups()
        if not call and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (status) (rate(evergreen_requests_total{status=~"5.."}[5m]))', {"evergreen_requests_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))", {"x_bucket"}),
        ("time() - max(a_seconds) > 3 * 86400 and max(b) > 0", {"a_seconds", "b"}),
        ("sum(rate(a_sum[1h])) / clamp_min(sum(rate(a_count[1h])), 1e-9)", {"a_sum", "a_count"}),
    ],
    ids=["labels-and-range", "grafana-variable", "keywords", "numbers"],
)  # fmt: skip
def test_promql_metric_names_finds_exactly_the_selected_metrics(expr: str, names: set[str]):
    assert promql_metric_names(expr) == names


def sample_names(families: dict[str, str]) -> set[str]:
    """The series names Prometheus stores for each metric family of the given type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    return {name + s for name, kind in families.items() for s in suffixes[kind]}


def scrape_families(text: str) -> dict[str, str]:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    # The parser reads an unlabelled counter's `X_created` sample as a gauge family of its own.
    return {n: t for n, t in families.items() if not _is_created_of(n, families)}


def _is_created_of(name: str, families: dict[str, str]) -> bool:
    return name.endswith("_created") and name.removesuffix("_created") in families


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def served(
    exports: Exports, secrets_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A live ``evergreen serve`` with the keys make-secrets.sh wrote, after one prediction."""
    registry = Registry(tmp_path_factory.mktemp("deploy") / "registry")
    publish(registry, exports, 0)
    settings = ServingConfig(port=0, audit_log=os.devnull, batch_timeout_ms=1.0)
    keys = ApiKeys.load(key_file=secrets_dir / "api_keys")
    app = build(registry.root, settings, api_keys=keys)
    prometheus_key = (secrets_dir / "prometheus_api_key").read_text(encoding="utf-8").strip()
    with (
        ServerThread(app, settings) as running,
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        auth = {"Authorization": f"Bearer {prometheus_key}"}
        predicted = client.post(
            "/v1/models/reviews:predict", json={"instances": ["good tea"]}, headers=auth
        )
        assert predicted.status_code == 200, predicted.text
        client.auth_headers = auth  # type: ignore[attr-defined]
        yield client


def test_serve_answers_the_healthcheck_and_prometheus_key(served: httpx.Client):
    assert served.get("/v2/health/ready").status_code == 200  # public, as probes need
    assert served.get("/v2/health/live").status_code == 200
    assert served.get("/metrics").status_code == 401  # keys on: /metrics needs one
    assert served.get("/metrics", headers=served.auth_headers).status_code == 200  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def watch_families(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """The watcher's metric families and where they came from ("live" or "list")."""
    if "watch" not in cli.commands:
        return WATCH_METRICS, "list"
    folder = tmp_path_factory.mktemp("watch-project")
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(folder / "data" / "span-1" / "reviews.csv", header, rows[:20])
    # 20 rows wait for a million: the watcher polls and exports, and never trains.
    watch = "[watch]\nmin_rows = 1000000\nmax_wait_seconds = 86400\npoll_seconds = 60\n"
    config = write_config(folder, label="score", extra=watch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evergreen",
            "watch",
            "-c",
            str(config),
            "--metrics-port",
            str(port),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # bounded: about a minute
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                if response.status_code == 200:
                    return scrape_families(response.text), "live"
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.1)
        raise AssertionError("evergreen watch never answered on /metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def exported_sample_names(served: httpx.Client, watch_families: tuple) -> set[str]:
    text = served.get("/metrics", headers=served.auth_headers).text  # type: ignore[attr-defined]
    serve = {n: t for n, t in scrape_families(text).items() if n.startswith("evergreen_")}
    assert "evergreen_requests" in serve  # a real scrape, not an empty page
    return sample_names(serve) | sample_names(watch_families[0])


def test_watch_exports_what_the_list_says(watch_families: tuple[dict[str, str], str]):
    families, source = watch_families
    if source == "list":
        pytest.skip("`evergreen watch` is not in this CLI yet: its metrics come from WATCH_METRICS")
    assert {n: t for n, t in families.items() if n.startswith("evergreen_watch")} == WATCH_METRICS


def dashboard_expressions() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def test_every_promql_expression_names_a_metric_serve_or_watch_exports(
    served: httpx.Client, watch_families: tuple[dict[str, str], str]
):
    exported = exported_sample_names(served, watch_families)
    expressions = dashboard_expressions() + rule_expressions()
    assert len(expressions) >= 20
    for where, expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"{where}: {expr!r} selects no metric"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported ({watch_families[1]} watch)"


def test_dashboard_shows_every_metric_the_issue_asks_for():
    used = {name for _, expr in dashboard_expressions() for name in promql_metric_names(expr)}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    missing = {m: why for m, why in DASHBOARD_MUST_SHOW.items() if m not in families}
    assert not missing, missing


def test_dashboard_uses_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert source["url"] == "http://prometheus:9090"  # the compose service
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


# -- Kubernetes -------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = [
        (f"{path.name}:{doc['kind']}/{doc.get('metadata', {}).get('name', path.stem)}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in load_yaml_documents(path)
    ]
    assert len(docs) >= 10
    return docs


MANIFESTS = manifests()
CORE = [
    (n, d) for n, d in MANIFESTS if d["kind"] not in ("Kustomization", "InferenceService", "TFJob")
]  # CRDs (KServe, the Kubeflow training operator) are checked by their own tests


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is a dev dependency"
    )
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", [n for n, _ in CORE], ids=[n for n, _ in CORE])
def test_manifest_matches_the_kubernetes_schema_strictly(name: str):
    _validate(dict(CORE)[name])


def test_the_schema_check_rejects_a_misspelt_field():
    import copy

    doc = copy.deepcopy(dict(CORE)["serve.yaml:Deployment/evergreen-serve"])
    probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["paht"] = probe["httpGet"].pop("path")
    with pytest.raises(Exception, match="paht"):
        _validate(doc)


def test_serve_and_watch_pods_carry_what_a_cluster_needs():
    docs = dict(MANIFESTS)
    serve = docs["serve.yaml:Deployment/evergreen-serve"]
    (container,) = containers_of(serve)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": ServingConfig().port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"/v2/health/ready", "/v2/health/live"} <= serving_routes()
    for name, doc in MANIFESTS:
        spec = pod_spec(doc)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == IMAGE_USER_ID, name
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert {"name": "EVERGREEN_ROOT", "value": "/evergreen"} in c["env"], name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "/evergreen" in mounts and "/etc/evergreen" in mounts, name
    watch = docs["watch.yaml:Deployment/evergreen-watch"]
    assert watch["spec"]["replicas"] == 1 and watch["spec"]["strategy"]["type"] == "Recreate"
    cron = docs["cronjob.yaml:CronJob/evergreen-run"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # one writer


def test_manifests_refer_only_to_objects_they_define():
    docs = dict(MANIFESTS)
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs.values() if "metadata" in d}
    for name, doc in MANIFESTS:
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"]["namespace"] == "evergreen", name
        spec = pod_spec(doc)
        if spec is not None:
            for volume in spec["volumes"]:
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in defined, (name, claim)
                if "configMap" in volume:
                    assert ("ConfigMap", volume["configMap"]["name"]) in defined, name
                if "secret" in volume:
                    assert ("Secret", volume["secret"]["secretName"]) in defined, name
            volumes = {v["name"] for v in spec["volumes"]}
            for c in spec["containers"]:
                assert {m["name"] for m in c["volumeMounts"]} <= volumes, name
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), name
        if doc["kind"] == "Service":
            pods = [
                (d["spec"]["template"]["metadata"]["labels"], containers_of(d))
                for d in docs.values()
                if d["kind"] == "Deployment"
            ]
            matched = [
                cs for labels, cs in pods if doc["spec"]["selector"].items() <= labels.items()
            ]
            assert len(matched) == 1, name
            port_names = {p["name"] for c in matched[0] for p in c["ports"]}
            assert {p["targetPort"] for p in doc["spec"]["ports"]} <= port_names, name


def test_kustomization_lists_files_that_exist_and_leaves_the_secret_out():
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    assert "secret.yaml" not in resources  # a placeholder must never overwrite the real keys
    assert {"serve.yaml", "watch.yaml", "storage.yaml", "configmap.yaml"} <= set(resources)


def test_placeholder_secret_is_refused_by_serve():
    (secret,) = load_yaml_documents(K8S / "secret.yaml")
    from evergreen.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 16"):
        ApiKeys.parse(secret["stringData"]["api_keys"], "secret.yaml")


def test_configmap_holds_a_config_evergreen_loads(tmp_path: Path):
    (configmap,) = load_yaml_documents(K8S / "configmap.yaml")
    text = configmap["data"]["evergreen.toml"]
    if not hasattr(config_mod, "WatchConfig"):  # this CLI predates [watch]: check the rest
        text = text.split("[watch]")[0]
    path = tmp_path / "evergreen.toml"
    path.write_text(text, encoding="utf-8")
    loaded = config_mod.load(path)
    assert loaded.data.pattern.startswith("/data/")  # the data volume, not the ConfigMap's folder
    if hasattr(loaded, "watch"):
        assert loaded.watch.metrics_host == "0.0.0.0"  # reachable by Prometheus
        assert loaded.watch.metrics_port == watch_metrics_port()


def test_inference_service_serves_our_registry_with_tf_serving():
    (isvc,) = load_yaml_documents(K8S / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["runtime"] == "kserve-tensorflow-serving"
    claim, _, path = model["storageUri"].removeprefix("pvc://").partition("/")
    assert ("PersistentVolumeClaim", claim) in {
        (d["kind"], d["metadata"]["name"]) for d in dict(MANIFESTS).values() if "metadata" in d
    }
    (configmap,) = load_yaml_documents(K8S / "configmap.yaml")
    name = tomllib.loads(configmap["data"]["evergreen.toml"])["pipeline"]["name"]
    assert path == f"registry/{name}"  # <root>/registry/<model>: TF Serving's base path
    assert set(model["resources"]["requests"]) == {"cpu", "memory"}


# -- the CI workflow --------------------------------------------------------------------------


def test_workflow_runs_on_new_data_and_keeps_the_reports_whatever_happens():
    flow = workflow()
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "data/**" in triggers["push"]["paths"]
    assert flow["concurrency"]["cancel-in-progress"] is False  # one writer: queue, never cancel
    steps = flow["jobs"]["train"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert uses[0].startswith("actions/checkout@")
    run = workflow_run_step()
    assert steps.index(run) == 1 and not run.get("continue-on-error")
    upload = steps[uses.index(next(u for u in uses if u.startswith("actions/upload-artifact@")))]
    assert steps.index(upload) > steps.index(run)
    assert upload["if"] == "always()"  # the reports of a blocked span are uploaded too
    assert "evergreen-reports/" in upload["with"]["path"]


def _run_step(project: Path, bin_dir: Path, summary: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", workflow_run_step()["run"]],
        cwd=project,
        env=dict(
            ENV,
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            EVERGREEN_CONFIG="evergreen.toml",
            GITHUB_STEP_SUMMARY=str(summary),
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_workflow_step_uploads_reports_and_fails_only_on_a_blocked_span(tmp_path: Path):
    """The step's own shell, run on a real pipeline: span 1 trains, span 2 is blocked."""
    bin_dir = tmp_path / "bin"  # `evergreen` on PATH, as in the image
    bin_dir.mkdir()
    shim = bin_dir / "evergreen"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m evergreen "$@"\n')
    shim.chmod(0o755)
    project = tmp_path / "project"
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(project / "data" / "span-1" / "reviews.csv", header, rows[:300])
    write_config(
        project, label="score", extra='[train]\nepochs = 1\n\n[drift]\nfull_retrain_on = "never"\n'
    )
    summary = tmp_path / "summary.md"

    trained = _run_step(project, bin_dir, summary)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert [p.suffix for p in (project / "evergreen-reports").iterdir()] == [".html"]
    assert not summary.exists()

    # Span 2 lost its product column: validation blocks it, and the job must fail.
    write_csv(
        project / "data" / "span-2" / "reviews.csv", header[1:], [r[1:] for r in rows[300:450]]
    )
    blocked = _run_step(project, bin_dir, summary)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "span 2 was not trained" in summary.read_text(encoding="utf-8")
    assert "span 2 was not trained" in (project / "evergreen-run.log").read_text(encoding="utf-8")
    assert len(list((project / "evergreen-reports").glob("*.html"))) == 2


# -- make test installs the tools these checks need -------------------------------------------


@pytest.mark.parametrize("package", ["docker-compose", "prometheus"], ids=["compose", "promtool"])
def test_make_test_installs_the_debian_packages_the_checks_need(package: str):
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(rf"apt_install,{package}\)", target), target
