"""Hikvision ISAPI: the lockout-safe digest client (`client`), XML/JSON parsing (`xml`), digest maths (`digest`)."""

from telemetryd.probes.isapi.client import (
    AuthState,
    AxProStatus,
    IsapiClient,
    IsapiHealth,
    IsapiPolicy,
    IsapiProber,
    Problem,
    credential_pair,
    policy_from,
    probe,
    probe_axpro,
)

__all__ = [
    "AuthState",
    "AxProStatus",
    "IsapiClient",
    "IsapiHealth",
    "IsapiPolicy",
    "IsapiProber",
    "Problem",
    "credential_pair",
    "policy_from",
    "probe",
    "probe_axpro",
]
