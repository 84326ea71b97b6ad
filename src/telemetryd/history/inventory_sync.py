"""The schools and devices tables follow the inventory, so reports can name what the history ids mean.

Upserts every school and device of this instance's shard; marks those of its shard no
longer configured as removed (`removed_at`), never deletes them (their history stays
readable). Schools of other shards are left to their own instance.
"""

from __future__ import annotations

import asyncpg

from telemetryd.config.loader import shard_of
from telemetryd.config.settings import Shard
from telemetryd.model import Inventory

_UPSERT_SCHOOLS = """
INSERT INTO schools (id, name, district, contract_mbps)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::double precision[])
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, district = EXCLUDED.district, contract_mbps = EXCLUDED.contract_mbps,
    updated_at = now(), removed_at = NULL
WHERE (schools.name, schools.district, schools.contract_mbps, schools.removed_at)
    IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.district, EXCLUDED.contract_mbps, NULL)
"""

_UPSERT_DEVICES = """
INSERT INTO devices (id, school, kind, host, name)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (id) DO UPDATE SET
    school = EXCLUDED.school, kind = EXCLUDED.kind, host = EXCLUDED.host, name = EXCLUDED.name,
    updated_at = now(), removed_at = NULL
WHERE (devices.school, devices.kind, devices.host, devices.name, devices.removed_at)
    IS DISTINCT FROM (EXCLUDED.school, EXCLUDED.kind, EXCLUDED.host, EXCLUDED.name, NULL)
"""


async def sync_inventory(conn: asyncpg.Connection, inventory: Inventory, shard: Shard) -> tuple[int, int]:
    """Bring schools and devices in line with `inventory`; returns (schools, devices) marked removed."""
    schools = inventory.schools
    devices = list(inventory.devices_by_id.values())
    async with conn.transaction():
        await conn.execute(
            _UPSERT_SCHOOLS,
            [s.id for s in schools],
            [s.name for s in schools],
            [s.district for s in schools],
            [s.contract.total_mbps for s in schools],
        )
        await conn.execute(
            _UPSERT_DEVICES,
            [d.id for d in devices],
            [d.school_id for d in devices],
            [d.kind.value for d in devices],
            [d.host for d in devices],
            [d.name for d in devices],
        )

        def mine(school_id: str) -> bool:
            return shard_of(school_id, shard.count) == shard.index

        present_schools = {s.id for s in schools}
        present_devices = set(inventory.devices_by_id)
        listed = await conn.fetch("SELECT id FROM schools WHERE removed_at IS NULL")
        gone_schools = [r["id"] for r in listed if r["id"] not in present_schools and mine(r["id"])]
        listed = await conn.fetch("SELECT id, school FROM devices WHERE removed_at IS NULL")
        gone_devices = [r["id"] for r in listed if r["id"] not in present_devices and mine(r["school"])]
        await conn.execute("UPDATE schools SET removed_at = now() WHERE id = ANY($1::text[])", gone_schools)
        await conn.execute("UPDATE devices SET removed_at = now() WHERE id = ANY($1::text[])", gone_devices)
    return len(gone_schools), len(gone_devices)
