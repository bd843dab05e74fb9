-- steep_repl 0.2.0 -> 0.3.0: the extension's privileges.
--
-- Three NOLOGIN roles with the least each needs (steep_repl_reader,
-- steep_repl_daemon, steep_repl_admin; see privileges.sql), created when
-- missing. Every write of the daemon goes through a SECURITY DEFINER
-- function (record_peer_status, record_peer_seen, append_daemon_events).
-- Audit rows are stamped by the extension: ids only from the sequence,
-- occurred_at never in the future, the steep_repl.actor setting honoured only
-- for a steep_repl_daemon login. steep_repl.applying becomes a setting only a
-- superuser may change (defined by the library); prune_in_progress is gone:
-- only rows older than the minimum retention (1 day) may be deleted, by
-- prune_audit(). TRUNCATE is refused on nodes (and on coordinator_state even
-- inside the apply functions); every audit trigger is ENABLE ALWAYS. A
-- projection of no cluster yet takes its first snapshot at any index, 0
-- included (apply_state_snapshot).
--
-- Privileges a DBA granted on audit_log, its sequence or write_audit() by
-- the 0.2.0 documentation are revoked: nobody but the owner writes audit
-- rows directly any more.
--
-- The objects below are written exactly as the fresh install of 0.3.0
-- writes them, so that an upgraded schema equals a fresh one
-- (tests/tests/extension_upgrade.rs).

\echo Use "ALTER EXTENSION steep_repl UPDATE" to load this file. \quit

------------------------------------------------------------------------------
-- Who is acting; whether an apply function is writing
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION steep_repl.current_actor() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- The setting names the actor only for a login that is a member of
    -- steep_repl_daemon (the daemon names itself steep-repl@<node_id>);
    -- any other session is recorded as its own login, whatever it set.
    SELECT CASE
        WHEN NULLIF(current_setting('steep_repl.actor', true), '') IS NULL THEN own
        WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'steep_repl_daemon') THEN own
        WHEN pg_catalog.pg_has_role(session_user, 'steep_repl_daemon', 'MEMBER')
            THEN current_setting('steep_repl.actor', true)
        ELSE own
    END
      FROM (SELECT session_user || '@' || COALESCE(host(inet_client_addr()), 'local')) AS login (own)
$$;
COMMENT ON FUNCTION steep_repl.current_actor() IS
    'The actor recorded in audit_log: session_user@client address (session_user@local for a local socket); the steep_repl.actor setting instead only when the session''s login is a member of steep_repl_daemon (the daemon sets steep-repl@<node_id>).';

CREATE FUNCTION steep_repl.applying() RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'applying_wrapper';
COMMENT ON FUNCTION steep_repl.applying() IS
    'Internal: true while an apply function writes the projection (the setting steep_repl.applying, which only a superuser may set: the extension''s owner inside its SECURITY DEFINER functions).';

------------------------------------------------------------------------------
-- The audit triggers: the flag through steep_repl.applying(), ALWAYS
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION steep_repl.audit_nodes_change() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM steep_repl.write_audit('node.registered', 'node', NEW.node_id, NULL, to_jsonb(NEW));
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM steep_repl.write_audit('node.removed', 'node', OLD.node_id, to_jsonb(OLD), NULL);
        RETURN NULL;
    END IF;

    -- A heartbeat (last_seen alone) is not an event worth a row.
    old_row := to_jsonb(OLD) - 'last_seen';
    new_row := to_jsonb(NEW) - 'last_seen';
    IF old_row = new_row THEN
        RETURN NULL;
    END IF;

    IF (old_row - 'status') = (new_row - 'status') THEN
        PERFORM steep_repl.write_audit('node.status_changed', 'node', NEW.node_id,
            jsonb_build_object('status', OLD.status), jsonb_build_object('status', NEW.status));
        RETURN NULL;
    END IF;

    -- steep_repl.apply_coordinator() audits each coordinator entry once
    -- (coordinator.elected, .released, .handover_requested); the flag flips
    -- it makes while steep_repl.applying is on are not audited twice.
    IF (old_row - 'is_coordinator') = (new_row - 'is_coordinator')
       AND steep_repl.applying() THEN
        RETURN NULL;
    END IF;

    PERFORM steep_repl.write_audit('node.updated', 'node', NEW.node_id, to_jsonb(OLD), to_jsonb(NEW));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION steep_repl.audit_nodes_change() IS
    'Trigger: audits INSERT (node.registered), DELETE (node.removed) and UPDATE (node.status_changed for status alone, node.updated otherwise) on nodes; heartbeat-only updates, and the coordinator flag flips of the apply functions (audited by steep_repl.apply_coordinator() itself), are not audited.';

CREATE OR REPLACE FUNCTION steep_repl.audit_state_change() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The apply functions (projection.sql) write one audit row per applied
    -- log entry themselves, with the requester carried in the entry.
    IF steep_repl.applying() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM steep_repl.write_audit('state.updated', 'state', NEW.key, NULL, to_jsonb(NEW));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM steep_repl.write_audit('state.updated', 'state', OLD.key, to_jsonb(OLD), NULL);
    ELSIF (to_jsonb(OLD) - 'updated_at') IS DISTINCT FROM (to_jsonb(NEW) - 'updated_at') THEN
        PERFORM steep_repl.write_audit('state.updated', 'state', NEW.key, to_jsonb(OLD), to_jsonb(NEW));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION steep_repl.audit_state_change() IS
    'Trigger: audits every INSERT, UPDATE and DELETE on coordinator_state as state.updated, except the writes of the apply functions, which write one row per applied log entry themselves.';

ALTER TABLE steep_repl.nodes ENABLE ALWAYS TRIGGER nodes_audit;
ALTER TABLE steep_repl.coordinator_state ENABLE ALWAYS TRIGGER coordinator_state_audit;
ALTER TABLE steep_repl.coordinator_state ENABLE ALWAYS TRIGGER coordinator_state_touch;

CREATE OR REPLACE FUNCTION steep_repl.refuse_projection_write() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller_is_superuser boolean :=
        (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
BEGIN
    -- TRUNCATE would bypass the row-level audit: refused even here.
    IF caller_is_superuser AND TG_OP <> 'TRUNCATE' AND steep_repl.applying() THEN
        RETURN NEW;
    END IF;
    IF caller_is_superuser AND TG_OP = 'INSERT' AND current_query() ~* '^\s*copy\s' THEN
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'nodes' THEN
        RAISE EXCEPTION 'steep_repl.nodes.is_coordinator is set only by the cluster''s coordinator record: % of is_coordinator is refused', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The cluster decides the coordinator (a Raft-replicated record of holder and epoch); the steep-repl daemon projects it here with steep_repl.apply_coordinator().',
                  HINT = 'Read the coordinator with steep_repl.projection() (coordinator_id, coordinator_epoch) or SELECT node_id FROM steep_repl.nodes WHERE is_coordinator. Other columns of nodes are not affected.';
    END IF;
    IF TG_TABLE_NAME = 'coordinator_state' THEN
        RAISE EXCEPTION 'steep_repl.coordinator_state is replicated by the cluster: % is refused; use "steep-repl state set KEY VALUE" (or "steep-repl state delete KEY")', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The table is this node''s projection of the cluster''s replicated state; only the steep-repl daemon writes it, as it applies the cluster''s log.',
                  HINT = 'Over IPC: the methods state.set and state.delete. Reading (steep_repl.get_state(), SELECT) works as before.';
    END IF;
    RAISE EXCEPTION 'steep_repl.% is written only by the steep-repl daemon as it applies the cluster''s log: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Read it with steep_repl.projection(); the IPC method cluster.status shows the cluster itself.';
END
$$;
COMMENT ON FUNCTION steep_repl.refuse_projection_write() IS
    'Trigger: refuses INSERT, UPDATE, DELETE and TRUNCATE on coordinator_state and cluster_projection, and changes of nodes.is_coordinator, naming what to use instead, except inside the apply functions (steep_repl.applying() true, current user a superuser; never for TRUNCATE) and a superuser''s COPY FROM (a pg_dump restore).';

------------------------------------------------------------------------------
-- TRUNCATE refused on nodes
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.refuse_truncate() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'steep_repl.%: TRUNCATE is refused: it would change the table without an audit row', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The cluster''s membership decides the registry (steep-repl cluster remove); steep_repl.remove_node() removes one row, audited as node.removed.';
END
$$;
COMMENT ON FUNCTION steep_repl.refuse_truncate() IS
    'Trigger: refuses TRUNCATE on nodes, which would bypass the row-level audit trigger.';

CREATE TRIGGER nodes_no_truncate
    BEFORE TRUNCATE ON steep_repl.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl.refuse_truncate();
ALTER TABLE steep_repl.nodes ENABLE ALWAYS TRIGGER nodes_no_truncate;
COMMENT ON TRIGGER nodes_no_truncate ON steep_repl.nodes IS 'Refuses TRUNCATE: every change to the registry is audited row by row.';

------------------------------------------------------------------------------
-- audit_log: rows stamped by the extension, the minimum retention
------------------------------------------------------------------------------
ALTER TABLE steep_repl.audit_log ALTER COLUMN id DROP DEFAULT;
COMMENT ON COLUMN steep_repl.audit_log.id IS 'Monotonic entry id, always from the sequence (set by the trigger audit_log_stamp).';
COMMENT ON COLUMN steep_repl.audit_log.occurred_at IS 'When the audited event happened; never later than the transaction that wrote it.';
COMMENT ON COLUMN steep_repl.audit_log.actor IS 'Who did it, as role@host: session_user@client address (or local), or the steep_repl.actor setting of a steep_repl_daemon login.';
COMMENT ON FUNCTION steep_repl.next_audit_id() IS
    'The id of a new audit_log row (set by the trigger audit_log_stamp): the next sequence value, moved past the highest id when that value is already taken (after a pg_dump restore).';

CREATE FUNCTION steep_repl.audit_min_retention() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT interval '1 day'
$$;
COMMENT ON FUNCTION steep_repl.audit_min_retention() IS
    'The minimum retention of audit_log: prune_audit() refuses a shorter interval, and no row younger than this is ever deleted.';

-- Only the owner inserts into audit_log (through write_audit(), the apply
-- functions and append_daemon_events()); this trigger is the last word on
-- the values the caller could otherwise choose: the id always comes from the
-- sequence, and occurred_at is never in the future nor infinite. The one
-- exception is a superuser's COPY FROM with ids (a pg_dump restore), which
-- keeps the rows as dumped.
CREATE FUNCTION steep_repl.stamp_audit_row() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.id IS NOT NULL AND current_query() ~* '^\s*copy\s'
       AND (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RETURN NEW;
    END IF;
    NEW.id := steep_repl.next_audit_id();
    IF NEW.occurred_at IS NULL OR NOT isfinite(NEW.occurred_at) OR NEW.occurred_at > now() THEN
        NEW.occurred_at := now();
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION steep_repl.stamp_audit_row() IS
    'Trigger: gives every new audit_log row its id from the sequence (a supplied id is ignored) and an occurred_at no later than now() (a future or infinite time becomes now()); a superuser''s COPY FROM with ids (a pg_dump restore) is kept as is.';

CREATE TRIGGER audit_log_stamp
    BEFORE INSERT ON steep_repl.audit_log
    FOR EACH ROW EXECUTE FUNCTION steep_repl.stamp_audit_row();
ALTER TABLE steep_repl.audit_log ENABLE ALWAYS TRIGGER audit_log_stamp;
COMMENT ON TRIGGER audit_log_stamp ON steep_repl.audit_log IS
    'Takes every id from the sequence and keeps occurred_at at or before now().';

-- No setting lets a row go: a DELETE passes only for a row older than the
-- minimum retention, by a superuser (the owner inside prune_audit()).
CREATE OR REPLACE FUNCTION steep_repl.refuse_audit_rewrite() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.occurred_at < now() - steep_repl.audit_min_retention()
       AND (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'steep_repl.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Entries older than ' || steep_repl.audit_min_retention()::text
                     || ' are removed only by steep_repl.prune_audit(interval).';
END
$$;
COMMENT ON FUNCTION steep_repl.refuse_audit_rewrite() IS
    'Trigger: refuses UPDATE, TRUNCATE and DELETE on audit_log; only rows older than audit_min_retention() may be deleted, and only by a superuser (steep_repl.prune_audit()).';

COMMENT ON TRIGGER audit_log_append_only ON steep_repl.audit_log IS 'Refuses UPDATE, and DELETE of entries younger than the minimum retention or by anyone but a superuser.';

CREATE OR REPLACE FUNCTION steep_repl.prune_audit(older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.prune_audit';
    minimum constant interval := steep_repl.audit_min_retention();
    cutoff timestamptz;
    deleted bigint;
BEGIN
    IF prune_audit.older_than IS NULL OR prune_audit.older_than < minimum THEN
        RAISE EXCEPTION '%: older_than must be at least % (the minimum retention; got %)',
                fn, minimum, COALESCE(prune_audit.older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := now() - prune_audit.older_than;
    -- The append-only trigger lets these rows go: they are older than the
    -- minimum retention and the current user is the owner.
    DELETE FROM steep_repl.audit_log a WHERE a.occurred_at < cutoff;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM steep_repl.write_audit('audit.pruned', NULL, NULL, NULL,
        jsonb_build_object('deleted', deleted, 'older_than', prune_audit.older_than::text, 'cutoff', cutoff));
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.prune_audit(interval) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.prune_audit(interval) IS
    'Deletes audit entries older than the interval (at least audit_min_retention(), 1 day), records audit.pruned with the count, and returns the count.';

------------------------------------------------------------------------------
-- apply_state_snapshot: the first snapshot is installed at any index
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION steep_repl.apply_state_snapshot(
    p_cluster_id text,
    p_log_index  bigint,
    p_log_term   bigint,
    p_state      jsonb
) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.apply_state_snapshot';
    stored steep_repl.cluster_projection;
    bad_key text;
    keys_before bigint;
BEGIN
    PERFORM steep_repl.check_log_position(fn, p_cluster_id, p_log_index, p_log_term);
    IF p_state IS NULL OR jsonb_typeof(p_state) <> 'object' THEN
        RAISE EXCEPTION '%: p_state must be a JSON object of key -> value (got %)',
                fn, COALESCE(jsonb_typeof(p_state), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad_key FROM jsonb_object_keys(p_state) AS k
     WHERE k !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' ORDER BY k LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: p_state key % is not a dotted name such as cluster.version', fn, quote_literal(bad_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('steep_repl.applying', 'on', true);
    stored := steep_repl.lock_projection();
    -- A snapshot of the same cluster must be newer; the first one, or one of
    -- another cluster (cluster force-new), replaces everything whatever its
    -- index (0 too: the empty map a node that applies the whole log from its
    -- first entry starts from).
    IF stored.cluster_id = p_cluster_id AND p_log_index <= stored.applied_index THEN
        PERFORM set_config('steep_repl.applying', 'off', true);
        RETURN false;
    END IF;

    SELECT count(*) INTO keys_before FROM steep_repl.coordinator_state;
    DELETE FROM steep_repl.coordinator_state s WHERE NOT (p_state ? s.key);
    INSERT INTO steep_repl.coordinator_state AS s (key, value)
    SELECT e.key, e.value FROM jsonb_each(p_state) AS e
    ON CONFLICT ON CONSTRAINT coordinator_state_pkey DO UPDATE
        SET value = EXCLUDED.value
        WHERE s.value IS DISTINCT FROM EXCLUDED.value;
    UPDATE steep_repl.cluster_projection p
       SET cluster_id = p_cluster_id, applied_index = p_log_index, applied_term = p_log_term,
           -- Another cluster's membership is not this one's.
           membership_index = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                   THEN NULL ELSE p.membership_index END,
           -- Nor is its coordinator: apply_coordinator() brings the new one.
           coordinator_id = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                 THEN NULL ELSE p.coordinator_id END,
           coordinator_epoch = CASE WHEN stored.cluster_id IS DISTINCT FROM p_cluster_id
                                    THEN NULL ELSE p.coordinator_epoch END,
           updated_at = now()
     WHERE p.id;
    IF stored.cluster_id IS DISTINCT FROM p_cluster_id THEN
        UPDATE steep_repl.nodes n SET is_coordinator = false WHERE n.is_coordinator;
    END IF;

    -- One row for the install; the entries it covers are not audited again.
    PERFORM steep_repl.write_audit('state.updated', 'state', NULL,
        jsonb_build_object('cluster_id', stored.cluster_id, 'applied_index', stored.applied_index,
                           'applied_term', stored.applied_term, 'keys', keys_before),
        jsonb_build_object('snapshot', jsonb_build_object(
            'cluster_id', p_cluster_id, 'index', p_log_index, 'term', p_log_term,
            'keys', (SELECT count(*) FROM jsonb_object_keys(p_state)))));

    PERFORM set_config('steep_repl.applying', 'off', true);
    RETURN true;
END
$$;
COMMENT ON FUNCTION steep_repl.apply_state_snapshot(text, bigint, bigint, jsonb) IS
    'Daemon only: makes coordinator_state equal p_state (a JSON object of key -> value) as of log entry p_log_index (term p_log_term) of cluster p_cluster_id and records the index, in one transaction; used when a node installs a snapshot or its projection fell behind the log. Unchanged keys keep their updated_at. Writes one audit row for the install (state.updated, target_id null, old_value {cluster_id, applied_index, applied_term, keys}, new_value {"snapshot": {cluster_id, index, term, keys}}, the session''s actor) and none per key. Returns false and writes nothing when the projection of the same cluster is already at or past p_log_index; the first snapshot (a projection of no cluster yet) is installed at any index, 0 included, and a snapshot of another cluster is always installed, and clears the coordinator (coordinator_id, coordinator_epoch, nodes.is_coordinator) until steep_repl.apply_coordinator() applies the new cluster''s.';

------------------------------------------------------------------------------
-- Direct writes granted by the 0.2.0 documentation are taken back
------------------------------------------------------------------------------
DO $revoke$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee,
               acl.privilege_type, objects.kind, objects.name
          FROM (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
                       c.oid::regclass::text AS name, c.relacl AS acl, c.relowner AS owner
                  FROM pg_catalog.pg_class c
                 WHERE c.oid IN ('steep_repl.audit_log'::regclass, 'steep_repl.audit_log_id_seq'::regclass)
                UNION ALL
                SELECT 'FUNCTION', p.oid::regprocedure::text, p.proacl, p.proowner
                  FROM pg_catalog.pg_proc p
                 WHERE p.oid = 'steep_repl.write_audit(text, text, text, jsonb, jsonb)'::regprocedure) AS objects,
               aclexplode(objects.acl) AS acl
          LEFT JOIN pg_catalog.pg_roles r ON r.oid = acl.grantee
         WHERE acl.grantee <> objects.owner
           -- Reading audit_log (the one TABLE here) stays.
           AND NOT (objects.kind = 'TABLE' AND acl.privilege_type = 'SELECT')
    LOOP
        EXECUTE format('REVOKE %s ON %s %s FROM %s',
                       grant_row.privilege_type, grant_row.kind, grant_row.name, grant_row.grantee);
    END LOOP;
END
$revoke$;

------------------------------------------------------------------------------
-- daemon.sql
------------------------------------------------------------------------------
-- steep_repl daemon writes (since 0.3.0): every write the steep-repl daemon
-- makes outside the apply functions goes through one of these. They are
-- SECURITY DEFINER with EXECUTE granted to steep_repl_daemon only
-- (privileges.sql), so the daemon's role needs no privilege on any table
-- beyond SELECT.

------------------------------------------------------------------------------
-- A peer's status and heartbeat, as this node sees them
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.record_peer_status(p_node_id text, p_status text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.record_peer_status';
BEGIN
    PERFORM steep_repl.check_node_id(fn, p_node_id);
    PERFORM steep_repl.check_status(fn, p_status);
    -- offline is an operator's decision: never overwritten here.
    UPDATE steep_repl.nodes n SET status = p_status
     WHERE n.node_id = p_node_id AND n.status <> 'offline' AND n.status <> p_status;
    IF FOUND THEN
        RETURN true;
    END IF;
    -- True only when the row holds the status (or offline): a row the
    -- projection committed after the UPDATE's snapshot was not written,
    -- and the daemon must try again rather than count it done.
    RETURN EXISTS (SELECT 1 FROM steep_repl.nodes n
                    WHERE n.node_id = p_node_id AND n.status IN (p_status, 'offline'));
END
$$;
REVOKE ALL ON FUNCTION steep_repl.record_peer_status(text, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.record_peer_status(text, text) IS
    'Daemon only: sets the status of a peer as this node sees it (never over offline; an unchanged status writes nothing), audited as node.status_changed. Returns whether the node is registered with that status (or offline) now; false tells the daemon to try again.';

CREATE FUNCTION steep_repl.record_peer_seen(p_node_id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM steep_repl.check_node_id('steep_repl.record_peer_seen', p_node_id);
    UPDATE steep_repl.nodes n SET last_seen = now() WHERE n.node_id = p_node_id;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.record_peer_seen(text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.record_peer_seen(text) IS
    'Daemon only: a heartbeat from a peer, last_seen = now() (not audited). Returns whether the node is registered.';

------------------------------------------------------------------------------
-- The daemon's own events (its spool)
------------------------------------------------------------------------------
-- What the daemon chooses, and what it does not. It gives each event its
-- event_id (the idempotency key of spool replays), action, target, values,
-- success and error, the address the event is about (the peer that failed
-- authentication: client_ip) and the time it happened, which is kept unless
-- it is later than now() or not finite (then now()). The id comes from the
-- sequence and the actor is current_actor(): the daemon login's
-- steep_repl.actor setting (steep-repl@<node_id>).
CREATE FUNCTION steep_repl.append_daemon_events(
    p_event_ids      uuid[],
    p_occurred_at    timestamptz[],
    p_actions        text[],
    p_target_types   text[],
    p_target_ids     text[],
    p_old_values     jsonb[],
    p_new_values     jsonb[],
    p_client_ips     inet[],
    p_successes      boolean[],
    p_error_messages text[]
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.append_daemon_events';
    events constant integer := COALESCE(cardinality(p_event_ids), 0);
    -- Once per batch: current_actor() carries a SET clause, so it is never
    -- inlined and would run (with its pg_has_role) once per row.
    actor constant text := steep_repl.current_actor();
    inserted bigint;
BEGIN
    IF events <> COALESCE(cardinality(p_occurred_at), 0)
       OR events <> COALESCE(cardinality(p_actions), 0)
       OR events <> COALESCE(cardinality(p_target_types), 0)
       OR events <> COALESCE(cardinality(p_target_ids), 0)
       OR events <> COALESCE(cardinality(p_old_values), 0)
       OR events <> COALESCE(cardinality(p_new_values), 0)
       OR events <> COALESCE(cardinality(p_client_ips), 0)
       OR events <> COALESCE(cardinality(p_successes), 0)
       OR events <> COALESCE(cardinality(p_error_messages), 0) THEN
        RAISE EXCEPTION '%: every array must have one element per event (% event ids)', fn, events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(p_event_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '%: p_event_ids[%] must not be null', fn, array_position(p_event_ids, NULL)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO steep_repl.audit_log AS a
        (event_id, occurred_at, action, actor, target_type, target_id, old_value, new_value,
         client_ip, success, error_message)
    SELECT e.event_id,
           CASE WHEN isfinite(e.occurred_at) AND e.occurred_at <= now() THEN e.occurred_at ELSE now() END,
           e.action, actor, e.target_type, e.target_id, e.old_value, e.new_value,
           e.client_ip, COALESCE(e.success, true), e.error_message
      FROM unnest(p_event_ids, p_occurred_at, p_actions, p_target_types, p_target_ids,
                  p_old_values, p_new_values, p_client_ips, p_successes, p_error_messages)
           AS e (event_id, occurred_at, action, target_type, target_id, old_value, new_value,
                 client_ip, success, error_message)
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]) IS
    'Daemon only: appends a batch of the daemon''s own events (one array element per event) and returns how many were new; an event_id already in audit_log is skipped (spool replays). The actor is current_actor() and the id comes from the sequence; occurred_at is kept unless later than now() or not finite (then now()).';

------------------------------------------------------------------------------
-- privileges.sql
------------------------------------------------------------------------------
-- steep_repl privileges (since 0.3.0): three roles, each with the least it
-- needs. Nothing is granted to PUBLIC.
--
--   steep_repl_reader  SELECT on the four tables; get_state(), projection().
--   steep_repl_daemon  what the steep-repl daemon does: SELECT on nodes,
--                      coordinator_state and audit_log; EXECUTE on the apply
--                      functions, projection(), record_peer_status(),
--                      record_peer_seen(), append_daemon_events() and
--                      prune_audit(). No INSERT, UPDATE or DELETE anywhere.
--   steep_repl_admin   an operator: SELECT on the four tables; EXECUTE on
--                      register_node(), remove_node(), heartbeat(),
--                      set_status(), get_state(), projection(), prune_audit().
--
-- The roles are NOLOGIN groups: a DBA grants them to login roles
-- (GRANT steep_repl_daemon TO steep). Roles belong to the whole cluster of
-- databases, so they are created here only when missing: a second database
-- installing the extension reuses them (its grants are its own). A role of
-- that name made beforehand by a superuser is used as it is; one that a
-- role other than a superuser administers (WITH ADMIN OPTION, as a
-- CREATEROLE role that created it does) is refused, since that role could
-- grant itself the daemon's or operator's rights.
DO $roles$
DECLARE
    wanted constant text[] := ARRAY['steep_repl_reader', 'steep_repl_daemon', 'steep_repl_admin'];
    role_name text;
    administrator name;
BEGIN
    FOREACH role_name IN ARRAY wanted LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            CONTINUE;
        END IF;
        IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            RAISE EXCEPTION 'role % already exists and is a superuser', role_name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('steep_repl grants %s only what it needs; drop that role or ALTER ROLE %s NOSUPERUSER, then CREATE EXTENSION steep_repl again.', role_name, role_name);
        END IF;
        SELECT m.rolname INTO administrator
          FROM pg_catalog.pg_auth_members a
          JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
          JOIN pg_catalog.pg_roles m ON m.oid = a.member
         WHERE g.rolname = role_name AND a.admin_option AND NOT m.rolsuper
         ORDER BY m.rolname LIMIT 1;
        IF administrator IS NOT NULL THEN
            RAISE EXCEPTION 'role % already exists and role %, which is not a superuser, may grant it (ADMIN OPTION)', role_name, administrator
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('REVOKE ADMIN OPTION FOR %s FROM %s (or drop role %s), then CREATE EXTENSION steep_repl again.', role_name, administrator, role_name);
        END IF;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA steep_repl TO steep_repl_reader, steep_repl_daemon, steep_repl_admin;

-- Reading.
GRANT SELECT ON steep_repl.nodes, steep_repl.coordinator_state, steep_repl.cluster_projection, steep_repl.audit_log
    TO steep_repl_reader, steep_repl_admin;
GRANT SELECT ON steep_repl.nodes, steep_repl.coordinator_state, steep_repl.audit_log TO steep_repl_daemon;
GRANT EXECUTE ON FUNCTION steep_repl.get_state(text) TO steep_repl_reader, steep_repl_admin;
GRANT EXECUTE ON FUNCTION steep_repl.projection() TO steep_repl_reader, steep_repl_daemon, steep_repl_admin;

-- The daemon: applying the cluster's log, its peers' status and heartbeats,
-- its own events, the retention of the audit log.
GRANT EXECUTE ON FUNCTION
    steep_repl.apply_state(text, bigint, bigint, text, jsonb, boolean, text, inet, text),
    steep_repl.apply_state_batch(text, jsonb),
    steep_repl.apply_state_snapshot(text, bigint, bigint, jsonb),
    steep_repl.advance_projection(text, bigint, bigint),
    steep_repl.apply_membership(bigint, jsonb),
    steep_repl.apply_coordinator(text, bigint, bigint, text, bigint, text, text, text),
    steep_repl.record_peer_status(text, text),
    steep_repl.record_peer_seen(text),
    steep_repl.append_daemon_events(uuid[], timestamptz[], text[], text[], text[], jsonb[], jsonb[], inet[], boolean[], text[]),
    steep_repl.prune_audit(interval)
    TO steep_repl_daemon;

-- An operator.
GRANT EXECUTE ON FUNCTION
    steep_repl.register_node(text, text, text, integer, integer, text, integer),
    steep_repl.remove_node(text),
    steep_repl.heartbeat(text, text),
    steep_repl.set_status(text, text),
    steep_repl.prune_audit(interval)
    TO steep_repl_admin;
