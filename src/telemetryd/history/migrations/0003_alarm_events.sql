-- Alarm events received from the schools' alarm panels over SIA DC-09 (issue 10): one row
-- per event of every frame the receiver ACKed, heartbeats excepted.
--  * Range-partitioned by month on `time` like state_changes, hence UNIQUE (key, time).
--  * The key hashes the event's identity: account (receiver, prefix, account), DC-09 token,
--    sequence number, position in the frame, code, zone, partition, text, and the time the
--    receiver got the first copy. A panel that missed our ACK resends the same frame; the
--    receiver gives the copy its first copy's time, so a duplicate frame, a retried batch and
--    a replayed spool all land once. School, device, transport, peer and the panel's own
--    timestamp are not identity: the first write wins.
--  * `school` and `device` are NULL when the account is not in the inventory.
--  * Only unencrypted frames are accepted, so no DC-09 key or other secret ever reaches here.
--  * The rows join the history hash chain (telemetryd_chain_digest is extended below).

CREATE TABLE alarm_events (
    time         timestamptz NOT NULL,  -- when the receiver got the (first copy of the) frame
    receiver     text NOT NULL DEFAULT '',
    prefix       text NOT NULL,         -- the account prefix (DC-09 "L", line)
    account      text NOT NULL,
    token        text NOT NULL,         -- 'SIA-DCS' or 'ADM-CID'
    sequence     text NOT NULL,         -- four digits, as sent
    event_index  integer NOT NULL,      -- position of the event in its frame
    code         text NOT NULL,         -- SIA 'BA', or Contact ID qualifier + event 'E130'
    zone         text NOT NULL DEFAULT '',
    partition    text NOT NULL DEFAULT '',
    event_text   text NOT NULL DEFAULT '',
    school       text,
    device       text,
    event_class  text NOT NULL,         -- alarm, trouble, restoral, test, other
    panel_time   timestamptz,           -- the panel's own timestamp, when the frame had one
    transport    text NOT NULL,         -- 'tcp' or 'udp'
    peer         text NOT NULL DEFAULT '',
    key          uuid NOT NULL,
    chain_seq    bigint,
    UNIQUE (key, time)
) PARTITION BY RANGE (time);
CREATE INDEX alarm_events_school_time_idx ON alarm_events (school, time);
CREATE INDEX alarm_events_account_time_idx ON alarm_events (account, time);
CREATE INDEX alarm_events_chain_idx ON alarm_events (chain_seq);

-- Partitions for every month from `first` to `last` (inclusive) of every partitioned table.
CREATE OR REPLACE FUNCTION telemetryd_ensure_partitions(first timestamptz, last timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz := date_trunc('month', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    WHILE month <= last LOOP
        PERFORM telemetryd_ensure_partition('state_changes', month);
        PERFORM telemetryd_ensure_partition('link_samples', month);
        PERFORM telemetryd_ensure_partition('alarm_events', month);
        month := month + interval '1 month';
    END LOOP;
END;
$$;

SELECT telemetryd_ensure_partitions(now() - interval '1 month', now() + interval '2 months');

-- The digest of one link's rows, now with alarm_events. The section is appended only when
-- the link holds alarm events (string_agg over no rows is NULL, and so is the concatenation),
-- so every link sealed before this migration keeps its digest and still verifies. The first
-- four sections are 0002's, byte for byte.
CREATE OR REPLACE FUNCTION telemetryd_chain_digest(link bigint) RETURNS bytea
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
            FROM monitoring_gaps t WHERE t.chain_seq = link), '')
        || coalesce(E'\nalarm_events\n' || (
            SELECT string_agg(row(t.time, t.receiver, t.prefix, t.account, t.token, t.sequence, t.event_index,
                                  t.code, t.zone, t.partition, t.event_text, t.school, t.device, t.event_class,
                                  t.panel_time, t.transport, t.peer, t.key)::text, E'\n' ORDER BY t.key)
            FROM alarm_events t WHERE t.chain_seq = link), ''),
        'UTF8'))
$$;
