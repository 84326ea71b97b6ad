-- What the monthly SLA report needs beyond 0001 (issue 6):
--  * speed tests record the contract and the floor they were judged against, and whether
--    they were a confirmation re-test, so a later contract change does not rewrite history;
--  * link samples record the allocation and the seconds spent at or above 95 % of it;
--  * schools and devices remember when they left the inventory;
--  * a hash chain over every history row (see telemetryd_chain_seal below);
--  * sla_monthly: the report's per-school figures, saved for the Grafana SLA dashboard.

ALTER TABLE speedtests
    ADD COLUMN contract_mbps double precision,
    ADD COLUMN floor_ratio   double precision,
    ADD COLUMN confirmation  boolean NOT NULL DEFAULT false;

ALTER TABLE link_samples
    ADD COLUMN allocation_mbps   double precision,
    ADD COLUMN saturated_seconds double precision NOT NULL DEFAULT 0;

ALTER TABLE schools
    ADD COLUMN first_seen timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN removed_at timestamptz;
ALTER TABLE devices
    ADD COLUMN first_seen timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN removed_at timestamptz;

-- Hash chain. Every committed batch of new rows is one link: its rows carry the link's
-- `chain_seq`; the link stores the digest of those rows and head = sha256(previous head ||
-- digest). The SLA report prints the head; re-verifying later shows whether any row of
-- an earlier link was edited, deleted or added. Writers of all shards serialise on an
-- advisory transaction lock, so the chain has one order.
CREATE TABLE history_chain (
    seq        bigint PRIMARY KEY,
    sealed_at  timestamptz NOT NULL DEFAULT now(),
    rows       integer NOT NULL,
    digest     bytea NOT NULL,
    head       bytea NOT NULL
);

ALTER TABLE state_changes   ADD COLUMN chain_seq bigint;
ALTER TABLE link_samples    ADD COLUMN chain_seq bigint;
ALTER TABLE speedtests      ADD COLUMN chain_seq bigint;
ALTER TABLE monitoring_gaps ADD COLUMN chain_seq bigint;
CREATE INDEX state_changes_chain_idx   ON state_changes (chain_seq);
CREATE INDEX link_samples_chain_idx    ON link_samples (chain_seq);
CREATE INDEX speedtests_chain_idx      ON speedtests (chain_seq);
CREATE INDEX monitoring_gaps_chain_idx ON monitoring_gaps (chain_seq);

-- The digest of one link's rows. Columns are listed explicitly (a later migration adding a
-- column must not change old digests) and the session settings that shape text output
-- are pinned, so the writer and a verifier years later compute the same bytes.
CREATE FUNCTION telemetryd_chain_digest(link bigint) RETURNS bytea
LANGUAGE sql STABLE
SET timezone = 'UTC' SET datestyle = 'ISO, YMD' SET extra_float_digits = 1
AS $$
    SELECT sha256(convert_to(
        'state_changes' || E'\n' || coalesce((
            SELECT string_agg(row(t.time, t.school, t.device, t.kind, t.probe, t.old, t.new, t.reason,
                                  t.detail, t.key)::text, E'\n' ORDER BY t.key)
            FROM state_changes t WHERE t.chain_seq = link), '')
        || E'\nspeedtests\n' || coalesce((
            SELECT string_agg(row(t.time, t.school, t.direction, t.mbps, t.bytes, t.duration, t.streams, t.ok,
                                  t.reason, t.detail, t.contract_mbps, t.floor_ratio, t.confirmation,
                                  t.key)::text, E'\n' ORDER BY t.key)
            FROM speedtests t WHERE t.chain_seq = link), '')
        || E'\nlink_samples\n' || coalesce((
            SELECT string_agg(row(t.time, t.school, t.segment, t.direction, t.avg_mbps, t.max_mbps, t.bytes,
                                  t.samples, t.allocation_mbps, t.saturated_seconds, t.key)::text,
                              E'\n' ORDER BY t.key)
            FROM link_samples t WHERE t.chain_seq = link), '')
        || E'\nmonitoring_gaps\n' || coalesce((
            SELECT string_agg(row(t.started_at, t.ended_at, t.shard, t.reason, t.key)::text,
                              E'\n' ORDER BY t.key)
            FROM monitoring_gaps t WHERE t.chain_seq = link), ''),
        'UTF8'))
$$;

-- Seal link `link` holding `n` new rows: called by the writer inside the batch's
-- transaction, after the rows were inserted and under the chain lock.
CREATE FUNCTION telemetryd_chain_seal(link bigint, n integer) RETURNS bytea
LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
    d        bytea := telemetryd_chain_digest(link);
    h        bytea;
BEGIN
    SELECT head INTO previous FROM history_chain WHERE seq < link ORDER BY seq DESC LIMIT 1;
    h := sha256(coalesce(previous, ''::bytea) || d);
    INSERT INTO history_chain (seq, rows, digest, head) VALUES (link, n, d, h);
    RETURN h;
END;
$$;

-- Every link from `first` to `last` whose stored digest or head no longer matches its rows.
CREATE FUNCTION telemetryd_chain_verify(first bigint, last bigint)
RETURNS TABLE (seq bigint, problem text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    link     record;
    previous bytea;
    actual   bytea;
BEGIN
    SELECT c.head INTO previous FROM history_chain c WHERE c.seq < first ORDER BY c.seq DESC LIMIT 1;
    FOR link IN SELECT * FROM history_chain c WHERE c.seq BETWEEN first AND last ORDER BY c.seq LOOP
        actual := telemetryd_chain_digest(link.seq);
        IF actual <> link.digest THEN
            seq := link.seq; problem := 'rows changed since they were sealed'; RETURN NEXT;
        END IF;
        IF link.head <> sha256(coalesce(previous, ''::bytea) || link.digest) THEN
            seq := link.seq; problem := 'head does not follow from the previous link'; RETURN NEXT;
        END IF;
        previous := link.head;
    END LOOP;
END;
$$;

-- Per-school monthly figures, written by `telemetryd report sla --save`; the Grafana SLA
-- dashboard reads this table. Ratios are 0-1; NULL where nothing was measured.
CREATE TABLE sla_monthly (
    month                       date NOT NULL,      -- first day of the month (UTC)
    school                      text NOT NULL,
    district                    text NOT NULL DEFAULT '',
    contract_mbps               double precision,
    link_availability           double precision,
    link_monitored_seconds      double precision NOT NULL DEFAULT 0,
    link_down_seconds           double precision NOT NULL DEFAULT 0,
    outages                     integer NOT NULL DEFAULT 0,
    download_compliance         double precision,
    upload_compliance           double precision,
    download_min_mbps           double precision,
    download_median_mbps        double precision,
    upload_min_mbps             double precision,
    upload_median_mbps          double precision,
    speedtests                  integer NOT NULL DEFAULT 0,
    camera_availability         double precision,
    nvr_availability            double precision,
    alarm_panel_availability    double precision,
    saturated_seconds           double precision NOT NULL DEFAULT 0,
    maintenance_seconds         double precision NOT NULL DEFAULT 0,
    gap_seconds                 double precision NOT NULL DEFAULT 0,
    chain_head                  text NOT NULL DEFAULT '',
    generated_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, school)
);

-- Device-level outages (down until the next device-level change), for dashboards and ad-hoc
-- queries. The report computes its own, with monitoring gaps and maintenance cut out.
CREATE VIEW device_outages AS
SELECT d.school, d.device, d.kind, d.time AS started_at, d.next_time AS ended_at, d.reason, d.detail
FROM (
    SELECT s.*, lead(s.time) OVER (PARTITION BY s.device ORDER BY s.time, s.key) AS next_time
    FROM state_changes s
    WHERE s.probe IS NULL
) d
WHERE d.new = 'down';
