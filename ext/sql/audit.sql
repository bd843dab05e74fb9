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
    SELECT COALESCE(
        NULLIF(current_setting('steep_repl.actor', true), ''),
        session_user || '@' || COALESCE(host(inet_client_addr()), 'local'))
$$;
COMMENT ON FUNCTION steep_repl.current_actor() IS
    'The actor recorded in audit_log: the steep_repl.actor setting when the session set it (the daemon sets steep-repl@<node_id>), otherwise session_user@client address, or session_user@local for a local socket.';

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
       AND current_setting('steep_repl.applying', true) = 'on' THEN
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
    IF current_setting('steep_repl.applying', true) = 'on' THEN
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
COMMENT ON TRIGGER coordinator_state_touch ON steep_repl.coordinator_state IS
    'Sets updated_at to now() on every UPDATE.';

------------------------------------------------------------------------------
-- audit_log is append-only
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.refuse_audit_rewrite() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('steep_repl.prune_in_progress', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'steep_repl.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Old entries are removed only by steep_repl.prune_audit(interval).';
END
$$;
COMMENT ON FUNCTION steep_repl.refuse_audit_rewrite() IS
    'Trigger: refuses UPDATE, TRUNCATE and DELETE on audit_log; only steep_repl.prune_audit() removes rows.';

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON steep_repl.audit_log
    FOR EACH ROW EXECUTE FUNCTION steep_repl.refuse_audit_rewrite();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON steep_repl.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl.refuse_audit_rewrite();
-- ALWAYS: the guards also hold with session_replication_role = replica.
ALTER TABLE steep_repl.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE steep_repl.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;
COMMENT ON TRIGGER audit_log_append_only ON steep_repl.audit_log IS 'Refuses UPDATE and DELETE of audit entries.';
COMMENT ON TRIGGER audit_log_no_truncate ON steep_repl.audit_log IS 'Refuses TRUNCATE of the audit log.';
