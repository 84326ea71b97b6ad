"""Settings of the status pages: `timezone` (an IANA zone) and `grafana_url` (no credentials in it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from telemetryd.config.settings import Settings


def test_defaults_are_shymkent_and_no_grafana() -> None:
    """Without settings the pages show Asia/Almaty time and link to no Grafana."""
    settings = Settings()
    assert settings.timezone == "Asia/Almaty" and settings.grafana_url is None


@pytest.mark.parametrize("zone", ["Asia/Almaty", "UTC", "Europe/Berlin"])
def test_an_iana_zone_is_accepted(zone: str) -> None:
    """Any zone the system's tz database holds is accepted as written."""
    assert Settings(timezone=zone).timezone == zone


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Asia", "/etc/passwd", "../../etc/passwd", "+05:00"])
def test_a_zone_that_is_no_iana_zone_is_refused(zone: str) -> None:
    """A misspelt zone, a path or a bare offset fails the config check, naming the field."""
    with pytest.raises(ValidationError, match="timezone") as caught:
        Settings(timezone=zone)
    assert "is not an IANA time zone" in str(caught.value)


def test_grafana_url_is_normalised() -> None:
    """A trailing slash is dropped so the page's links have one slash before /d/."""
    assert Settings(grafana_url="https://grafana.noc.example/sub/").grafana_url == "https://grafana.noc.example/sub"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://admin:hunter2@grafana.example", "credentials must not be in the URL"),
        ("https://admin@grafana.example", "credentials must not be in the URL"),
        ("https://grafana.example/?token=abc", "secrets must not be in the URL's query"),
        ("https://grafana.example/?orgId=1", "without a query or fragment"),
        ("grafana.example", "expected http"),
        ("ftp://grafana.example", "expected http"),
    ],
)
def test_grafana_url_with_credentials_or_not_a_base_url_is_refused(url: str, message: str) -> None:
    """Every NOC browser shows the link: a user, password or token in it is refused, as is a non-base URL."""
    with pytest.raises(ValidationError, match="grafana_url") as caught:
        Settings(grafana_url=url)
    assert message in str(caught.value)
