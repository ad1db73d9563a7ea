"""docker-compose.yml, the Dockerfile and the monitoring config, checked without a Docker engine.

Nothing here starts a container: the machines that run the tests have no Docker. What can go wrong
in those files without a container ever starting is checked instead — the compose file against the
official Compose Specification schema (``tests/data/compose-spec.json``), the wiring between services
(health checks, ``depends_on``, URLs, scrape targets, dashboards), and every command an app container
runs against the project's real CLI, so that renaming a command or an option breaks this test rather
than ``docker compose up``.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer
import yaml
from jsonschema.protocols import Validator

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
GRAFANA_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources"
GRAFANA_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards"
GRAFANA_DASHBOARDS = GRAFANA_DIR / "dashboards"

# The Dockerfile stage the app services run; its ENTRYPOINT is the project's CLI.
APP_STAGE = "app"
APP_ENTRYPOINT = ["ingest"]
MIGRATE_SERVICE = "migrate"


# -- loading -------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.relative_to(ROOT)} is not a YAML mapping"
    return data


# Compose's interpolation syntax: `$$` escapes, `${VAR}`, `${VAR:-default}` and friends, `$VAR`.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(ValueError):
    """A variable without a default that the environment does not set."""


def interpolate(value: Any, env: Mapping[str, str], *, strict: bool = True) -> Any:
    """What compose makes of ``value`` in environment ``env``, for the syntax this repo uses.

    Compose itself substitutes an empty string (with a warning) for a variable that is unset and has
    no default; ``strict`` turns that into an error instead.
    """
    if isinstance(value, dict):
        return {key: interpolate(item, env, strict=strict) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, strict=strict) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        is_set = name in env
        is_empty = not env.get(name)
        if op in (":-", "-"):
            return arg if (is_empty if op == ":-" else not is_set) else env[name]
        if op in (":+", "+"):
            return "" if (is_empty if op == ":+" else not is_set) else arg
        if op in (":?", "?") and (is_empty if op == ":?" else not is_set):
            raise MissingVariableError(f"${{{name}}} is required: {arg}")
        if not is_set and strict:
            raise MissingVariableError(f"${{{name}}} has no default and is not set")
        return env.get(name, "")

    return _INTERPOLATION.sub(substitute, value)


RAW_COMPOSE = _load_yaml(COMPOSE_FILE)
# Checked as `docker compose up` sees it with nothing configured: every variable at its default.
# Not strict, so that a missing default fails its own test below rather than the whole collection.
COMPOSE = interpolate(RAW_COMPOSE, {}, strict=False)
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services", {})


def _build(service: Mapping[str, Any]) -> dict[str, Any] | None:
    build = service.get("build")
    if build is None:
        return None
    return {"context": build} if isinstance(build, str) else dict(build)


def _is_app_service(service: Mapping[str, Any]) -> bool:
    """Built from the repo's Dockerfile as the `ingest` CLI image (the last stage when untargeted)."""
    build = _build(service)
    if build is None or PurePosixPath(build.get("context", ".")) != PurePosixPath("."):
        return False
    if build.get("dockerfile", "Dockerfile") != DOCKERFILE.name:
        return False
    return build.get("target", dockerfile_stages()[-1].name) == APP_STAGE


def _argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]


def _is_one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart") == "no"


def _has_healthcheck(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck")
    return (
        bool(check)
        and not check.get("disable", False)
        and check.get("test") not in (None, ["NONE"])
    )


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Target service → condition (the short list form means `service_started`)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _option_value(argv: Sequence[str], option: str) -> str | None:
    for i, token in enumerate(argv):
        if token == option and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return None


def _listening_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports a service is known to listen on: its published ports and its `--port`."""
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            # [[ip:]host:]container[/proto]; the container side is the last colon field.
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    port = _option_value(_argv(service.get("command")), "--port")
    if port is not None:
        ports.add(int(port))
    return ports


def _bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path → repo-relative host path, for the bind mounts of a service."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts[entry["target"]] = entry["source"]
            continue
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return {target: str(PurePosixPath(source)) for target, source in mounts.items()}


# -- Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage of the Dockerfile: its base, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their `\\` continuations joined and comment lines dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            yield pending.strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def dockerfile_stages() -> list[Stage]:
    stages: list[Stage] = []
    for line in _logical_lines(DOCKERFILE.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--platform=")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    assert stages, "the Dockerfile has no FROM"
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), args
    return value


# Services that run the project's CLI image; (c) checks each of their commands.
APP_SERVICES = sorted(name for name, service in SERVICES.items() if _is_app_service(service))


# -- (a) the compose file is valid Compose ----------------------------------------------------------


def _compose_validator() -> Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    assert schema.get("title") == "Compose Specification", (
        "tests/data/compose-spec.json is not the Compose schema"
    )
    # The schema names its own draft; an unknown `$schema` must fail here, not quietly fall back.
    validator_class = jsonschema.validators.validator_for(schema, default=None)
    assert validator_class is not None, f"unknown $schema {schema.get('$schema')!r}"
    validator_class.check_schema(schema)
    return validator_class(schema)


def _schema_errors(document: Any) -> list[str]:
    errors = sorted(_compose_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_compose_file_validates_against_the_compose_spec() -> None:
    assert _schema_errors(COMPOSE) == []


def test_schema_rejects_what_compose_rejects() -> None:
    # The control for the test above: a schema that accepted anything would pass it too.
    broken = interpolate(RAW_COMPOSE, {}, strict=False)
    broken["services"]["postgres"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["redis"]["depends_on"] = {"postgres": {"condition": "service_ready"}}
    errors = _schema_errors(broken)
    assert any("intervall" in error for error in errors), errors
    assert any(error.startswith("services/redis/depends_on") for error in errors), errors


def test_every_variable_has_a_local_default() -> None:
    # `docker compose up` must work with nothing configured (secrets default to local-only values)...
    try:
        interpolate(RAW_COMPOSE, {})
    except MissingVariableError as exc:
        pytest.fail(f"docker-compose.yml: {exc}; give it a `${{VAR:-default}}` for local use")
    # ...and a value from the environment must still win over the default.
    env = {"POSTGRES_PASSWORD": "from-env"}
    url = interpolate(RAW_COMPOSE, env)["services"]["receiver"]["environment"][
        "INGEST_DATABASE_URL"
    ]
    assert ":from-env@" in url


# -- (b) health checks and start order ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_is_health_checked_or_a_one_shot(name: str) -> None:
    service = SERVICES[name]
    assert _has_healthcheck(service) or _is_one_shot(service), (
        f'{name}: give it a healthcheck, or mark a one-shot job with restart: "no"'
    )
    if _is_one_shot(service):
        assert not _has_healthcheck(service), (
            f"{name}: a one-shot exits, so a healthcheck never turns healthy"
        )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_targets_exist_and_can_meet_their_condition(name: str) -> None:
    for target, condition in _depends_on(SERVICES[name]).items():
        assert target in SERVICES, f"{name} depends on unknown service {target!r}"
        if condition == "service_healthy":
            assert _has_healthcheck(SERVICES[target]), (
                f"{name} waits for {target} to be healthy; it has no healthcheck"
            )
        if condition == "service_completed_successfully":
            assert _is_one_shot(SERVICES[target]), (
                f"{name} waits for {target} to finish; it is not a one-shot"
            )


def test_depends_on_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "depends_on cycle: " + " → ".join((*path, name))
        if name in done:
            return
        for target in _depends_on(SERVICES[name]):
            if target in SERVICES:
                visit(target, (*path, name))
        done.add(name)

    for name in SERVICES:
        visit(name, ())


def test_app_services_start_after_the_migration() -> None:
    assert MIGRATE_SERVICE in APP_SERVICES
    assert _argv(SERVICES[MIGRATE_SERVICE].get("command")) == ["db", "migrate"]
    for name in APP_SERVICES:
        if name != MIGRATE_SERVICE:
            assert (
                _depends_on(SERVICES[name]).get(MIGRATE_SERVICE) == "service_completed_successfully"
            ), name


@pytest.mark.parametrize("name", [n for n in APP_SERVICES if not _is_one_shot(SERVICES[n])])
def test_app_healthcheck_probes_healthz_on_the_served_port(name: str) -> None:
    service = SERVICES[name]
    port = _option_value(_argv(service.get("command")), "--port")
    assert port is not None, f"{name} serves without an explicit --port"
    probe = " ".join(_argv(service["healthcheck"]["test"]))
    assert f"127.0.0.1:{port}/healthz" in probe, probe


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_urls_point_at_compose_services(name: str) -> None:
    env = SERVICES[name].get("environment", {})
    assert isinstance(env, dict), f"{name}: environment as a mapping, so that it can be checked"
    urls = {
        key: value
        for key, value in env.items()
        if key.startswith("INGEST_") and key.endswith("_URL")
    }
    assert {
        "INGEST_DATABASE_URL",
        "INGEST_REDIS_URL",
        "INGEST_S3_ENDPOINT_URL",
        "INGEST_MOCK_API_URL",
    } <= set(urls)
    for key, url in urls.items():
        parts = urlsplit(url)
        assert parts.hostname in SERVICES, (
            f"{name}: {key} names host {parts.hostname!r}, not a compose service"
        )
        ports = _listening_ports(SERVICES[parts.hostname])
        assert parts.port in ports, (
            f"{name}: {key} uses port {parts.port}; {parts.hostname} listens on {ports}"
        )


def test_credentials_agree_between_services() -> None:
    postgres = SERVICES["postgres"]["environment"]
    minio = SERVICES["minio"]["environment"]
    for name in APP_SERVICES:
        env = SERVICES[name]["environment"]
        db = urlsplit(env["INGEST_DATABASE_URL"])
        assert (db.username, db.password, db.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "/" + postgres["POSTGRES_DB"],
        ), name
        assert env["INGEST_AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"], name
        assert env["INGEST_AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"], name


# -- (c) every app command is a real CLI command -----------------------------------------------------


# Typer vendors its own copy of Click (`typer._click`, private), so its commands are not instances of
# the public `click` classes: the tree is walked by shape instead — a group is what has `.commands`.
CliCommand = Any


def _subcommands(command: CliCommand) -> Mapping[str, CliCommand] | None:
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, Mapping) else None


def resolve_command(
    root: CliCommand, argv: Sequence[str]
) -> tuple[CliCommand, list[str], list[str]]:
    """Walk ``argv`` down the Click tree: (leaf command, its path, the arguments left for it)."""
    command, path, rest = root, [], list(argv)
    while (subcommands := _subcommands(command)) is not None:
        where = " ".join(["ingest", *path])
        if not rest or rest[0].startswith("-"):
            raise AssertionError(
                f"`{where}` is a command group, not a command: {sorted(subcommands)}"
            )
        name = rest.pop(0)
        if name not in subcommands:
            raise AssertionError(f"`{where}` has no command {name!r}; it has {sorted(subcommands)}")
        command = subcommands[name]
        path.append(name)
    return command, path, rest


def check_invocation(root: CliCommand, argv: Sequence[str]) -> None:
    """Fail unless ``argv`` names a command of ``root`` and parses with that command's options."""
    command, path, rest = resolve_command(root, argv)
    where = " ".join(["ingest", *path])
    known = {
        opt
        for param in command.params
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("-")
    }
    for token in rest:
        if token == "--":
            break
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            assert option in known, f"`{where}` has no option {option}; it has {sorted(known)}"
    # Parsing without invoking also catches a missing value, a bad type or a stray argument.
    try:
        with command.make_context(where, list(rest)):
            pass
    except typer.TyperException as exc:  # the base of the vendored Click's usage errors
        raise AssertionError(f"`{where} {shlex.join(rest)}`: {exc.format_message()}") from exc


def test_command_resolver_on_a_stand_in_cli() -> None:
    # The resolver must be right on its own, independent of how far the real CLI has come.
    app = typer.Typer()
    serve = typer.Typer()
    app.add_typer(serve, name="serve")

    @serve.command("receiver")
    def receiver(host: str = "127.0.0.1", port: int = 8000) -> None: ...

    @app.command("demo")
    def demo() -> None: ...

    root = typer.main.get_command(app)
    check_invocation(root, ["serve", "receiver", "--host", "0.0.0.0", "--port", "8000"])
    check_invocation(root, ["serve", "receiver", "--port=9000"])
    for bad, reason in [
        (["serve", "mock-api"], "no command 'mock-api'"),
        (["serve"], "is a command group"),
        (["serve", "receiver", "--workers", "2"], "no option --workers"),
        (["serve", "receiver", "--port", "eighty"], "Invalid value for '--port'"),
        (["serve", "receiver", "extra"], "unexpected extra argument"),
    ]:
        with pytest.raises(AssertionError, match=reason):
            check_invocation(root, bad)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_runs_a_real_cli_command(name: str) -> None:
    import ingest.cli

    service = SERVICES[name]
    # The image's ENTRYPOINT is the CLI (test_dockerfile_*); an override would bypass it.
    assert _argv(service.get("entrypoint")) in ([], APP_ENTRYPOINT), (
        f"{name} overrides the entrypoint"
    )
    argv = _argv(service.get("command"))
    assert argv, f"{name} runs no command"
    check_invocation(typer.main.get_command(ingest.cli.app), argv)


# -- (d) Prometheus and Grafana -----------------------------------------------------------------------


def _scrape_targets() -> dict[str, list[str]]:
    config = _load_yaml(PROMETHEUS_CONFIG)
    jobs: dict[str, list[str]] = {}
    for job in config.get("scrape_configs", []):
        assert job["job_name"] not in jobs, f"duplicate job {job['job_name']!r}"
        jobs[job["job_name"]] = [
            t for static in job.get("static_configs", []) for t in static["targets"]
        ]
    return jobs


def test_prometheus_scrapes_compose_services_on_their_ports() -> None:
    jobs = _scrape_targets()
    scraped: set[str] = set()
    for job, targets in jobs.items():
        assert targets, f"job {job} has no targets"
        for target in targets:
            host, _, port = target.rpartition(":")
            assert host in SERVICES, (
                f"job {job} scrapes {target}: {host!r} is not a compose service"
            )
            assert int(port) in _listening_ports(SERVICES[host]), (
                f"job {job}: {host} does not listen on {port}"
            )
            scraped.add(host)
    servers = {name for name in APP_SERVICES if not _is_one_shot(SERVICES[name])}
    assert servers <= scraped, f"app services nobody scrapes: {sorted(servers - scraped)}"


def test_prometheus_service_mounts_this_config() -> None:
    mounts = _bind_mounts(SERVICES["prometheus"])
    assert (
        mounts.get("/etc/prometheus/prometheus.yml")
        == PROMETHEUS_CONFIG.relative_to(ROOT).as_posix()
    )


def _provisioned_datasources() -> dict[str, dict[str, Any]]:
    sources: dict[str, dict[str, Any]] = {}
    for path in sorted(GRAFANA_DATASOURCES.glob("*.y*ml")):
        for source in _load_yaml(path).get("datasources", []):
            sources[source["uid"]] = source
    return sources


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows nest their panels


def _dashboards() -> list[Path]:
    paths = sorted(GRAFANA_DASHBOARDS.glob("*.json"))
    assert paths, "no dashboard under deploy/grafana/dashboards"
    return paths


def test_grafana_datasource_points_at_the_prometheus_service() -> None:
    sources = _provisioned_datasources()
    assert sources, "no provisioned datasource"
    for uid, source in sources.items():
        url = urlsplit(source["url"])
        assert url.hostname in SERVICES, f"datasource {uid} points at {url.hostname!r}"
        assert url.port in _listening_ports(SERVICES[url.hostname]), (
            f"datasource {uid}: wrong port {url.port}"
        )


@pytest.mark.parametrize("path", _dashboards(), ids=lambda p: p.name)
def test_dashboard_uses_provisioned_datasources_and_known_jobs(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard.get("uid") and dashboard.get("title"), (
        "a provisioned dashboard needs a uid and a title"
    )
    uids = set(_provisioned_datasources())
    jobs = set(_scrape_targets())
    panels = list(_panels(dashboard.get("panels", [])))
    assert panels, "the dashboard has no panels"
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for panel in panels:
        if panel.get("type") == "row":
            continue
        assert panel.get("datasource", {}).get("uid") in uids, (
            f"panel {panel['title']!r}: datasource not provisioned"
        )
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]).get("uid") in uids, panel["title"]
            # A job selector that names no scrape job is a panel that stays empty forever.
            for selector in re.findall(r'job=~?"([^"]+)"', target["expr"]):
                assert set(selector.split("|")) <= jobs, (
                    f"panel {panel['title']!r}: unknown job in {selector!r}"
                )


def test_grafana_mounts_provisioning_and_dashboards_where_they_are_read() -> None:
    mounts = _bind_mounts(SERVICES["grafana"])
    assert (
        mounts.get("/etc/grafana/provisioning")
        == (GRAFANA_DIR / "provisioning").relative_to(ROOT).as_posix()
    )
    providers = [
        p
        for path in sorted(GRAFANA_PROVIDERS.glob("*.y*ml"))
        for p in _load_yaml(path)["providers"]
    ]
    assert providers, "no dashboard provider"
    dashboards_dir = GRAFANA_DASHBOARDS.relative_to(ROOT).as_posix()
    for provider in providers:
        assert mounts.get(provider["options"]["path"]) == dashboards_dir, provider["name"]


# -- (e) the Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_app_stage_runs_the_cli_as_non_root() -> None:
    stages = dockerfile_stages()
    app = stages[-1]
    # Last, so that a plain `docker build .` produces the app image.
    assert app.name == APP_STAGE, f"the last stage is {app.name!r}, not {APP_STAGE!r}"
    assert app.base.startswith("python:3.11"), app.base
    entrypoints = app.all("ENTRYPOINT")
    assert entrypoints, "the app stage has no ENTRYPOINT"
    assert _exec_form(entrypoints[-1]) == APP_ENTRYPOINT
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert APP_ENTRYPOINT[0] in scripts, "the ENTRYPOINT is not a [project.scripts] entry"
    users = app.all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the app must not run as root"


def test_dockerfile_installs_from_the_lock_file() -> None:
    app = dockerfile_stages()[-1]
    copied = " ".join(app.all("COPY")).split()
    assert "uv.lock" in copied, "uv.lock is not copied into the app stage"
    syncs = [run for run in app.all("RUN") if re.search(r"\buv sync\b", run)]
    assert syncs, "the app stage does not install with `uv sync`"
    for run in syncs:
        # --frozen/--locked: install exactly the lock, never re-resolve inside the build.
        assert re.search(r"--(frozen|locked)\b", run), run
        assert "--no-dev" in run, run


def test_dockerfile_copies_files_that_exist() -> None:
    for stage in dockerfile_stages():
        for args in stage.all("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if not words or words[0].startswith("["):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repo"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if _build(s) is not None))
def test_build_targets_are_dockerfile_stages(name: str) -> None:
    build = _build(SERVICES[name])
    assert build is not None
    target = build.get("target")
    stages = {stage.name for stage in dockerfile_stages()}
    assert target is None or target in stages, (
        f"{name} builds target {target!r}; stages are {sorted(map(str, stages))}"
    )
