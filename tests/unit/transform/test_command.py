"""``xconv transform`` through ``consumer.cli.main`` and as a subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.cli import main
from consumer.samples import SampleGenerator, debezium_changes

ROOT = Path(__file__).resolve().parents[3]


def lines_of(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def run_main(
    argv: list[str], stdin: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin))
    fake_stdout = io.TextIOWrapper(out, write_through=True)
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    monkeypatch.setattr(sys, "stdout", fake_stdout)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(argv)
    fake_stdout.flush()
    return code, out.getvalue().decode(), err.getvalue()


def sample_lines(
    count: int, preset: str = "canonical", invalid: float = 0.3
) -> tuple[bytes, list[Any]]:
    gen = SampleGenerator(seed=8, presets=[preset], invalid_share=invalid)
    samples = list(gen.events(count))
    return b"\n".join(s.value for s in samples) + b"\n", samples


def test_stdin_to_stdout_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    data, samples = sample_lines(30)
    code, out, _ = run_main(["transform"], data, monkeypatch)
    assert code == 0
    results = lines_of(out)
    assert len(results) == len(samples)
    for sample, result in zip(samples, results, strict=True):
        assert result["ok"] is sample.valid
        if sample.valid:
            assert result["account_id"] == "18ce552mlaq"
            assert result["pixel_id"] == "oka17"
            assert result["conversion"]["event_id"] == "ol288"
        else:
            assert result["reason"] == sample.expected_reason
            assert set(result) == {"ok", "reason", "field", "message"}


def test_config_file_and_preset_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "xconv.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "x:1"\n'
        '[transform]\npreset = "canonical"\nvalue_format = "string"\n'
        '[routing]\ndefault = { account_id = "acc9", pixel_id = "pix9", event_id = "ev9" }\n'
    )
    data, _ = sample_lines(10, "segment", 0.0)
    events = tmp_path / "in.jsonl"
    events.write_bytes(data)
    code, out, _ = run_main(
        ["transform", "--config", str(config), "--preset", "segment", str(events)],
        b"",
        monkeypatch,
    )
    assert code == 0
    results = lines_of(out)
    assert len(results) == 10
    assert all(r["ok"] and r["account_id"] == "acc9" for r in results)
    assert all(isinstance(r["conversion"]["value"], str) for r in results)


def test_yaml_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "xconv.yaml"
    config.write_text(
        "transform:\n  preset: shopify\nrouting:\n  default:\n"
        "    account_id: acc7\n    pixel_id: pix7\n    event_id: ev7\n"
    )
    data, _ = sample_lines(5, "shopify", 0.0)
    code, out, _ = run_main(["transform", "--config", str(config), "-"], data, monkeypatch)
    assert code == 0
    assert [r["conversion"]["event_id"] for r in lines_of(out)] == ["ev7"] * 5


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        ("[transform]\npreset = 'nope'\n", ".toml", "transform.preset"),
        ("[routing]\ndefault = { account_id = 'a' }\n", ".toml", "routing.default.pixel_id"),
        ("transform: [unclosed\n", ".yaml", "invalid YAML"),
        ("[transform\n", ".toml", "invalid TOML"),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, suffix: str, needle: str
) -> None:
    config = tmp_path / f"bad{suffix}"
    config.write_text(content)
    code, out, err = run_main(["transform", "--config", str(config)], b"", monkeypatch)
    assert code == 2
    assert out == ""
    assert needle in err


def test_missing_input_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, _, err = run_main(["transform", str(tmp_path / "nope.jsonl")], b"", monkeypatch)
    assert code == 2
    assert "cannot read" in err


def test_subprocess_round_trip() -> None:
    data, samples = sample_lines(20)
    proc = subprocess.run(
        [sys.executable, "-m", "consumer", "transform"],
        input=data,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ok"] for r in results] == [s.valid for s in samples]


def test_subprocess_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "consumer", "transform", "--preset", "bogus"],
        input=b"",
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert b"invalid choice" in proc.stderr


def test_dropped_fields_and_skips_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = SampleGenerator(seed=3, presets=["segment"])
    degraded = gen.event(defect="unknown_currency")
    segment = b"\n".join([degraded.value, gen.event().value]) + b"\n"
    code, out, _ = run_main(["transform", "--preset", "segment"], segment, monkeypatch)
    assert code == 0
    first, second = lines_of(out)
    assert first["ok"] is True
    assert {"field": "currency", "reason": "unknown_currency"} in first["dropped"]
    assert "price_currency" not in first["conversion"]
    assert all(d["field"] in ("item.group_id",) for d in second.get("dropped", []))

    changes = SampleGenerator(seed=3, presets=["debezium"]).event().value
    update, delete, _tombstone = debezium_changes(1, 1_767_225_600_000)
    assert update is not None
    assert delete is not None
    stdin = b"\n".join([changes, update, delete, b""]) + b"\n"
    code, out, _ = run_main(["transform", "--preset", "debezium"], stdin, monkeypatch)
    assert code == 0
    results = lines_of(out)
    assert results[0]["ok"] is True
    assert "conversion" in results[0]
    assert results[1:] == [
        {"ok": True, "skipped": True, "reason": "update"},
        {"ok": True, "skipped": True, "reason": "delete"},
        {"ok": True, "skipped": True, "reason": "tombstone"},
    ]
