"""Configuration: one TOML file, ``STATESTORE_*`` environment overrides, secrets from env only.

Only :func:`load_config` reads files and the environment; everything else takes
the frozen :class:`Config` it returns.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .partitioners import PartitionerName

__all__ = [
    "ApiConfig",
    "Config",
    "Framing",
    "IdKind",
    "KeyCodecName",
    "LogConfig",
    "SchemaRegistryConfig",
    "SnapshotsConfig",
    "StoreConfig",
    "TokenConfig",
    "ValueCodecName",
    "ViewConfig",
    "load_config",
]

KeyCodecName = Literal["string", "bytes", "json", "avro", "protobuf", "json_schema"]
ValueCodecName = Literal["json", "avro", "protobuf", "json_schema", "string", "bytes"]
# How a registry-framed key or value names its writer schema (statestore/schemas.py):
# "confluent" magic byte 0 + 4-byte id (or 1 + GUID, or a __value_schema_id header),
# "apicurio_headers" apicurio.value.contentId/globalId headers and a bare body,
# "apicurio_8byte" magic byte 0 + 8-byte id, "auto" any of them, told apart per record.
Framing = Literal["confluent", "auto", "apicurio_headers", "apicurio_8byte"]
# What the id in a magic-byte frame is: a content id (the Confluent protocol's schema id,
# what Apicurio 3 writes by default) or an Apicurio global id (one per artifact version).
IdKind = Literal["content", "global"]
# Codecs whose keys/values name their writer schema in the schema registry.
REGISTRY_CODECS = frozenset({"avro", "protobuf", "json_schema"})

# The native API's URL in SchemaRegistryConfig.client_config() (not a SchemaRegistryClient key).
NATIVE_URL_KEY = "statestore.native.url"

ENV_PREFIX = "STATESTORE_"
DEFAULT_CONFIG_PATH = Path("statestore.toml")

# librdkafka / registry properties that hold secrets: accepted from the environment only,
# so they never sit in a file that gets committed or printed.
_SECRET_SUFFIXES = ("password", "secret", "user.info", "token", "private.key", "key.pem")
# Properties that carry secrets inside a longer value (an OAuth client secret, a JAAS line).
_SECRET_NAMES = frozenset({"sasl.oauthbearer.config", "sasl.jaas.config"})

_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_Scalar = str | int | float | bool


def _is_secret(name: str) -> bool:
    name = name.lower()
    return name.endswith(_SECRET_SUFFIXES) or name in _SECRET_NAMES


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SchemaRegistryConfig(_Frozen):
    """Where writer schemas are fetched from (Confluent-compatible API)."""

    url: str | None = None
    # Apicurio's native API (.../apis/registry/v3, or v2 for Apicurio 2.x), where global ids
    # are resolved; by default derived from an Apicurio ccompat url (.../apis/ccompat/vN).
    apicurio_url: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    secrets: dict[str, SecretStr] = Field(default_factory=dict, repr=False)

    @field_validator("url", "apicurio_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        if v is not None and (urlsplit(v).username or urlsplit(v).password):
            raise ValueError(
                "the registry URL holds credentials; give them as basic.auth.user.info "
                f"through the environment ({ENV_PREFIX}SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO) "
                "and leave them out of the URL"
            )
        return v

    def native_url(self) -> str | None:
        """Apicurio's native API, where global ids resolve: ``apicurio_url``, else derived
        from a ccompat ``url`` (``<base>/apis/ccompat/vN`` -> ``<base>/apis/registry/v3``)."""
        if self.apicurio_url:
            return self.apicurio_url.rstrip("/")
        match = re.match(r"^(.*)/apis/ccompat/v\d+/?$", self.url or "")
        return f"{match.group(1)}/apis/registry/v3" if match else None

    def client_config(self) -> dict[str, str]:
        """The dict confluent-kafka's SchemaRegistryClient takes, secrets included, and
        ``NATIVE_URL_KEY`` (taken out by statestore.schemas) when there is a native API."""
        if not self.url:
            raise ConfigError(
                "[schema_registry] url is not set; Avro, Protobuf and JSON Schema views need it "
                '(e.g. url = "http://127.0.0.1:8081/apis/ccompat/v7")'
            )
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s}
        conf.update({k: v.get_secret_value() for k, v in self.secrets.items()})
        native = self.native_url()
        if native:
            conf[NATIVE_URL_KEY] = native
        return conf


class StoreConfig(_Frozen):
    """Where the RocksDB view lives and how it is tuned."""

    path: Path = Path("var/statestore")
    block_cache_mb: int = Field(default=64, ge=8)
    # Whole stored records by key, for point reads of hot entities (0 turns it off).
    row_cache_mb: int = Field(default=32, ge=0)
    write_buffer_mb: int = Field(default=64, ge=4)
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    # Processes that read a bulk load (a first bootstrap, a rebuild copy) in parallel;
    # 0: one per usable core. Fewer run when there is less work (bulk_min_records).
    bootstrap_workers: int = Field(default=0, ge=0, le=256)
    # One budget for the memory of a bulk load's processes together (the owner and its
    # workers): what is left after each process's base goes to the workers' buffers.
    memory_mb: int = Field(default=400, ge=32)
    # Records per worker below which a bulk load uses fewer processes (one: no process
    # is spawned, the load runs in the bootstrap's own thread).
    bulk_min_records: int = Field(default=100_000, ge=1)
    # A store RocksDB reports as damaged at open: set it aside and rebuild every view from
    # Kafka ("rebuild"), or refuse to start ("fail").
    on_corruption: Literal["rebuild", "fail"] = "rebuild"
    # How often a following store asks the brokers for its topics' end offsets, for lag
    # alone: lag stays exact while a view waits (a registry outage, a failed view).
    lag_refresh_s: float = Field(default=2.0, ge=0.1, le=60.0)
    # A snapshot (a directory, an s3:// prefix: its newest snapshot, or one archive) that
    # fills the store whenever it is empty: a replica's first start, a store set aside as
    # damaged. The views then catch up from the snapshot's positions (snapshot.py).
    seed: str | None = None

    @field_validator("seed")
    @classmethod
    def _seed_place(cls, v: str | None) -> str | None:
        return _snapshot_place(v, "seed is a directory, an archive path")


def _snapshot_place(value: str | None, what: str) -> str | None:
    """A place snapshots live: a path, or an ``s3://`` URL (no other scheme)."""
    if value is not None and "://" in value and not value.startswith("s3://"):
        raise ValueError(f"{what} or an s3://bucket/prefix URL")
    return value or None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``90``, ``"90s"``, ``"15m"``, ``"1.5h"``, ``"1d"``, ``"500ms"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 15m, 1h, 1d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class SnapshotsConfig(_Frozen):
    """Snapshots a server takes by itself (``statestore serve``)."""

    # A directory or an s3://bucket/prefix URL (credentials from the environment only).
    dest: str | None = None
    # How often: seconds, or "30s", "15m", "1h", "1d".
    every: float = Field(default=3600.0)
    # How many snapshots to keep in dest (older ones are removed after each new one).
    keep: int = Field(default=3, ge=1, le=1000)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds < 1:
            raise ValueError("every is at least 1 second")
        return seconds

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str | None) -> str | None:
        return _snapshot_place(v, "dest is a directory")


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class TokenConfig(_Frozen):
    """A bearer token read from an environment variable, scoped to some views (``*``: all)."""

    env: str
    views: tuple[str, ...] = ("*",)
    name: str | None = None
    # May rebuild views through the API (its views only); reading needs no more.
    admin: bool = False


class ApiConfig(_Frozen):
    """The REST server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    allow_anonymous: bool = False
    metrics_require_token: bool = False
    # The operator console at /console (docs/console.md); false: /console is a 404.
    console: bool = True
    tokens: tuple[TokenConfig, ...] = ()
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_lookup_keys: int = Field(default=1000, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    max_wait_ms: int = Field(default=30_000, ge=0)
    max_waits_per_client: int = Field(default=32, ge=1)
    # Bounds on each connection of `statestore serve`, before any token is checked.
    max_header_kb: int = Field(default=64, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # Host names answered besides loopback names and the bind address ("*": any). Without
    # tokens only those are answered; with tokens any, unless this is set (api/browser.py).
    allowed_hosts: tuple[str, ...] = ()
    # Serving processes of `statestore serve` (1: the ingesting process serves; N > 1: N
    # processes over RocksDB secondary copies of the store, docs/operations.md).
    workers: int = Field(default=1, ge=1, le=64)
    # How often each serving process of workers > 1 catches up with the ingesting one.
    catch_up_ms: int = Field(default=20, ge=1, le=10_000)
    # With workers > 1: the port (on [api] host) where the ingesting process serves the
    # app itself (its own metrics, rebuilds, snapshots, change streams); None: it serves none.
    primary_port: int | None = Field(default=None, ge=1, le=65535)

    def url(self) -> str:
        """Where a server with these settings answers (a wildcard bind: on loopback)."""
        host = self.host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_certfile is not None else "http"
        return f"{scheme}://{host}:{self.port}"


class ClusterConfig(_Frozen):
    """Replicated (every instance holds every view whole) or partitioned (docs/cluster.md)."""

    mode: Literal["replicated", "partitioned"] = "replicated"
    # The consumer group the instances of one partitioned cluster join.
    name: str | None = None
    # Where the other instances reach this one (http://host:port), as they must dial it.
    advertised_url: str | None = None
    # Kafka's static membership (group.instance.id): a restart within the session timeout
    # keeps the instance's partitions without a rebalance.
    instance_id: str | None = None
    # A read of a key another instance owns: forwarded to it (true) or answered with a 307.
    forward: bool = True
    # 1: each instance also keeps a standby copy of some partitions it does not own (each
    # partition's copy on the next instance after its owner), which answers while the
    # partition moves and makes it ready at once when the group hands it to that instance.
    standbys: int = Field(default=0, ge=0, le=1)
    # How long the group waits for a silent instance before its partitions move.
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    # How often an instance writes its membership record, and how long others wait for it.
    heartbeat_ms: int = Field(default=1000, ge=100, le=60_000)
    # An instance reads partitions it was given (and drops those it gave up) once the
    # group has been quiet this long: instances starting together rebalance several times,
    # and the first to join must not begin loading every partition. Like Kafka's
    # group.initial.rebalance.delay.ms, which brokers may set to 0.
    settle_ms: int = Field(default=2000, ge=0, le=60_000)
    forward_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("name", "instance_id")
    @classmethod
    def _group_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", v):
            raise ValueError("use 1-200 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("advertised_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise ValueError(f"{v!r} is not a base URL like http://host:8000")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _partitioned_named(self) -> ClusterConfig:
        if self.mode == "partitioned" and (self.name is None or self.advertised_url is None):
            raise ValueError("mode = 'partitioned' needs a name and an advertised_url")
        return self

    @property
    def partitioned(self) -> bool:
        return self.mode == "partitioned"


class ViewConfig(_Frozen):
    """One view: a compacted topic materialised under a name."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    topic: str
    key: KeyCodecName = "string"
    value: ValueCodecName = "json"
    indexes: tuple[str, ...] = ()
    reader_schema: Path | None = None
    # The message of reader_schema a Protobuf view reads values as (default: its first).
    reader_message: str | None = None
    # json_schema values: validate each against its writer schema at ingest (``validate``;
    # the name BaseModel.validate is taken).
    schema_validation: bool = Field(default=True, alias="validate")
    # Avro values and keys: how the record names its writer schema, and what kind of id a
    # magic-byte frame carries (headers name their kind themselves). See docs/schemas.md.
    framing: Framing = "confluent"
    id_kind: IdKind = "content"
    key_framing: Framing = "confluent"
    key_id_kind: IdKind = "content"
    on_error: Literal["quarantine", "fail"] = "quarantine"
    missing_topic: Literal["fail", "wait"] = "fail"
    on_stale: Literal["rebuild", "fail", "ignore"] = "rebuild"
    # The partitioner the topic's producers use (librdkafka's names; murmur2 is the Java
    # client's): every keyed record is checked to sit in the partition it gives.
    partitioner: PartitionerName | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _VIEW_NAME.match(v):
            raise ValueError(
                "view names are 1-64 characters of letters, digits, '_', '.', '-' "
                "and start with a letter or digit"
            )
        return v

    @field_validator("topic")
    @classmethod
    def _valid_topic(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", v):
            raise ValueError("not a valid Kafka topic name")
        return v

    @field_validator("indexes")
    @classmethod
    def _valid_indexes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for field in v:
            if not _FIELD_PATH.match(field):
                raise ValueError(f"index {field!r} is not a dotted field path like 'address.city'")
        if len(set(v)) != len(v):
            raise ValueError("an index is listed twice")
        return v

    @model_validator(mode="after")
    def _codecs_fit(self) -> ViewConfig:
        if self.indexes and self.value in ("string", "bytes"):
            raise ValueError(
                "indexes need structured values (json, avro, protobuf or json_schema), "
                f"not {self.value!r}"
            )
        if self.reader_schema is not None and self.value not in ("avro", "protobuf"):
            raise ValueError("reader_schema only applies to value = 'avro' or 'protobuf'")
        if self.reader_message is not None and (
            self.value != "protobuf" or self.reader_schema is None
        ):
            raise ValueError("reader_message needs value = 'protobuf' and a reader_schema")
        if not self.schema_validation and self.value != "json_schema":
            raise ValueError("validate = false only applies to value = 'json_schema'")
        if (self.framing, self.id_kind) != ("confluent", "content") and self.value != "avro":
            raise ValueError("framing and id_kind apply to value = 'avro'")
        if (self.key_framing, self.key_id_kind) != ("confluent", "content") and self.key != "avro":
            raise ValueError("key_framing and key_id_kind apply to key = 'avro'")
        if self.partitioner is not None and self.key not in ("string", "bytes", "json"):
            raise ValueError(
                "partitioner is checked on string, bytes and json keys (the bytes the "
                f"producer hashed), not on {self.key!r} keys (their schema id may travel in "
                "a header)"
            )
        return self

    @property
    def uses_registry(self) -> bool:
        """Whether keys or values name writer schemas in the schema registry."""
        return self.key in REGISTRY_CODECS or self.value in REGISTRY_CODECS

    def fingerprint(self) -> str:
        """A digest of what decides the stored bytes: a change means the view must be rebuilt."""
        data = {"topic": self.topic, "key": self.key, "value": self.value}
        # Left out at their defaults, so stores made before these settings keep their views.
        for name, default in _FRAMING_DEFAULTS:
            if getattr(self, name) != default:
                data[name] = getattr(self, name)
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


_FRAMING_DEFAULTS = (
    ("framing", "confluent"),
    ("id_kind", "content"),
    ("key_framing", "confluent"),
    ("key_id_kind", "content"),
)


class LogConfig(_Frozen):
    """How the processes of a command log (the CLI's --log-format overrides ``format``)."""

    # "text": time, level, logger, message; "json": one JSON object per line (statestore/logs.py).
    format: Literal["text", "json"] = "text"


def _default_kafka() -> dict[str, _Scalar]:
    return {"bootstrap.servers": "127.0.0.1:9092"}


class Config(_Frozen):
    """The whole configuration."""

    kafka: dict[str, _Scalar] = Field(default_factory=_default_kafka)
    kafka_secrets: dict[str, SecretStr] = Field(default_factory=dict, repr=False)
    schema_registry: SchemaRegistryConfig = SchemaRegistryConfig()
    store: StoreConfig = StoreConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    cluster: ClusterConfig = ClusterConfig()
    views: tuple[ViewConfig, ...]

    @field_validator("views")
    @classmethod
    def _unique_views(cls, v: tuple[ViewConfig, ...]) -> tuple[ViewConfig, ...]:
        if not v:
            raise ValueError("at least one [[views]] table is required")
        seen: set[str] = set()
        for view in v:
            if view.name in seen:
                raise ValueError(f"duplicate view name {view.name!r}")
            seen.add(view.name)
        return v

    @model_validator(mode="after")
    def _global_ids_resolvable(self) -> Config:
        registry = self.schema_registry
        for view in self.views:
            if "global" in (view.id_kind, view.key_id_kind) and not registry.native_url():
                raise ValueError(
                    f"view {view.name!r} reads Apicurio global ids, which resolve through "
                    "Apicurio's native API: set [schema_registry] apicurio_url (e.g. "
                    '"http://127.0.0.1:8081/apis/registry/v3"), or a url ending in '
                    "/apis/ccompat/vN it is derived from; a Confluent registry has no global ids"
                )
        return self

    @model_validator(mode="after")
    def _partitioned_fits(self) -> Config:
        if not self.cluster.partitioned:
            return self
        for view in self.views:
            if view.partitioner is None or view.key not in ("string", "bytes"):
                raise ValueError(
                    f"view {view.name!r}: a partitioned cluster routes each key to the instance "
                    "owning its partition, so every view declares its partitioner and has "
                    "string or bytes keys (the bytes the producer hashed are the key asked for)"
                )
        if self.api.workers > 1:
            raise ValueError("a partitioned cluster serves from one process: [api] workers = 1")
        return self

    @field_validator("kafka")
    @classmethod
    def _no_file_secrets(cls, v: dict[str, _Scalar]) -> dict[str, _Scalar]:
        for name in v:
            if _is_secret(name):
                raise ValueError(
                    f"{name!r} is a secret: set it through the environment "
                    f"({ENV_PREFIX}KAFKA__{name.upper().replace('.', '_')}), not in the file"
                )
        return v

    def view(self, name: str) -> ViewConfig:
        for view in self.views:
            if view.name == name:
                return view
        from .errors import UnknownViewError

        raise UnknownViewError(name, [v.name for v in self.views])

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka properties, secrets included (never log the result)."""
        conf: dict[str, Any] = dict(self.kafka)
        conf.update({k: s.get_secret_value() for k, s in self.kafka_secrets.items()})
        return conf


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file at *path*, apply ``STATESTORE_*`` overrides from *environ*.

    Environment overrides use ``__`` between levels: ``STATESTORE_STORE__PATH``,
    ``STATESTORE_API__PORT``, and for librdkafka properties
    ``STATESTORE_KAFKA__BOOTSTRAP_SERVERS`` (``_`` becomes ``.``). Secrets such as
    ``STATESTORE_KAFKA__SASL_PASSWORD`` or ``STATESTORE_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO``
    are only read from there.
    """
    env = os.environ if environ is None else environ
    file = (
        Path(path)
        if path is not None
        else Path(env.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_PATH))
    )
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} not found; pass -c/--config or copy statestore.example.toml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    _apply_env(raw, env)
    base = file.parent
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, raw)) from None
    return _resolve_paths(config, base)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    # A file without [kafka] gets the default broker address, environment or not.
    kafka = raw.setdefault("kafka", _default_kafka())
    registry = raw.setdefault("schema_registry", {})
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, rest = name[len(ENV_PREFIX) :].partition("__")
        section = section.lower()
        if section == "kafka":
            prop = rest.lower().replace("_", ".")
            if _is_secret(prop):
                raw.setdefault("kafka_secrets", {})[prop] = value
            else:
                kafka[prop] = value
        elif section == "schema_registry":
            prop = rest.lower()
            dotted = prop.replace("_", ".")
            if _is_secret(dotted):
                registry.setdefault("secrets", {})[dotted] = value
            else:
                registry[prop] = value
        elif section in ("store", "api", "log", "snapshots", "cluster"):
            raw.setdefault(section, {})[rest.lower()] = value


def _describe(exc: ValidationError, file: Path, raw: dict[str, Any]) -> str:
    lines = [f"invalid configuration in {file}:"]
    for err in exc.errors():
        loc = list(err["loc"])
        where = _location(loc, raw)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        elif err["type"] == "missing":
            msg = "required setting is missing"
            if loc == ["views"]:
                msg = "at least one [[views]] table is required"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def _location(loc: list[Any], raw: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int) and parts:
            name = None
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name")
            parts[-1] += f"[{item}]" + (f" (name = {name!r})" if name else "")
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) if parts else "(top level)"


def _resolve_paths(config: Config, base: Path) -> Config:
    """Relative ``reader_schema`` paths are relative to the config file."""
    views = []
    changed = False
    for view in config.views:
        if view.reader_schema is not None and not view.reader_schema.is_absolute():
            views.append(view.model_copy(update={"reader_schema": base / view.reader_schema}))
            changed = True
        else:
            views.append(view)
    return config.model_copy(update={"views": tuple(views)}) if changed else config
