"""Hikvision ISAPI: the lockout-safe digest client (`client`), XML/JSON parsing (`xml`), digest maths (`digest`),
and the pure judgement of parsed replies into problems (`health`)."""

from telemetryd.probes.isapi.client import (
    AuthState,
    AxProStatus,
    IsapiClient,
    IsapiHealth,
    IsapiPolicy,
    IsapiProber,
    credential_pair,
    isapi_endpoints,
    open_prober,
    policy_from,
    probe,
    probe_axpro,
)
from telemetryd.probes.isapi.health import Problem, Summary, summarize

__all__ = [
    "AuthState",
    "AxProStatus",
    "IsapiClient",
    "IsapiHealth",
    "IsapiPolicy",
    "IsapiProber",
    "Problem",
    "Summary",
    "credential_pair",
    "isapi_endpoints",
    "open_prober",
    "policy_from",
    "probe",
    "probe_axpro",
    "summarize",
]
