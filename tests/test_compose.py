"""docker-compose.yml, the Dockerfile and the monitoring config, checked without a Docker engine.

Nothing here starts a container: the machines that run the tests have no Docker. What can go wrong
in those files without a container ever starting is checked instead — the compose file against the
official Compose Specification schema (``tests/data/compose-spec.json``), the wiring between services
(health checks, ``depends_on``, URLs, scrape targets, dashboards), and every command an app container
runs against the project's real CLI, so that renaming a command or an option breaks this test rather
than ``docker compose up``. The app containers' health probes are run here for real, against the
apps they probe and the session's PostgreSQL; the receiver's webhook secrets and the buckets the S3
sources use are checked against ``sources/``, the demo and the README.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema
import psycopg
import pytest
import typer
import yaml
from jsonschema.protocols import Validator
from psycopg import sql

from ingest.netutil import free_port
from ingest.webhooks.app import create_app as create_receiver_app
from tests.support.servers import serve_in_thread

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ingest.settings import Settings

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
BUCKETS_SERVICE = "minio-init"
SOURCES_DIR = ROOT / "sources"
README = ROOT / "README.md"


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


def _served_app(name: str) -> tuple[str, str] | None:
    """The ``ingest serve X`` an app service runs, or None when it serves no HTTP."""
    argv = _argv(SERVICES[name].get("command"))
    return (argv[0], argv[1]) if len(argv) > 1 and argv[0] == "serve" else None


# The app services that answer HTTP: their health checks probe a route, Prometheus scrapes them.
HTTP_SERVICES = [name for name in APP_SERVICES if _served_app(name) is not None]


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


def test_app_services_start_after_the_migration_and_the_buckets() -> None:
    assert MIGRATE_SERVICE in APP_SERVICES
    assert _argv(SERVICES[MIGRATE_SERVICE].get("command")) == ["db", "migrate"]
    assert _is_one_shot(SERVICES[BUCKETS_SERVICE])
    for name in APP_SERVICES:
        if name != MIGRATE_SERVICE:
            deps = _depends_on(SERVICES[name])
            for one_shot in (MIGRATE_SERVICE, BUCKETS_SERVICE):
                assert deps.get(one_shot) == "service_completed_successfully", (
                    f"{name} must wait for {one_shot} to finish"
                )


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
    servers = {name for name in APP_SERVICES if _served_app(name) is not None}
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


# -- (f) phase 1: every part runs, its probe works, its secrets and buckets are there -------------

# What phase 1 runs from the app image: the command's leading words → whether it is a one-shot.
PHASE_ONE_COMMANDS: dict[tuple[str, ...], bool] = {
    ("db", "migrate"): True,
    ("serve", "mock-api"): False,
    ("serve", "receiver"): False,
    ("relay",): False,
}
PHASE_ONE_BACKING = ("postgres", "redis", "minio", BUCKETS_SERVICE)


def _service_running(prefix: tuple[str, ...]) -> str:
    matches = [
        name
        for name in APP_SERVICES
        if tuple(_argv(SERVICES[name].get("command"))[: len(prefix)]) == prefix
    ]
    assert len(matches) == 1, f"one service should run `ingest {' '.join(prefix)}`: {matches}"
    return matches[0]


def test_phase_one_runs_every_part() -> None:
    for name in PHASE_ONE_BACKING:
        assert name in SERVICES, f"phase 1 needs a {name} service"
    for prefix, one_shot in PHASE_ONE_COMMANDS.items():
        name = _service_running(prefix)
        assert _is_one_shot(SERVICES[name]) == one_shot, (
            f"{name}: expected {'a one-shot' if one_shot else 'a long-running service'}"
        )


def _container_env(name: str) -> dict[str, str]:
    env = SERVICES[name].get("environment", {})
    assert isinstance(env, dict), f"{name}: environment as a mapping, so that it can be checked"
    return {key: str(value) for key, value in env.items()}


def _settings_variables() -> set[str]:
    from ingest.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def _env_names(value: Any) -> Iterator[str]:
    """Values of every ``*_env`` field in a dumped source spec: the variables the source reads."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_env") and isinstance(item, str):
                yield item
            else:
                yield from _env_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_names(item)


def _source_variables() -> set[str]:
    """The variables the sources in ./sources name for their URLs and secrets."""
    from ingest.sources.spec import load_sources

    return {
        name
        for spec in load_sources(SOURCES_DIR).values()
        for name in _env_names(spec.model_dump())
    }


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_names_are_settings_or_source_variables(name: str) -> None:
    settings, sources = _settings_variables(), _source_variables()
    for key in _container_env(name):
        if key.startswith("INGEST_"):
            assert key in settings, f"{name}: {key} is not a Settings field ({sorted(settings)})"
        else:
            assert key in sources, (
                f"{name}: {key} is named by no source in sources/ ({sorted(sources)})"
            )


def test_receiver_serves_every_webhook_source_with_its_secrets() -> None:
    from ingest.settings import Settings
    from ingest.sources.spec import WebhookSourceSpec, load_sources
    from ingest.webhooks.app import webhook_sources

    name = _service_running(("serve", "receiver"))
    env = _container_env(name)
    assert "INGEST_SOURCES_DIR" in env, f"{name}: INGEST_SOURCES_DIR is not set"
    mounted = _bind_mounts(SERVICES[name]).get(env["INGEST_SOURCES_DIR"])
    assert mounted == SOURCES_DIR.relative_to(ROOT).as_posix(), (
        f"{name}: INGEST_SOURCES_DIR={env['INGEST_SOURCES_DIR']} is not where ./sources is mounted"
    )
    # What `ingest serve receiver` does at start-up, with the container's environment: a missing
    # secret raises here, where the container would exit 2.
    settings = Settings.from_environ({**env, "INGEST_SOURCES_DIR": str(SOURCES_DIR)})
    served = webhook_sources(settings, environ=env)
    expected = {
        source
        for source, spec in load_sources(SOURCES_DIR).items()
        if isinstance(spec, WebhookSourceSpec)
    }
    assert expected, "sources/ has no webhook source to serve"
    assert set(served) == expected


def _run_probe(name: str, url: str | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run ``name``'s health check here: its own port replaced by ``url``, `python` by this one."""
    test = _argv(SERVICES[name]["healthcheck"]["test"])
    # The app image has no curl and no shell tools worth relying on: the probe is Python.
    assert test[:2] == ["CMD", "python"], f"{name}: probe with the image's python, in CMD form"
    argv = [sys.executable, *test[2:]]
    port = _option_value(_argv(SERVICES[name].get("command")), "--port")
    if url is not None:
        own = f"http://127.0.0.1:{port}"
        assert any(own + "/" in arg for arg in argv), f"{name}: the probe does not call {own}/"
        argv = [arg.replace(own, url) for arg in argv]
    completed = subprocess.run(
        argv, env=dict(env or os.environ), capture_output=True, text=True, timeout=60, check=False
    )
    return completed.returncode


def _app_for(command: tuple[str, str], settings: Settings) -> FastAPI:
    """The app ``ingest serve X`` serves, built as the CLI builds it."""
    if command == ("serve", "mock-api"):
        from ingest.mockapi.app import create_app as create_mock_api

        return create_mock_api()
    if command == ("serve", "receiver"):
        from ingest.webhooks.app import create_app as create_receiver

        return create_receiver(settings, sources={})
    if command == ("serve", "metrics"):
        from ingest.metrics_app import create_app as create_metrics

        return create_metrics(settings)
    raise AssertionError(f"no app known for `ingest {' '.join(command)}`: add it to _app_for")


def _session_settings(**overrides: str) -> Settings:
    from ingest.settings import Settings

    env = {k: v for k, v in os.environ.items() if k.startswith("INGEST_")}
    env.update({f"INGEST_{k.upper()}": v for k, v in overrides.items()})
    return Settings.from_environ(env)


@pytest.mark.parametrize("name", HTTP_SERVICES)
def test_http_healthcheck_passes_against_the_app_it_probes(name: str) -> None:
    command = _served_app(name)
    assert command is not None
    assert _option_value(_argv(SERVICES[name].get("command")), "--port"), (
        f"{name} serves without an explicit --port"
    )
    with serve_in_thread(_app_for(command, _session_settings())) as url:
        assert _run_probe(name, url) == 0


def test_receiver_healthcheck_fails_while_postgres_cannot_commit() -> None:
    # Healthy must mean "a delivery can be stored", not just "the process answers".
    name = _service_running(("serve", "receiver"))
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    app = create_receiver_app(_session_settings(database_url=dead), sources={})
    with serve_in_thread(app) as url:
        assert _run_probe(name, url) != 0


def test_relay_healthcheck_is_healthy_while_the_outbox_keeps_up(
    database_url: str, fresh_schema: str, tmp_path: Path
) -> None:
    name = _service_running(("relay",))
    env = {
        **os.environ,
        "INGEST_HOME": str(tmp_path),
        "INGEST_DATABASE_URL": database_url,
        "INGEST_DB_SCHEMA": fresh_schema,
    }
    assert _run_probe(name, env=env) == 0  # an empty outbox

    def add(event_id: str, due_minutes_ago: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (source, event_id, topic, payload, available_at)"
                    " VALUES ('payments', %s, 'landing', '{{}}', now() - make_interval(mins => %s))"
                ).format(sql.Identifier(fresh_schema, "outbox")),
                (event_id, due_minutes_ago),
            )

    add("evt_recent", 1)
    assert _run_probe(name, env=env) == 0  # due, but not for long: the relay may be on it
    add("evt_stuck", 3)
    assert _run_probe(name, env=env) == 1  # due for minutes: the relay is not keeping up
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET delivered_at = now()").format(
                sql.Identifier(fresh_schema, "outbox")
            )
        )
    assert _run_probe(name, env=env) == 0
    dead = {**env, "INGEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    assert _run_probe(name, env=dead) != 0


def _created_buckets() -> set[str]:
    """Buckets the one-shot MinIO client creates, on an alias that points at the minio service."""
    service = SERVICES[BUCKETS_SERVICE]
    assert service.get("image", "").startswith("minio/mc:"), f"{BUCKETS_SERVICE} runs minio/mc"
    assert _depends_on(service).get("minio") == "service_healthy"
    script = " ".join(_argv(service.get("entrypoint")) + _argv(service.get("command")))
    calls = [shlex.split(part) for part in re.split(r"&&|;|\n", script)]
    mc = [argv[argv.index("mc") + 1 :] for argv in calls if "mc" in argv]
    aliases = {argv[2]: argv[3] for argv in mc if argv[:2] == ["alias", "set"]}
    assert aliases, f"{BUCKETS_SERVICE}: no `mc alias set`"
    buckets: set[str] = set()
    for argv in mc:
        if argv[:1] != ["mb"]:
            continue
        for target in (arg for arg in argv[1:] if not arg.startswith("-")):
            alias, _, bucket = target.partition("/")
            endpoint = urlsplit(aliases[alias])
            assert endpoint.hostname == "minio", f"mc mb {target}: alias {alias} is not minio"
            assert endpoint.port in _listening_ports(SERVICES["minio"]), aliases[alias]
            buckets.add(bucket.rstrip("/"))
    return buckets


def _s3_specs(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping) and value.get("kind") == "s3":
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _s3_specs(item)


def _buckets_in_use() -> dict[str, str]:
    """Bucket → who uses it: the S3 sources in ./sources, the demo, and the README's example."""
    from ingest.demo import DEMO_BUCKET
    from ingest.sources.spec import S3SourceSpec, load_sources

    used = {
        spec.bucket: f"sources/{name}"
        for name, spec in load_sources(SOURCES_DIR).items()
        if isinstance(spec, S3SourceSpec)
    }
    used.setdefault(DEMO_BUCKET, "ingest demo")
    readme = README.read_text(encoding="utf-8")
    for block in re.findall(r"^```ya?ml\n(.*?)^```", readme, re.M | re.S):
        for spec in _s3_specs(yaml.safe_load(block)):
            used.setdefault(str(spec["bucket"]), "the README's S3 source")
    return used


def test_minio_init_creates_the_buckets_the_s3_sources_use() -> None:
    created, used = _created_buckets(), _buckets_in_use()
    assert used, "no S3 source names a bucket; nothing says which bucket compose should create"
    missing = {bucket: user for bucket, user in used.items() if bucket not in created}
    assert not missing, f"{BUCKETS_SERVICE} does not create {missing}; it creates {sorted(created)}"
    assert created <= set(used), f"buckets nothing uses: {sorted(created - set(used))}"
    minio = SERVICES["minio"]["environment"]
    env = SERVICES[BUCKETS_SERVICE]["environment"]
    assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )


@pytest.mark.parametrize("path", _dashboards(), ids=lambda p: p.name)
def test_dashboard_queries_only_metrics_the_package_exports(path: Path) -> None:
    # A misspelt metric is a panel that stays empty forever, and nothing else would notice.
    source = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "src" / "ingest").rglob("*.py")
    )
    queried = set(re.findall(r"\bingest_[a-z0-9_]+", path.read_text(encoding="utf-8")))
    assert queried, "the dashboard queries no ingest_* metric"
    for name in sorted(queried):
        base = re.sub(r"_(bucket|sum|count|total|created)$", "", name)
        assert f'"{base}"' in source, f"{path.name}: no metric {base!r} in src/ingest"
