"""HTTPS ISAPI in the configuration: `isapis` probes and `probes.isapi.ca_file`, errors with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from telemetryd.config import ConfigError, load_config
from telemetryd.model import ProbeSpec
from telemetryd.sim.certs import certificate_authority
from tests.helpers import school, write_config

CAMERA = {"id": "c1", "kind": "camera", "host": "10.0.0.7", "credentials": "hik"}


def test_isapis_is_isapi_over_tls_on_443_by_default(tmp_path: Path) -> None:
    """`isapis` is ISAPI over TLS on 443 labelled isapis:443; `isapis:8443` keeps its port; plain isapi is untouched."""
    path = write_config(tmp_path, [school("s1", [{**CAMERA, "probes": ["isapis", "isapis:8443", "isapi"]}])])
    [device] = load_config(path).inventory.schools_by_id["s1"].devices
    assert device.probes == (
        ProbeSpec("isapi", 443, tls=True),
        ProbeSpec("isapi", 8443, tls=True),
        ProbeSpec("isapi", 80),
    )
    assert [spec.name for spec in device.probes] == ["isapis:443", "isapis:8443", "isapi:80"]


def test_isapis_needs_credentials_and_a_camera_or_nvr(tmp_path: Path) -> None:
    """The `isapis` probe has the rules of `isapi`: credentials required, cameras and NVRs only."""
    router = {"id": "r1", "kind": "router", "host": "10.0.0.1", "credentials": "x", "probes": ["isapis"]}
    bare = {"id": "c1", "kind": "camera", "host": "10.0.0.7", "probes": ["isapis"]}
    path = write_config(tmp_path, [school("s1", [router, bare])])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    messages = [p.message for p in caught.value.problems]
    assert any("applies to camera or nvr" in m for m in messages), messages
    assert any("needs `credentials:`" in m for m in messages), messages


def test_ca_file_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    """A relative `probes.isapi.ca_file` is resolved against the settings file's directory."""
    ca = certificate_authority(tmp_path)
    path = write_config(tmp_path, [school("s1", [CAMERA])], probes={"isapi": {"ca_file": ca.cert.name}})
    assert load_config(path).settings.probes.isapi.ca_file == str(tmp_path / ca.cert.name)


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_missing_or_bad_ca_file_names_file_line_and_field(tmp_path: Path, content: str | None) -> None:
    """A ca_file that does not exist or holds no PEM certificate is one problem at probes.isapi.ca_file's line."""
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    path = tmp_path / "telemetryd.yaml"
    path.write_text(yaml.safe_dump({"inventory": "inventory", "probes": {"isapi": {"ca_file": "ca.pem"}}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 4, "probes.isapi.ca_file"), str(problem)
    assert str(tmp_path / "ca.pem") in problem.message
