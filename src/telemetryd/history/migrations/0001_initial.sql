-- History schema (issue 6). Event tables carry an idempotency key (a hash of the event's
-- fields) so a spool replay or a retried batch never duplicates a row.
-- The two high-volume tables are range-partitioned by month on `time`; a partitioned
-- table's unique constraint must include the partition key, hence UNIQUE (key, time)
-- (the key already hashes the time, so this is as strict as UNIQUE (key)).
-- No foreign keys to schools/devices: history must be written even when the inventory
-- rows lag behind a reload.

CREATE TABLE schools (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    district    text NOT NULL DEFAULT '',
    contract_mbps double precision,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id          text PRIMARY KEY,
    school      text NOT NULL,
    kind        text NOT NULL,
    host        text NOT NULL DEFAULT '',
    name        text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_school_idx ON devices (school);

CREATE TABLE state_changes (
    time    timestamptz NOT NULL,
    school  text NOT NULL,
    device  text NOT NULL,
    kind    text NOT NULL,
    probe   text,
    old     text NOT NULL,
    new     text NOT NULL,
    reason  text NOT NULL DEFAULT '',
    detail  text NOT NULL DEFAULT '',
    key     uuid NOT NULL,
    UNIQUE (key, time)
) PARTITION BY RANGE (time);
CREATE INDEX state_changes_school_time_idx ON state_changes (school, time);
CREATE INDEX state_changes_device_time_idx ON state_changes (device, time);

CREATE TABLE link_samples (
    time        timestamptz NOT NULL,  -- start of the 5-minute bucket
    school      text NOT NULL,
    segment     text NOT NULL,         -- 'wan' or a Segment value
    direction   text NOT NULL,         -- 'download' (in) / 'upload' (out), seen from the school
    avg_mbps    double precision NOT NULL,
    max_mbps    double precision NOT NULL,
    bytes       bigint NOT NULL,
    samples     integer NOT NULL,
    key         uuid NOT NULL,
    UNIQUE (key, time)
) PARTITION BY RANGE (time);
CREATE INDEX link_samples_school_time_idx ON link_samples (school, time);

-- A few rows per school per day: not worth partitioning.
CREATE TABLE speedtests (
    time        timestamptz NOT NULL,
    school      text NOT NULL,
    direction   text NOT NULL,
    mbps        double precision NOT NULL,
    bytes       bigint NOT NULL,
    duration    double precision NOT NULL,
    streams     integer NOT NULL,
    ok          boolean NOT NULL,
    reason      text NOT NULL DEFAULT '',
    detail      text NOT NULL DEFAULT '',
    key         uuid NOT NULL UNIQUE
);
CREATE INDEX speedtests_school_time_idx ON speedtests (school, time);

-- When this instance (or one shard of it) was not monitoring, so dashboards can tell
-- "no data" from "all fine".
CREATE TABLE monitoring_gaps (
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    shard       text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    key         uuid NOT NULL UNIQUE
);
CREATE INDEX monitoring_gaps_time_idx ON monitoring_gaps (started_at);

-- Create the month partition of `parent` holding `at`, if missing. Safe to race: two
-- writers creating the same month end with one partition and no error.
CREATE FUNCTION telemetryd_ensure_partition(parent text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    part        text := format('%s_%s', parent, to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           part, parent, month_start, month_end);
        EXCEPTION WHEN duplicate_table OR unique_violation THEN  -- a racing writer won
            NULL;
        END;
    END IF;
    RETURN part;
END;
$$;

-- Partitions for every month from `first` to `last` (inclusive) of both partitioned tables.
CREATE FUNCTION telemetryd_ensure_partitions(first timestamptz, last timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz := date_trunc('month', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    WHILE month <= last LOOP
        PERFORM telemetryd_ensure_partition('state_changes', month);
        PERFORM telemetryd_ensure_partition('link_samples', month);
        month := month + interval '1 month';
    END LOOP;
END;
$$;

SELECT telemetryd_ensure_partitions(now() - interval '1 month', now() + interval '2 months');
