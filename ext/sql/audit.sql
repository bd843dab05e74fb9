-- steep_repl audit machinery: who is acting, the single audit writer, the
-- triggers that audit every change to nodes and coordinator_state whoever
-- makes it, and the guards that keep audit_log append-only.

------------------------------------------------------------------------------
-- Who is acting
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.current_actor() RETURNS text
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

------------------------------------------------------------------------------
-- Whether an apply function is writing
------------------------------------------------------------------------------
-- Defined by the library (src/lib.rs): steep_repl.applying is a setting only
-- a superuser may change, and calling this loads the library first.
CREATE FUNCTION steep_repl.applying() RETURNS boolean
    LANGUAGE c VOLATILE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'applying_wrapper';
COMMENT ON FUNCTION steep_repl.applying() IS
    'Internal: true while an apply function writes the projection (the setting steep_repl.applying, which only a superuser may set: the extension''s owner inside its SECURITY DEFINER functions).';

------------------------------------------------------------------------------
-- The one audit writer
------------------------------------------------------------------------------
-- SECURITY DEFINER: a role allowed to change nodes is audited even though it
-- has no privilege on audit_log itself.
CREATE FUNCTION steep_repl.write_audit(
    action text,
    target_type text,
    target_id text,
    old_value jsonb,
    new_value jsonb
) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO steep_repl.audit_log (action, actor, target_type, target_id, old_value, new_value, client_ip)
    VALUES ($1, steep_repl.current_actor(), $2, $3, $4, $5, inet_client_addr())
    RETURNING id
$$;
REVOKE ALL ON FUNCTION steep_repl.write_audit(text, text, text, jsonb, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.write_audit(text, text, text, jsonb, jsonb) IS
    'Internal: appends one audit_log row for the current actor and client address. Used by the audit triggers and the SQL API.';

------------------------------------------------------------------------------
-- Auditing changes to nodes
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.audit_nodes_change() RETURNS trigger
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

CREATE TRIGGER nodes_audit
    AFTER INSERT OR UPDATE OR DELETE ON steep_repl.nodes
    FOR EACH ROW EXECUTE FUNCTION steep_repl.audit_nodes_change();
-- ALWAYS: the audit also holds with session_replication_role = replica.
ALTER TABLE steep_repl.nodes ENABLE ALWAYS TRIGGER nodes_audit;
COMMENT ON TRIGGER nodes_audit ON steep_repl.nodes IS 'Audits every change to the node registry.';

------------------------------------------------------------------------------
-- Auditing changes to coordinator_state
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.audit_state_change() RETURNS trigger
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

CREATE TRIGGER coordinator_state_audit
    AFTER INSERT OR UPDATE OR DELETE ON steep_repl.coordinator_state
    FOR EACH ROW EXECUTE FUNCTION steep_repl.audit_state_change();
ALTER TABLE steep_repl.coordinator_state ENABLE ALWAYS TRIGGER coordinator_state_audit;
COMMENT ON TRIGGER coordinator_state_audit ON steep_repl.coordinator_state IS
    'Audits every change to the coordinator state.';

CREATE FUNCTION steep_repl.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION steep_repl.touch_updated_at() IS
    'Trigger: keeps coordinator_state.updated_at current on every UPDATE.';

CREATE TRIGGER coordinator_state_touch
    BEFORE UPDATE ON steep_repl.coordinator_state
    FOR EACH ROW EXECUTE FUNCTION steep_repl.touch_updated_at();
ALTER TABLE steep_repl.coordinator_state ENABLE ALWAYS TRIGGER coordinator_state_touch;
COMMENT ON TRIGGER coordinator_state_touch ON steep_repl.coordinator_state IS
    'Sets updated_at to now() on every UPDATE.';

------------------------------------------------------------------------------
-- TRUNCATE would change the audited tables without a row-level trigger
------------------------------------------------------------------------------
-- On nodes. coordinator_state and cluster_projection refuse it through
-- refuse_projection_write (projection.sql), even inside the apply functions.
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
-- audit_log: rows are stamped by the extension, never rewritten
------------------------------------------------------------------------------
-- The shortest retention steep_repl.prune_audit() accepts, and the age a row
-- must have before anything may delete it: the last day of the audit trail
-- cannot be erased (the daemon's audit.retention has the same minimum).
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
CREATE FUNCTION steep_repl.refuse_audit_rewrite() RETURNS trigger
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

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON steep_repl.audit_log
    FOR EACH ROW EXECUTE FUNCTION steep_repl.refuse_audit_rewrite();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON steep_repl.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl.refuse_audit_rewrite();
-- ALWAYS: the guards also hold with session_replication_role = replica.
ALTER TABLE steep_repl.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE steep_repl.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;
COMMENT ON TRIGGER audit_log_append_only ON steep_repl.audit_log IS 'Refuses UPDATE, and DELETE of entries younger than the minimum retention or by anyone but a superuser.';
COMMENT ON TRIGGER audit_log_no_truncate ON steep_repl.audit_log IS 'Refuses TRUNCATE of the audit log.';
