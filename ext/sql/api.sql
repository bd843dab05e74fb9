-- steep_repl SQL API. Every function validates its arguments and names the
-- argument that is wrong. Functions that change data are SECURITY DEFINER
-- with EXECUTE revoked from PUBLIC: a DBA grants EXECUTE to the roles that
-- may use them (see docs/operations.md), and the audit trail still records
-- the session's own user (session_user) as the actor.

------------------------------------------------------------------------------
-- Argument checks shared by the API
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.check_status(fn text, status text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF status IS NULL OR status NOT IN ('unknown', 'healthy', 'degraded', 'unreachable', 'offline') THEN
        RAISE EXCEPTION '%: status must be one of unknown, healthy, degraded, unreachable, offline (got %)',
                fn, COALESCE(quote_literal(status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION steep_repl.check_status(text, text) IS
    'Internal: raises invalid_parameter_value naming the calling function when status is not a known node status.';

CREATE FUNCTION steep_repl.check_node_id(fn text, node_id text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF node_id IS NULL OR node_id = '' THEN
        RAISE EXCEPTION '%: node_id must not be empty', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION steep_repl.check_node_id(text, text) IS
    'Internal: raises invalid_parameter_value naming the calling function when node_id is null or empty.';

CREATE FUNCTION steep_repl.raise_unknown_node(fn text, node_id text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%: node_id % is not registered', fn, quote_literal(node_id)
        USING ERRCODE = 'no_data_found',
              HINT = 'Register it first with steep_repl.register_node().';
END
$$;
COMMENT ON FUNCTION steep_repl.raise_unknown_node(text, text) IS
    'Internal: raises no_data_found naming the calling function and the unknown node_id.';

------------------------------------------------------------------------------
-- Nodes
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.register_node(
    node_id   text,
    node_name text,
    host      text,
    port      integer DEFAULT 5432,
    priority  integer DEFAULT 50,
    grpc_host text DEFAULT NULL,
    grpc_port integer DEFAULT NULL
) RETURNS steep_repl.nodes
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.register_node';
    result steep_repl.nodes;
BEGIN
    PERFORM steep_repl.check_node_id(fn, register_node.node_id);
    IF register_node.node_name IS NULL OR register_node.node_name = '' THEN
        RAISE EXCEPTION '%: node_name must not be empty', fn USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF register_node.host IS NULL OR register_node.host = '' THEN
        RAISE EXCEPTION '%: host must not be empty', fn USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF register_node.port IS NULL OR register_node.port NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION '%: port must be between 1 and 65535 (got %)', fn, COALESCE(register_node.port::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF register_node.priority IS NULL OR register_node.priority NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION '%: priority must be between 1 and 100 (got %)', fn, COALESCE(register_node.priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF register_node.grpc_host = '' THEN
        RAISE EXCEPTION '%: grpc_host must be null or not empty', fn USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF register_node.grpc_port NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION '%: grpc_port must be between 1 and 65535 (got %)', fn, register_node.grpc_port
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO steep_repl.nodes AS n (node_id, node_name, host, port, priority, grpc_host, grpc_port)
    VALUES (register_node.node_id, register_node.node_name, register_node.host, register_node.port,
            register_node.priority, register_node.grpc_host, register_node.grpc_port)
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE
        SET node_name = EXCLUDED.node_name,
            host      = EXCLUDED.host,
            port      = EXCLUDED.port,
            priority  = EXCLUDED.priority,
            grpc_host = COALESCE(EXCLUDED.grpc_host, n.grpc_host),
            grpc_port = COALESCE(EXCLUDED.grpc_port, n.grpc_port)
        -- Registering again with the same values writes nothing (and audits nothing).
        WHERE (n.node_name, n.host, n.port, n.priority, n.grpc_host, n.grpc_port)
              IS DISTINCT FROM
              (EXCLUDED.node_name, EXCLUDED.host, EXCLUDED.port, EXCLUDED.priority,
               COALESCE(EXCLUDED.grpc_host, n.grpc_host), COALESCE(EXCLUDED.grpc_port, n.grpc_port));

    SELECT * INTO result FROM steep_repl.nodes n WHERE n.node_id = register_node.node_id;
    RETURN result;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.register_node(text, text, text, integer, integer, text, integer) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.register_node(text, text, text, integer, integer, text, integer) IS
    'Registers a node or updates its name, address, priority and gRPC address (upsert). Status, last_seen and the coordinator flag are kept. Returns the row.';

CREATE FUNCTION steep_repl.remove_node(node_id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM steep_repl.check_node_id('steep_repl.remove_node', remove_node.node_id);
    DELETE FROM steep_repl.nodes n WHERE n.node_id = remove_node.node_id;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.remove_node(text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.remove_node(text) IS
    'Removes a node from the registry. Returns false when it was not registered.';

CREATE FUNCTION steep_repl.heartbeat(node_id text, status text DEFAULT NULL) RETURNS steep_repl.nodes
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.heartbeat';
    result steep_repl.nodes;
BEGIN
    PERFORM steep_repl.check_node_id(fn, heartbeat.node_id);
    IF heartbeat.status IS NOT NULL THEN
        PERFORM steep_repl.check_status(fn, heartbeat.status);
    END IF;
    -- offline is an operator's decision: a heartbeat never overrides it.
    UPDATE steep_repl.nodes n
       SET last_seen = now(),
           status = CASE WHEN n.status = 'offline' OR heartbeat.status IS NULL THEN n.status
                         ELSE heartbeat.status END
     WHERE n.node_id = heartbeat.node_id
    RETURNING n.* INTO result;
    IF NOT FOUND THEN
        PERFORM steep_repl.raise_unknown_node(fn, heartbeat.node_id);
    END IF;
    RETURN result;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.heartbeat(text, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.heartbeat(text, text) IS
    'Records a heartbeat: sets last_seen to now() and, when given, the status (never overriding offline, which only set_status changes). Returns the row.';

CREATE FUNCTION steep_repl.set_status(node_id text, status text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn constant text := 'steep_repl.set_status';
    previous text;
BEGIN
    PERFORM steep_repl.check_node_id(fn, set_status.node_id);
    PERFORM steep_repl.check_status(fn, set_status.status);
    SELECT n.status INTO previous FROM steep_repl.nodes n WHERE n.node_id = set_status.node_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM steep_repl.raise_unknown_node(fn, set_status.node_id);
    END IF;
    IF previous = set_status.status THEN
        RETURN false;
    END IF;
    UPDATE steep_repl.nodes n SET status = set_status.status WHERE n.node_id = set_status.node_id;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION steep_repl.set_status(text, text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.set_status(text, text) IS
    'Sets a node''s status (including offline, which only this function sets or clears). Returns true when it changed; audited as node.status_changed.';

------------------------------------------------------------------------------
-- Coordinator state
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.get_state(key text) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.value FROM steep_repl.coordinator_state s WHERE s.key = get_state.key
$$;
REVOKE ALL ON FUNCTION steep_repl.get_state(text) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.get_state(text) IS
    'Returns the value of a coordinator state key, or NULL when the key is not set, from this node''s projection of the cluster''s state (possibly stale; steep_repl.projection() says up to which log index).';

-- Released in 0.1.0 as the upsert of a key. Since 0.2.0 coordinator_state is
-- the projection of the cluster's replicated state: the signature stays (a
-- released API), the call is refused naming the command to use.
CREATE FUNCTION steep_repl.set_state(key text, value jsonb) RETURNS boolean
    LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'steep_repl.coordinator_state is replicated by the cluster: steep_repl.set_state() is refused; use "steep-repl state set KEY VALUE" (or "steep-repl state delete KEY")'
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'The table is this node''s projection of the cluster''s replicated state; only the steep-repl daemon writes it, as it applies the cluster''s log.',
              HINT = 'Over IPC: the methods state.set and state.delete. Reading (steep_repl.get_state(), SELECT) works as before.';
END
$$;
REVOKE ALL ON FUNCTION steep_repl.set_state(text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION steep_repl.set_state(text, jsonb) IS
    'Refused since 0.2.0 (kept for its released signature): coordinator_state is replicated by the cluster; use "steep-repl state set KEY VALUE" or the IPC method state.set.';

------------------------------------------------------------------------------
-- Audit retention
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.prune_audit(older_than interval) RETURNS bigint
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
-- Version
------------------------------------------------------------------------------
CREATE FUNCTION steep_repl.version() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'steep_repl'
$$;
COMMENT ON FUNCTION steep_repl.version() IS 'The installed version of the steep_repl extension.';
