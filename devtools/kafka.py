"""A real Apache Kafka 4.x broker (KRaft, single combined node) for tests, demos and benches.

The jars come from Maven (``devtools/maven/pom.xml``) and are cached under
``.cache/kafka/<version>/libs``; the broker runs as ``java -cp 'libs/*' kafka.Kafka`` in its
own process group. Kafka's own CLI tools run from the same jars (``run_tool``) so tests can
check results with Kafka's tooling rather than with the client under test.

CLI: ``python -m devtools.kafka fetch|start|stop|status|tool`` (see ``docs/kafka-dev.md``).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple, Protocol, Self

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

KAFKA_VERSION = os.environ.get("XCONV_KAFKA_VERSION", "4.3.1")
"""Kafka version the launcher fetches and runs (the pom's default is overridden with it)."""

REPO_ROOT = Path(__file__).resolve().parents[1]
MAVEN_DIR = Path(__file__).resolve().parent / "maven"
POM = MAVEN_DIR / "pom.xml"
BROKER_LOG4J2 = MAVEN_DIR / "log4j2-broker.xml"
TOOLS_LOG4J2 = MAVEN_DIR / "log4j2-tools.xml"
DEFAULT_WORKDIR = REPO_ROOT / ".run" / "kafka"

DEFAULT_SCRAM_USER = "xconv"
DEFAULT_SCRAM_PASSWORD = "xconv-dev-secret"  # a throwaway credential for a loopback test broker

STATE_FILE = "broker.json"
SERVER_PROPERTIES = "server.properties"
BROKER_LOG = "logs/broker.log"

_log = logging.getLogger(__name__)


class KafkaDevError(RuntimeError):
    """The local Kafka tooling failed (fetch, format, start, or a CLI tool)."""


class BrokerStartError(KafkaDevError):
    """The broker did not come up; the message carries the tail of its log."""


class KafkaToolError(KafkaDevError):
    """A Kafka CLI tool exited non-zero or printed something unparseable."""

    def __init__(self, message: str, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{message}\n--- exit code {result.returncode}\n--- stdout:\n{result.stdout[-4000:]}"
            f"\n--- stderr:\n{result.stderr[-4000:]}"
        )
        self.result = result


# --------------------------------------------------------------------------------------
# Jars
# --------------------------------------------------------------------------------------


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Per-version cache directory (``XCONV_KAFKA_CACHE`` overrides the root)."""
    root = Path(os.environ.get("XCONV_KAFKA_CACHE", str(REPO_ROOT / ".cache" / "kafka")))
    return root / version


def _marker(version: str) -> Path:
    return cache_dir(version) / "libs.complete"


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir(version) / "libs"


def fetch_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Copy the broker + tools runtime classpath into the cache once; return the libs dir.

    A marker file is written only after Maven finished, so an interrupted copy is redone.
    A file lock keeps parallel test sessions from copying into the same directory at once.
    """
    libs = libs_dir(version)
    marker = _marker(version)
    if marker.is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDevError("`mvn` is not on PATH: install Maven to fetch the Kafka jars")
    cache_dir(version).mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir(version) / ".fetch.lock"):
        if marker.is_file():
            return libs
        shutil.rmtree(libs, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
            "dependency:copy-dependencies",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = sorted(p.name for p in libs.glob("*.jar")) if libs.is_dir() else []
        if proc.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
            raise KafkaDevError(
                f"maven could not fetch Kafka {version} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )
        marker.write_text("\n".join(jars) + "\n", encoding="utf-8")
    return libs


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaDevError("`java` (17+) is not on PATH")
    return java


# --------------------------------------------------------------------------------------
# Kafka's own CLI tools
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tool:
    main_class: str
    takes_bootstrap: bool = True


TOOLS: Mapping[str, _Tool] = {
    "kafka-topics": _Tool("org.apache.kafka.tools.TopicCommand"),
    "kafka-consumer-groups": _Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    "kafka-console-producer": _Tool("org.apache.kafka.tools.ConsoleProducer"),
    "kafka-console-consumer": _Tool("org.apache.kafka.tools.consumer.ConsoleConsumer"),
    "kafka-broker-api-versions": _Tool("org.apache.kafka.tools.BrokerApiVersionsCommand"),
    "kafka-get-offsets": _Tool("org.apache.kafka.tools.GetOffsetShell"),
    "kafka-delete-records": _Tool("org.apache.kafka.tools.DeleteRecordsCommand"),
    "kafka-configs": _Tool("kafka.admin.ConfigCommand"),
    "kafka-groups": _Tool("org.apache.kafka.tools.GroupsCommand"),
    "kafka-log-dirs": _Tool("org.apache.kafka.tools.LogDirsCommand"),
    "kafka-metadata-quorum": _Tool("org.apache.kafka.tools.MetadataQuorumCommand"),
    "kafka-producer-perf-test": _Tool("org.apache.kafka.tools.ProducerPerformance", False),
    "kafka-consumer-perf-test": _Tool("org.apache.kafka.tools.ConsumerPerformance"),
    "kafka-storage": _Tool("kafka.tools.StorageTool", False),
}
"""Script name (as in Kafka's bin/) -> main class. Other names may be given as a class."""

_TOOL_JVM_OPTS = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


def tool_command(
    tool: str, *args: str, bootstrap: str | None = None, version: str = KAFKA_VERSION
) -> list[str]:
    """The java command line for one of Kafka's CLI tools (fetching the jars if needed).

    ``tool`` is a script name from ``TOOLS`` or a fully qualified main class. When
    ``bootstrap`` is given and the tool takes ``--bootstrap-server`` but ``args`` lack it,
    it is added.
    """
    spec = TOOLS.get(tool, _Tool(tool, takes_bootstrap=False))
    argv = list(args)
    if bootstrap and spec.takes_bootstrap and "--bootstrap-server" not in argv:
        argv = ["--bootstrap-server", bootstrap, *argv]
    return [
        _java(),
        *_TOOL_JVM_OPTS,
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J2}",
        "-cp",
        str(fetch_jars(version) / "*"),
        spec.main_class,
        *argv,
    ]


def run_tool(
    tool: str,
    *args: str,
    bootstrap: str | None = None,
    version: str = KAFKA_VERSION,
    input: str | None = None,
    timeout: float = 120.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's CLI tools and capture its output (see ``tool_command``).

    ``input`` is fed to stdin (e.g. lines for ``kafka-console-producer``); without it stdin
    is empty. stdout carries only the tool's own output: logging goes to stderr.
    """
    result = subprocess.run(
        tool_command(tool, *args, bootstrap=bootstrap, version=version),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise KafkaToolError(f"{tool} failed", result)
    return result


class GroupOffset(NamedTuple):
    """One partition row of ``kafka-consumer-groups --describe``; None where Kafka shows '-'."""

    committed: int | None
    log_end: int | None

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.log_end is None:
            return None
        return self.log_end - self.committed


def parse_group_describe(output: str) -> dict[tuple[str, int], GroupOffset]:
    """Parse the table printed by ``kafka-consumer-groups --describe --group G``.

    Columns are found by header name, so extra columns (CONSUMER-ID, HOST, ...) and
    the "has no active members" preamble do not matter.
    """
    rows: dict[tuple[str, int], GroupOffset] = {}
    header: list[str] | None = None
    for line in output.splitlines():
        cells = line.split()
        if not cells:
            continue
        if cells[0] == "GROUP" and "TOPIC" in cells and "CURRENT-OFFSET" in cells:
            header = cells
            continue
        if header is None or len(cells) < len(header) - 3:
            continue
        try:
            topic = cells[header.index("TOPIC")]
            partition = int(cells[header.index("PARTITION")])
            committed = _offset_cell(cells[header.index("CURRENT-OFFSET")])
            log_end = _offset_cell(cells[header.index("LOG-END-OFFSET")])
        except (ValueError, IndexError):
            continue
        rows[(topic, partition)] = GroupOffset(committed, log_end)
    return rows


def _offset_cell(cell: str) -> int | None:
    return None if cell == "-" else int(cell)


def committed_offsets(
    group: str, *, bootstrap: str, version: str = KAFKA_VERSION
) -> dict[tuple[str, int], GroupOffset]:
    """Committed offset and log end per (topic, partition) of ``group``, per Kafka's own tool.

    Raises ``KafkaToolError`` when the group does not exist or the tool fails.
    """
    result = run_tool(
        "kafka-consumer-groups",
        "--describe",
        "--group",
        group,
        "--offsets",
        bootstrap=bootstrap,
        version=version,
    )
    # The tool reports a missing group on stdout ("Error: ... GroupIdNotFoundException")
    # and still exits 0, so look for its error line as well as the exit code.
    errors = [line for line in result.stdout.splitlines() if line.startswith("Error")]
    if result.returncode != 0 or errors:
        raise KafkaToolError(f"cannot describe consumer group {group!r}", result)
    return parse_group_describe(result.stdout)


# --------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------


class BrokerHandle(Protocol):
    """What tests and benches need from a broker, whether launched here or external."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def sasl_bootstrap(self) -> str | None: ...

    @property
    def scram_user(self) -> str | None: ...

    @property
    def scram_password(self) -> str | None: ...

    def run_tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]: ...

    def committed_offsets(self, group: str) -> dict[tuple[str, int], GroupOffset]: ...


@dataclass(frozen=True, slots=True)
class ExternalBroker:
    """A broker someone else runs (e.g. ``XCONV_TEST_BOOTSTRAP``); tools still run locally."""

    bootstrap: str
    sasl_bootstrap: str | None = None
    scram_user: str | None = None
    scram_password: str | None = None
    version: str = KAFKA_VERSION

    def run_tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_tool(tool, *args, bootstrap=self.bootstrap, version=self.version)

    def committed_offsets(self, group: str) -> dict[tuple[str, int], GroupOffset]:
        return committed_offsets(group, bootstrap=self.bootstrap, version=self.version)


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Never one starting with ``-`` (1 in 64 would): ``kafka-storage format --cluster-id``
    would read it as an option and fail, as Kafka's own ``Uuid.randomUuid`` avoids too.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def free_port() -> int:
    """A currently free loopback port (racy by nature; the broker fails loudly if it is lost)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Watchdog: a tiny Python process in the broker's process group that reads the write end
# of a pipe held only by the launching Python process. When that process dies for any
# reason (even SIGKILL) the pipe hits EOF and the watchdog SIGTERMs, then SIGKILLs, the
# group, itself included. It ignores SIGTERM/SIGINT so stop()'s group signal spares it.
_WATCHDOG = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid = int(sys.argv[1]); grace = float(sys.argv[2])
sys.stdin.buffer.read()
def alive():
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if not alive():
    sys.exit(0)
try:
    os.killpg(pid, signal.SIGTERM)
except ProcessLookupError:
    sys.exit(0)
deadline = time.monotonic() + grace
while time.monotonic() < deadline and alive():
    time.sleep(0.2)
os.killpg(pid, signal.SIGKILL)
"""

_START_BANNER = "===== devtools.kafka: starting"
_LIVE: set[KafkaBroker] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop(grace=10.0)


atexit.register(_stop_all_at_exit)


class KafkaBroker:
    """One single-node KRaft Kafka (broker+controller) on 127.0.0.1, owned by this process.

    The first ``start()`` picks free ports (unless given), formats ``workdir/data`` and
    saves ports and cluster id in ``workdir/broker.json``; later starts (also from another
    process with the same workdir) reuse storage and ports, so a restart keeps all data.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        sasl_port: int | None = None,
        enable_scram: bool = False,
        *,
        controller_port: int | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        scram_user: str = DEFAULT_SCRAM_USER,
        scram_password: str = DEFAULT_SCRAM_PASSWORD,
        extra_config: Mapping[str, str] | None = None,
        watchdog: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.version = version
        self.heap = heap
        self.enable_scram = enable_scram
        self.extra_config = dict(extra_config or {})
        self.watchdog = watchdog
        self._scram_user = scram_user
        self._scram_password = scram_password
        saved = self._load_state()
        self.port = port or int(saved.get("port") or 0) or free_port()
        self.controller_port = (
            controller_port or int(saved.get("controller_port") or 0) or free_port()
        )
        self.sasl_port: int | None = None
        if enable_scram:
            self.sasl_port = sasl_port or int(saved.get("sasl_port") or 0) or free_port()
        self.cluster_id = str(saved.get("cluster_id") or new_cluster_id())
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else None

    @property
    def scram_user(self) -> str | None:
        return self._scram_user if self.enable_scram else None

    @property
    def scram_password(self) -> str | None:
        return self._scram_password if self.enable_scram else None

    @property
    def log_path(self) -> Path:
        return self.workdir / BROKER_LOG

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def client_config(self, *, sasl: bool = False) -> dict[str, str]:
        """librdkafka settings to reach this broker (PLAINTEXT, or SASL_PLAINTEXT+SCRAM)."""
        if not sasl:
            return {"bootstrap.servers": self.bootstrap}
        if self.sasl_bootstrap is None:
            raise KafkaDevError("this broker was created without enable_scram=True")
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": self._scram_user,
            "sasl.password": self._scram_password,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90.0) -> Self:
        """Format storage on first use, launch the JVM, wait until metadata requests answer."""
        if self.is_running():
            return self
        libs = fetch_jars(self.version)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        props = self.workdir / SERVER_PROPERTIES
        props.write_text(self._server_properties(), encoding="utf-8")
        if (self.data_dir / "meta.properties").is_file():
            self._check_scram_formatted()
        else:
            self._format(libs, props)
            self._save_state(formatted_scram=self.enable_scram)
        try:
            self._launch(libs, props)
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        self._save_state(pid=self.pid)
        return self

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the broker's process group (controlled shutdown), SIGKILL after ``grace``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the broker at once (no controlled shutdown): a crash for chaos tests."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self._cleanup()

    def restart(self, timeout: float = 90.0) -> Self:
        self.stop()
        return self.start(timeout=timeout)

    def detach(self) -> None:
        """Leave the broker running after this Python process exits (CLI ``start``)."""
        if self._watchdog is not None:
            raise KafkaDevError("a broker started with watchdog=True cannot be detached")
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- tools -------------------------------------------------------------------------

    def run_tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a Kafka CLI tool against this broker (``--bootstrap-server`` filled in)."""
        return run_tool(tool, *args, bootstrap=self.bootstrap, version=self.version)

    def committed_offsets(self, group: str) -> dict[tuple[str, int], GroupOffset]:
        return committed_offsets(group, bootstrap=self.bootstrap, version=self.version)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self, limit: int = 12) -> str:
        """ERROR/FATAL lines (and their causes) of the latest start: a crash's tail is mostly
        shutdown noise, the reason sits earlier."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        latest = text.rsplit(_START_BANNER, 1)[-1]
        picked = [
            line
            for line in latest.splitlines()
            if " ERROR " in line or " FATAL " in line or line.startswith("Caused by:")
        ]
        return "\n".join(picked[:limit])

    def _failure(self, headline: str) -> BrokerStartError:
        errors = self.log_errors()
        parts = [headline]
        if errors:
            parts.append(f"--- errors logged by the broker:\n{errors}")
        parts.append(f"--- tail of {self.log_path}:\n{self.log_tail(30)}")
        return BrokerStartError("\n".join(parts))

    # -- internals ---------------------------------------------------------------------

    def _server_properties(self) -> str:
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.enable_scram:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-256"
            props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocol_map)
        props.update(self.extra_config)
        lines = ["# written by devtools/kafka.py on every start; edits are overwritten"]
        lines += [f"{k}={v}" for k, v in props.items()]
        return "\n".join(lines) + "\n"

    def _format(self, libs: Path, props: Path) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cmd = [
            _java(),
            *_TOOL_JVM_OPTS,
            f"-Dlog4j2.configurationFile={TOOLS_LOG4J2}",
            "-cp",
            str(libs / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(props),
        ]
        if self.enable_scram:
            cmd += [
                "--add-scram",
                f"SCRAM-SHA-256=[name={self._scram_user},password={self._scram_password}]",
            ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise BrokerStartError(
                f"kafka-storage format failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )

    def _check_scram_formatted(self) -> None:
        """SCRAM users are written at format time only, so a later switch cannot work."""
        if self.enable_scram and not self._load_state().get("formatted_scram"):
            raise KafkaDevError(
                f"{self.data_dir} was formatted without SCRAM users; "
                "use a fresh workdir for enable_scram=True"
            )

    def _launch(self, libs: Path, props: Path) -> None:
        log_fh = self.log_path.open("ab")
        log_fh.write(f"\n{_START_BANNER} Kafka {self.version} =====\n".encode())
        log_fh.flush()
        cmd = [
            _java(),
            f"-Xms{min_heap(self.heap)}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={BROKER_LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            str(libs / "*"),
            "kafka.Kafka",
            str(props),
        ]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            # Own process group (not session): Ctrl-C in a terminal does not reach it, and
            # the watchdog below may still join it (setpgid cannot cross sessions).
            process_group=0,
        )
        self._log_fh = log_fh
        with _LIVE_LOCK:
            _LIVE.add(self)
        if self.watchdog:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-c", _WATCHDOG, str(self._proc.pid), "15"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=self._proc.pid,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        targets: list[tuple[str, dict[str, str]]] = [("PLAINTEXT", self.client_config())]
        if self.enable_scram:
            targets.append(("SASL_PLAINTEXT/SCRAM", self.client_config(sasl=True)))
        quiet = logging.getLogger("devtools.kafka.librdkafka")
        for name, conf in targets:
            host, _, port = conf["bootstrap.servers"].rpartition(":")
            self._wait_port(host, int(port), deadline)
            admin_conf: dict[str, Any] = {**conf, "logger": quiet}
            admin_conf["socket.connection.setup.timeout.ms"] = 5000
            admin = AdminClient(admin_conf)
            last_error = ""
            while True:
                self._check_alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._failure(
                        f"Kafka {self.version} did not answer metadata on {name} "
                        f"{conf['bootstrap.servers']} within {timeout:.0f}s ({last_error})"
                    )
                try:
                    metadata = admin.list_topics(timeout=min(5.0, max(remaining, 0.5)))
                except Exception as exc:  # KafkaException: not ready yet
                    last_error = str(exc)
                    time.sleep(0.2)
                    continue
                if metadata.brokers:
                    break
                time.sleep(0.2)

    def _wait_port(self, host: str, port: int, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise self._failure(f"Kafka did not open {host}:{port}") from None
                time.sleep(0.2)

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            raise self._failure(f"Kafka exited with code {code} during start-up")

    def _cleanup(self) -> None:
        if self._watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                self._watchdog.kill()
            self._watchdog.wait()
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            self._watchdog = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.workdir.is_dir():
            self._save_state(pid=None)

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.workdir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, **updates: Any) -> None:
        state = self._load_state()
        state.update(
            {
                "version": self.version,
                "port": self.port,
                "controller_port": self.controller_port,
                "sasl_port": self.sasl_port,
                "cluster_id": self.cluster_id,
                "enable_scram": self.enable_scram,
                "scram_user": self.scram_user,
                "bootstrap": self.bootstrap,
                "sasl_bootstrap": self.sasl_bootstrap,
            }
        )
        state.update(updates)
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.workdir / STATE_FILE)


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the max (at least 64m) so idle brokers stay small."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    mb = float(heap[:-1]) * units[heap[-1].lower()] if heap[-1].lower() in units else 512
    return f"{max(64, int(mb // 4))}m"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_our_broker(pid: int, workdir: Path) -> bool:
    """Guard against a recycled pid: the process must be kafka.Kafka on this workdir."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in argv and str(workdir / SERVER_PROPERTIES).encode() in argv


# --------------------------------------------------------------------------------------
# Client helpers (tests, benches, demo): plain blocking functions over confluent-kafka.
# From async code wrap them: ``await asyncio.to_thread(read_messages, conf, topic, n)``.
# --------------------------------------------------------------------------------------

ClientConf = str | Mapping[str, Any]
"""A bootstrap address ("127.0.0.1:9092") or a full librdkafka config mapping."""

HeadersArg = Mapping[str, bytes | str] | Sequence[tuple[str, bytes | str]] | None


def _conf(conf: ClientConf) -> dict[str, Any]:
    return {"bootstrap.servers": conf} if isinstance(conf, str) else dict(conf)


def create_topic(
    conf: ClientConf,
    name: str,
    partitions: int = 6,
    *,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create a topic and wait until every partition has a leader (ready to produce)."""

    admin = AdminClient(_conf(conf))
    new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
    futures = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=name, timeout=max(0.5, deadline - time.monotonic()))
        topic = meta.topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return name
        if time.monotonic() > deadline:
            raise KafkaDevError(f"topic {name} has no leader for every partition after {timeout}s")
        time.sleep(0.1)


def delete_topics(conf: ClientConf, names: Sequence[str], *, timeout: float = 30.0) -> None:
    """Delete topics and wait for the broker to accept the deletion."""
    if not names:
        return

    admin = AdminClient(_conf(conf))
    futures = admin.delete_topics(list(names), operation_timeout=timeout, request_timeout=timeout)
    for future in futures.values():
        future.result(timeout=timeout)


def produce_messages(
    conf: ClientConf,
    topic: str,
    values: Sequence[bytes | None],
    *,
    key: bytes | str | None = None,
    partition: int | None = None,
    headers: HeadersArg = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce ``values`` in order (acks=all) and return each one's (partition, offset).

    Raises ``KafkaDevError`` if any message is not acknowledged within ``timeout``.
    """
    producer = Producer({**_conf(conf), "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    delivered: list[tuple[int, int] | None] = [None] * len(values)
    errors: list[str] = []

    def on_delivery(index: int) -> Any:
        def callback(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                delivered[index] = (int(msg.partition() or 0), int(msg.offset() or 0))

        return callback

    hdrs = list(headers.items()) if isinstance(headers, Mapping) else headers
    for index, value in enumerate(values):
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": on_delivery(index)}
        if partition is not None:
            kwargs["partition"] = partition
        if hdrs:
            kwargs["headers"] = list(hdrs)
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
    remaining = producer.flush(timeout)
    if remaining or errors or any(d is None for d in delivered):
        raise KafkaDevError(f"produce to {topic}: {remaining} unacknowledged, errors: {errors[:5]}")
    return [d for d in delivered if d is not None]


def read_messages(
    conf: ClientConf, topic: str, count: int, *, timeout: float = 30.0
) -> list[Message]:
    """Read the first ``count`` messages of ``topic`` from all partitions (no consumer group).

    Messages come in arrival order (ordered within a partition). Raises ``TimeoutError``
    naming how many arrived when fewer than ``count`` do within ``timeout``.
    """
    consumer = Consumer(
        {
            **_conf(conf),
            "group.id": f"devtools-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    try:
        deadline = time.monotonic() + timeout
        partitions: list[int] = []
        while not partitions:
            meta = consumer.list_topics(topic=topic, timeout=max(0.5, deadline - time.monotonic()))
            info = meta.topics.get(topic)
            if info is not None and info.error is None:
                partitions = sorted(info.partitions)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not found within {timeout}s")
            else:
                time.sleep(0.1)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Message] = []
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"read {len(out)} of {count} messages from {topic} within {timeout}s"
                )
            for msg in consumer.consume(num_messages=count - len(out), timeout=min(remaining, 1)):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaDevError(f"reading {topic}: {err}")
        return out
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _read_state(workdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((workdir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KafkaDevError(f"no broker state in {workdir} ({exc})") from None
    return data if isinstance(data, dict) else {}


def _running_pid(workdir: Path) -> int | None:
    try:
        state = _read_state(workdir)
    except KafkaDevError:
        return None
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_alive(pid) and _is_our_broker(pid, workdir):
        return pid
    return None


def _cmd_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    libs = fetch_jars(args.version, quiet=not args.verbose)
    jars = len(list(libs.glob("*.jar")))
    print(f"libs={libs} jars={jars} seconds={time.monotonic() - started:.1f}")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    pid = _running_pid(workdir)
    if pid is not None:
        state = _read_state(workdir)
        print(f"bootstrap={state['bootstrap']}")
        if state.get("sasl_bootstrap"):
            print(f"sasl_bootstrap={state['sasl_bootstrap']}")
        print(f"pid={pid} (already running)")
        return 0
    broker = KafkaBroker(
        workdir,
        port=args.port,
        sasl_port=args.sasl_port,
        enable_scram=args.scram,
        version=args.version,
        heap=args.heap,
        watchdog=False,
    )
    started = time.monotonic()
    broker.start(timeout=args.timeout)
    broker.detach()
    print(f"bootstrap={broker.bootstrap}")
    if broker.sasl_bootstrap:
        print(f"sasl_bootstrap={broker.sasl_bootstrap}")
        print(f"scram_user={broker.scram_user}")
    print(f"pid={broker.pid} log={broker.log_path} seconds={time.monotonic() - started:.1f}")
    return 0


def stop_workdir(workdir: Path, grace: float = 30.0) -> bool:
    """Stop a broker started by ``python -m devtools.kafka start``; False if none ran."""
    workdir = workdir.resolve()
    pid = _running_pid(workdir)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.1)
    state = _read_state(workdir)
    state["pid"] = None
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    return True


def _cmd_stop(args: argparse.Namespace) -> int:
    stopped = stop_workdir(Path(args.workdir), grace=args.grace)
    print("stopped" if stopped else "not running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    pid = _running_pid(workdir)
    try:
        state = _read_state(workdir)
    except KafkaDevError:
        state = {}
    report = {
        "running": pid is not None,
        "pid": pid,
        "workdir": str(workdir),
        "bootstrap": state.get("bootstrap"),
        "sasl_bootstrap": state.get("sasl_bootstrap"),
        "version": state.get("version"),
        "jars_cached": _marker(args.version).is_file(),
    }
    print(json.dumps(report, indent=2))
    return 0 if pid is not None else 1


def _cmd_tool(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    bootstrap = args.bootstrap
    if bootstrap is None:
        bootstrap = _read_state(workdir).get("bootstrap")
    tool_args: list[str] = list(args.args)
    if tool_args and tool_args[0] == "--":
        tool_args = tool_args[1:]
    cmd = tool_command(args.tool, *tool_args, bootstrap=bootstrap, version=args.version)
    return subprocess.call(cmd)  # inherits stdin/stdout: console clients stream


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kafka", description="Local Apache Kafka (KRaft) for development"
    )
    parser.add_argument("--version", default=KAFKA_VERSION, help="Kafka version (jars)")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download the Kafka jars into the cache")
    fetch.add_argument("--verbose", action="store_true")
    fetch.set_defaults(func=_cmd_fetch)

    def workdir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="broker directory")

    start = sub.add_parser("start", help="start a broker in the background and return")
    workdir_arg(start)
    start.add_argument("--port", type=int, default=None)
    start.add_argument("--sasl-port", type=int, default=None)
    start.add_argument("--scram", action="store_true", help="add a SASL_PLAINTEXT SCRAM listener")
    start.add_argument("--heap", default="512m")
    start.add_argument("--timeout", type=float, default=120.0)
    start.set_defaults(func=_cmd_start)

    stop = sub.add_parser("stop", help="stop the broker of --workdir")
    workdir_arg(stop)
    stop.add_argument("--grace", type=float, default=30.0)
    stop.set_defaults(func=_cmd_stop)

    status = sub.add_parser("status", help="print broker state as JSON (exit 1 if stopped)")
    workdir_arg(status)
    status.set_defaults(func=_cmd_status)

    tool = sub.add_parser(
        "tool",
        help="run a Kafka CLI tool against the broker",
        description=f"Known tools: {', '.join(sorted(TOOLS))}",
    )
    workdir_arg(tool)
    tool.add_argument("--bootstrap", default=None, help="override the workdir's broker")
    tool.add_argument("tool")
    tool.add_argument("args", nargs=argparse.REMAINDER)
    tool.set_defaults(func=_cmd_tool)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KafkaDevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
